import pytest
import torch
from PIL import Image

from photostyle import StyleNet, Stylizer, get_preset, split_net, stylize
from photostyle.imageio import to_tensor
from tests.photos import content, open_rgb
from tests.test_network import _randomised


@pytest.fixture(scope="module")
def trained_like():
    """A lite net with every parameter random, so its output depends on the norm statistics."""
    base, styles = split_net(_randomised(StyleNet(get_preset("lite").net, num_styles=1), seed=3))
    return base, styles[0]


@pytest.mark.parametrize("size", [(33, 17), (101, 64), (7, 5)])
def test_output_size_equals_input_size(trained_like, size):
    out = stylize(*trained_like, Image.new("RGB", size, (120, 30, 200)))
    assert out.size == size and out.mode == "RGB"


def test_non_rgb_input_is_converted(trained_like):
    out = Stylizer(*trained_like)(Image.new("L", (40, 30), 128))
    assert out.size == (40, 30) and out.mode == "RGB"


def test_tiled_and_untiled_agree_on_a_1024_square_photo(trained_like):
    photo = open_rgb(content(3)).resize((1024, 1024), Image.Resampling.BICUBIC)
    x = to_tensor(photo).unsqueeze(0)
    whole = Stylizer(*trained_like, max_untiled_pixels=1024 * 1024).tensor(x)
    tiled = Stylizer(*trained_like, max_untiled_pixels=512 * 512, stats_pixels=1024 * 1024, tile_size=384).tensor(x)
    diff = (whole - tiled).abs()
    assert whole.std() > 0.05  # a real transformation, not the identity
    assert diff.mean() < 2e-3, diff.mean()
    assert diff.max() < 0.05, diff.max()
    # No seam: the jump across tile borders (x = 320..384 overlap region) is like the jump anywhere.
    cols = (tiled[..., 1:] - tiled[..., :-1]).abs().mean(dim=(0, 1, 2))
    ref = (whole[..., 1:] - whole[..., :-1]).abs().mean(dim=(0, 1, 2))
    assert torch.allclose(cols, ref, atol=5e-3)


def test_tiles_share_whole_image_statistics(trained_like):
    """Without shared statistics each tile would be normalised on its own: much worse agreement."""
    photo = open_rgb(content(3)).resize((768, 768), Image.Resampling.BICUBIC)
    x = to_tensor(photo).unsqueeze(0)
    whole = Stylizer(*trained_like).tensor(x)
    downscaled_stats = Stylizer(*trained_like, max_untiled_pixels=256 * 256, tile_size=256).tensor(x)
    per_tile = torch.zeros_like(whole)
    s = Stylizer(*trained_like)
    for top in range(0, 768, 256):
        for left in range(0, 768, 256):
            per_tile[..., top : top + 256, left : left + 256] = s.tensor(x[..., top : top + 256, left : left + 256])
    shared_err = (whole - downscaled_stats).abs().mean()
    own_err = (whole - per_tile).abs().mean()
    assert shared_err < own_err / 2, (shared_err, own_err)


def test_bad_tiling_is_refused(trained_like):
    with pytest.raises(ValueError, match="bad tiling"):
        Stylizer(*trained_like, tile_size=64, tile_overlap=64)


def test_guided_upsampling_recovers_a_smoothly_varying_affine_recolouring():
    from photostyle.guided import guided_upsample

    full = to_tensor(open_rgb(content(5))).unsqueeze(0)
    h, w = full.shape[-2:]
    ramp = torch.linspace(0, 1, w)[None, None, None, :].expand(1, 1, h, w)  # the look changes across the photo

    def recolour(x: torch.Tensor) -> torch.Tensor:
        r = torch.nn.functional.interpolate(ramp, size=x.shape[-2:], mode="bilinear", align_corners=True)
        warm = torch.stack([x[:, 0] * 1.1 + 0.05, x[:, 1] * 0.95, x[:, 2] * 0.8 + 0.1 * x[:, 0]], dim=1)
        return r * warm + (1 - r) * x

    small = torch.nn.functional.interpolate(full, scale_factor=0.25, mode="area")
    error = (guided_upsample(small, recolour(small), full) - recolour(full)).abs()
    # The ridge shrinks maps in flat areas and a few thin details miss: judged on the mean and the
    # 99th percentile (plain bilinear upsampling scores about 10x worse on both).
    p99 = torch.quantile(error.flatten()[::7], 0.99)
    assert error.mean() < 4e-3 and p99 < 0.025, (error.mean(), p99)


def test_guided_render_is_the_full_render_up_to_the_working_side_and_affine_beyond(hed_pair):
    from photostyle.guided import apply_local_affine, fit_local_affine

    x = to_tensor(open_rgb(content(6), 384)).unsqueeze(0)
    full = Stylizer(hed_pair.base, hed_pair.style).tensor(x)
    same = Stylizer(hed_pair.base, hed_pair.style, render="guided", working_side=384).tensor(x)
    assert torch.equal(same, full)  # nothing to lift
    guided = Stylizer(hed_pair.base, hed_pair.style, render="guided", working_side=128).tensor(x)
    assert guided.shape == x.shape
    # The result is, window by window, an affine recolouring of the full-resolution input
    # (except where it was clipped to [0, 1]).
    refit = apply_local_affine(fit_local_affine(x, guided, radius=2, eps=1e-6), x)
    inside = (guided > 0) & (guided < 1)
    assert inside.float().mean() > 0.5 and (refit - guided).abs()[inside].mean() < 2e-3
    assert (guided - x).abs().mean() > 0.01  # and it does recolour
    with pytest.raises(ValueError, match="unknown render 'fast'"):
        Stylizer(hed_pair.base, hed_pair.style, render="fast")

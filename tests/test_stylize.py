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
    base, styles = split_net(_randomised(StyleNet(get_preset("lite"), num_styles=1), seed=3))
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

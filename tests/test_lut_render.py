"""Colour-table styles rendered as a 3-D LUT (``render="lut"``), the strength control, and fitting
one table over several photos. The photos are scikit-image samples; the style is a young one made
by hand (a colour cast and small random colour maps), which recolours by about 30/255."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from photostyle import StyleNet, Stylizer, get_preset, split_net
from photostyle import lut_render
from photostyle.imageio import to_image, to_tensor
from photostyle.norm import shared_statistics
from tests.test_network import _randomised


def young_style(preset: str = "lite", seed: int = 1):
    """A fresh net with a colour cast and small random colour maps: like a style after a little
    training (a fully random head recolours by ~140/255 and clips most pixels)."""
    torch.manual_seed(seed)
    net = StyleNet(get_preset(preset).net, num_styles=1)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        weight = net.head.conv.conv.weight
        weight.copy_(torch.randn(weight.shape, generator=g) * 0.01)
        net.head.photo_norm.gamma.copy_(torch.tensor([[0.25, 0.2, 0.15]]))
        net.head.photo_norm.beta.copy_(torch.tensor([[0.55, 0.45, 0.35]]))
    base, styles = split_net(net)
    return base, styles[0]


@pytest.fixture(scope="module")
def style():
    return young_style()


def photo(name: str = "astronaut", side: int = 256) -> Image.Image:
    image = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
    image.thumbnail((side, side), Image.Resampling.BOX)
    return image


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(int)


def full_render_with(stylizer: Stylizer, image: Image.Image, stats) -> np.ndarray:
    """The net on every pixel of ``image`` with the given whole-photo statistics."""
    with torch.inference_mode(), shared_statistics(stylizer.net, stats):
        return pixels(to_image(stylizer.net(to_tensor(image).unsqueeze(0), 0).clamp(0, 1)))


def test_lut_render_is_the_net_on_every_pixel_within_2_of_255(style):
    image = photo()
    lut = Stylizer(*style, render="lut", working_side=128)
    full = full_render_with(lut, image, lut.photo_statistics(image))
    out = pixels(lut(image))
    assert out.shape == pixels(image).shape
    assert np.abs(full - pixels(image)).mean() > 10  # a real recolouring, not the identity
    assert np.abs(out - full).max() <= 2, np.abs(out - full).max()


def test_each_render_sees_the_photo_at_its_own_default_working_side(style):
    """lut's statistics pass at 256 px, guided's net at 512 px (docs/performance.md)."""
    image = photo(side=512)
    assert max(Stylizer(*style, render="lut").working_copy(image).size) == 256
    assert Stylizer(*style, render="guided").working_side == 512
    assert max(Stylizer(*style, render="lut", working_side=300).working_copy(image).size) == 300


def test_lut_render_records_its_statistics_at_the_working_side(style):
    """The same photo at twice the size gets (almost) the same colours: the statistics come from
    the working-side copy, not from the full-resolution photo."""
    small, large = photo(side=128), photo(side=256)
    stylizer = Stylizer(*style, render="lut", working_side=128)
    assert torch.allclose(stylizer.colour_table(large), stylizer.colour_table(small), atol=2 / 255)
    with pytest.raises(ValueError, match="LUT size must be a whole number from 2 to 65, got 66"):
        Stylizer(*style, render="lut", lut_size=66)


def test_lut_render_is_refused_for_styles_that_are_not_colour_tables():
    for preset, head in (("lite-cells", "affine"), ("paper", "rgb")):
        base, styles = split_net(StyleNet(get_preset(preset).net, num_styles=1))
        with pytest.raises(ValueError, match=f"render 'lut' needs a colour-table style.*the '{head}' head"):
            Stylizer(base, styles[0], render="lut")
        assert Stylizer(base, styles[0], render=None).render == "guided"
    assert Stylizer(*young_style(), render=None).render == "lut"


@pytest.mark.parametrize("render", ["lut", "guided", "full"])
def test_strength_blends_toward_the_photo(render):
    if render == "lut":
        base, style = young_style()
    else:
        base, (style,) = split_net(_randomised(StyleNet(get_preset("lite-cells").net, num_styles=1), seed=2))
    image = photo(side=160)
    render_at = {s: pixels(Stylizer(base, style, render=render, working_side=64, strength=s)(image)) for s in (0, 0.5, 1)}
    assert np.array_equal(render_at[0], pixels(image))  # strength 0: the photo itself
    assert np.array_equal(render_at[1], pixels(Stylizer(base, style, render=render, working_side=64)(image)))
    halfway = (render_at[1] + pixels(image)) / 2
    assert np.abs(render_at[1] - pixels(image)).mean() > 10
    assert np.abs(render_at[0.5] - halfway).max() <= 1.5  # rounding of the result and of the blend


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "0.5", True])
def test_bad_strength_is_refused_by_name(style, bad):
    with pytest.raises(ValueError, match=r"strength must be a number from 0 to 1, got"):
        Stylizer(*style, render="lut", strength=bad)


def test_tables_are_red_fastest_like_pillows_color3dlut():
    table = lut_render.identity_table(3)
    assert table[1].tolist() == [0.5, 0, 0] and table[3].tolist() == [0, 0.5, 0] and table[9].tolist() == [0, 0, 0.5]
    swapped = table[:, [2, 0, 1]]  # out = (b, r, g): the order matters
    image = Image.fromarray(np.array([[[255, 0, 0], [0, 128, 255]]], dtype=np.uint8))
    assert pixels(lut_render.apply_table(image, swapped)).tolist() == [[[0, 255, 0], [255, 0, 128]]]
    weights = lut_render.pixel_weights(Image.new("RGB", (4, 4), (255, 0, 0)), 3)
    assert weights[2] == 1 and weights.sum() == 1  # red = 1: index 2 (red fastest)


def test_one_table_is_fitted_over_several_photos_by_their_pixels():
    size = 5
    identity = lut_render.identity_table(size)
    warm, cool = identity.clone(), identity.clone()
    warm[:, 0], cool[:, 2] = 1.0, 1.0
    red_photo = Image.new("RGB", (8, 8), (255, 0, 0))
    blue_photo = Image.new("RGB", (8, 8), (0, 0, 255))
    weights = [lut_render.pixel_weights(red_photo, size), lut_render.pixel_weights(blue_photo, size)]
    fitted = lut_render.fit_table([warm, cool], weights)
    red, blue, grey = size - 1, (size - 1) * size * size, (size**3) // 2
    assert torch.allclose(fitted[red], warm[red], atol=1e-4)  # only the red photo has red
    assert torch.allclose(fitted[blue], cool[blue], atol=1e-4)
    assert torch.allclose(fitted[grey], (warm[grey] + cool[grey]) / 2)  # no photo has grey: the mean
    assert torch.equal(lut_render.fit_table([warm], weights[:1]), warm.clamp(0, 1))  # one photo: its own table
    with pytest.raises(ValueError, match="one weight per table"):
        lut_render.fit_table([warm, cool], weights[:1])

"""The classical baselines: they reproduce the dataset README's reference scores (PHOTOSTYLE_DPST_DEV) and do what their
definitions say on small photos."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image
from skimage.color import rgb2lab

from pipeline.baselines import BASELINES, histogram_match, reinhard
from pipeline.quality import METRICS, as_rgb_array, metrics
from tests.photos import content, dpst_content, dpst_style, open_rgb, style


@pytest.mark.parametrize(
    ("baseline", "expected"),
    [("reinhard", (0.920, 5.85, 0.062)), ("histmatch", (0.796, 4.62, 0.240))],
)
def test_baseline_scores_on_dpst_dev_match_readme_reference(baseline: str, expected: tuple[float, ...]) -> None:
    rows = []
    for n in range(1, 11):
        c, s = Image.open(dpst_content(n)), Image.open(dpst_style(n))
        rows.append(metrics(c, s, BASELINES[baseline](c, s)))
    for key, want in zip(METRICS, expected):
        got = float(np.mean([r[key] for r in rows]))
        assert got == pytest.approx(want, rel=0.03), (baseline, key, got, want)


@pytest.fixture(scope="module")
def pair() -> tuple[Image.Image, Image.Image]:
    # Different sizes on purpose: the style's size must not matter.
    return open_rgb(content(6), max_side=96), open_rgb(style(6), max_side=80)


@pytest.mark.parametrize("baseline", [reinhard, histogram_match])
def test_baselines_return_an_rgb_image_of_the_content_size(baseline, pair) -> None:
    c, s = pair
    out = baseline(c, s)
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == c.size
    # Float-array input gives the same image.
    assert np.array_equal(np.asarray(baseline(as_rgb_array(c), as_rgb_array(s))), np.asarray(out))


def test_reinhard_moves_lab_mean_and_spread_to_the_style(pair) -> None:
    c, s = pair
    out_lab = rgb2lab(as_rgb_array(reinhard(c, s)))
    style_lab = rgb2lab(as_rgb_array(s))
    content_lab = rgb2lab(as_rgb_array(c))
    # Gamut clipping and 8-bit rounding move the statistics a little, not back to the content's.
    np.testing.assert_allclose(out_lab.mean(axis=(0, 1)), style_lab.mean(axis=(0, 1)), atol=1.5)
    np.testing.assert_allclose(out_lab.std(axis=(0, 1)), style_lab.std(axis=(0, 1)), atol=1.5)
    assert np.abs(content_lab.mean(axis=(0, 1)) - style_lab.mean(axis=(0, 1))).max() > 5


def test_reinhard_of_a_flat_content_takes_the_style_mean_without_warnings(pair) -> None:
    _, s = pair
    flat = Image.new("RGB", (16, 12), (128, 128, 128))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = np.asarray(reinhard(flat, s))
    assert (out == out[0, 0]).all()
    mean_lab = rgb2lab(as_rgb_array(s)).mean(axis=(0, 1))
    np.testing.assert_allclose(rgb2lab(as_rgb_array(out[:1, :1] / 255.0))[0, 0], mean_lab, atol=1.0)


def test_histogram_match_gives_each_channel_the_style_distribution(pair) -> None:
    c, s = pair
    out = np.asarray(histogram_match(c, s)).reshape(-1, 3)
    ref = np.asarray(s).reshape(-1, 3)
    levels = np.linspace(0.05, 0.95, 19)
    for channel in range(3):
        got = np.quantile(out[:, channel], levels)
        want = np.quantile(ref[:, channel], levels)
        np.testing.assert_allclose(got, want, atol=2)
    # Same ranks as the content: matching is a monotone per-channel map.
    content_red = np.asarray(c)[..., 0].ravel()
    order = np.argsort(content_red, kind="stable")
    assert (np.diff(out[order, 0].astype(int)) >= 0).all()


@pytest.mark.parametrize("baseline", [reinhard, histogram_match])
def test_baselines_reject_bad_input_naming_it(baseline, pair) -> None:
    c, _ = pair
    with pytest.raises(ValueError, match="style: expected an RGB array"):
        baseline(c, np.zeros((4, 4)))

"""The quality metrics: calibrated against the reference means of the dpst-dev dataset (PHOTOSTYLE_DPST_DEV), plus the
properties each metric is defined to have."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from pipeline.quality import METRICS, affine_res, as_rgb_array, metrics, structure, style_swd
from tests.photos import content, dpst_content, dpst_output, dpst_style, open_rgb, style

PAIRS = range(1, 11)


def _mean_metrics(output_of) -> dict[str, float]:
    rows = []
    for n in PAIRS:
        c, s = Image.open(dpst_content(n)), Image.open(dpst_style(n))
        rows.append(metrics(c, s, output_of(n, c)))
    return {key: float(np.mean([r[key] for r in rows])) for key in METRICS}


def _assert_matches_readme(means: dict[str, float], expected: tuple[float, float, float]) -> None:
    for key, want in zip(METRICS, expected):
        assert means[key] == pytest.approx(want, rel=0.03), (key, means[key], want)


def test_identity_matches_readme_reference() -> None:
    means = _mean_metrics(lambda n, c: c)
    _assert_matches_readme(means, (1.000, 21.01, 0.012))


def test_deep_photo_style_transfer_outputs_match_readme_reference() -> None:
    means = _mean_metrics(lambda n, c: Image.open(dpst_output(n)))
    _assert_matches_readme(means, (0.756, 3.55, 0.067))


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return as_rgb_array(open_rgb(content(3), max_side=96))


@pytest.fixture(scope="module")
def other_photo() -> np.ndarray:
    return as_rgb_array(open_rgb(style(3), max_side=96))


def test_structure_is_one_for_identity_and_ignores_brightness_shifts(photo: np.ndarray) -> None:
    assert structure(photo, photo) == pytest.approx(1.0, abs=1e-12)
    darker = photo * 0.8
    shifted = darker + 0.15  # within [0, 1]: no clipping, so every local pattern is kept
    assert structure(darker, shifted) == pytest.approx(1.0, abs=1e-9)


def test_structure_drops_when_detail_is_lost(photo: np.ndarray) -> None:
    blurred = Image.fromarray(np.uint8(photo * 255)).filter(ImageFilter.GaussianBlur(2))
    assert structure(photo, blurred) < 0.9
    noisy = np.clip(photo + np.random.default_rng(0).normal(0, 0.1, photo.shape), 0, 1)
    assert structure(photo, noisy) < 0.9


def test_style_swd_compares_colour_distributions_only(photo: np.ndarray, other_photo: np.ndarray) -> None:
    assert style_swd(photo, photo) == 0.0
    shuffled = np.random.default_rng(1).permutation(photo.reshape(-1, 3)).reshape(photo.shape)
    assert style_swd(photo, shuffled) == pytest.approx(0.0, abs=1e-9)
    # Symmetric, size-independent, and positive for a different palette.
    assert style_swd(photo, other_photo) == pytest.approx(style_swd(other_photo, photo))
    assert style_swd(photo, other_photo) > 1.0
    tiled = np.tile(photo, (2, 3, 1))
    assert style_swd(photo, tiled) == pytest.approx(0.0, abs=0.05)


def test_style_swd_quantiles_follow_numpy_linear_interpolation(other_photo: np.ndarray) -> None:
    """The fast sort-based quantiles equal np.quantile's default, the definition's wording."""
    from skimage.color import rgb2lab

    from pipeline.quality import _DIRECTIONS, _LEVELS, _projected_quantiles

    projected = rgb2lab(other_photo).reshape(-1, 3) @ _DIRECTIONS.T
    expected = np.quantile(projected, _LEVELS, axis=0).T
    np.testing.assert_allclose(_projected_quantiles(other_photo), expected, rtol=0, atol=1e-9)
    # The Fibonacci directions are unit vectors spread over the sphere.
    np.testing.assert_allclose(np.linalg.norm(_DIRECTIONS, axis=1), 1.0)
    assert _DIRECTIONS.shape == (64, 3) and abs(_DIRECTIONS.mean(axis=0)).max() < 0.05


def test_affine_res_is_near_zero_for_an_affine_recolouring(photo: np.ndarray) -> None:
    mix = np.array([[0.5, 0.2, 0.1], [0.1, 0.6, 0.0], [0.0, 0.3, 0.4]])
    recoloured = photo @ mix.T + np.array([0.1, 0.05, 0.2])
    assert recoloured.max() <= 1.0
    assert affine_res(photo, recoloured) < 0.02
    # A constant output is trivially affine; no division by zero.
    assert affine_res(photo, np.full_like(photo, 0.5)) == 0.0


def test_affine_res_grows_with_structure_the_content_lacks(photo: np.ndarray) -> None:
    noisy = np.clip(photo + np.random.default_rng(2).normal(0, 0.05, photo.shape), 0, 1)
    very_noisy = np.clip(photo + np.random.default_rng(2).normal(0, 0.2, photo.shape), 0, 1)
    assert affine_res(photo, photo) < affine_res(photo, noisy) < affine_res(photo, very_noisy)
    assert affine_res(photo, very_noisy) > 0.3


def test_metrics_resizes_the_output_to_the_content_size(photo: np.ndarray) -> None:
    image = Image.fromarray(np.uint8(np.round(photo * 255)))
    larger = image.resize((image.width * 2, image.height * 2), Image.Resampling.BICUBIC)
    scores = metrics(image, image, larger)
    assert set(scores) == set(METRICS)
    assert scores["structure"] > 0.95
    assert scores["style_swd"] < 1.0
    assert structure(image, larger) == scores["structure"]


def test_pil_images_and_float_arrays_give_the_same_scores(photo: np.ndarray, other_photo: np.ndarray) -> None:
    as_image = Image.fromarray(np.uint8(np.round(photo * 255)))
    from_image = as_rgb_array(as_image)
    assert from_image.dtype == np.float64 and from_image.shape == photo.shape
    other = Image.fromarray(np.uint8(np.round(other_photo * 255)))
    assert metrics(as_image, other, as_image.convert("L")) == metrics(
        from_image, as_rgb_array(other), as_rgb_array(as_image.convert("L"))
    )


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros((8, 8)), r"output: expected an RGB array of shape \(H, W, 3\), got shape \(8, 8\)"),
        (np.zeros((8, 8, 4)), r"output: expected an RGB array"),
        (np.zeros((8, 8, 3), dtype=np.uint8), "output: expected float values in \\[0, 1\\], got dtype uint8"),
        (np.full((8, 8, 3), np.nan), "output: contains NaN or infinite values"),
        (np.full((8, 8, 3), 255.0), r"output: values must lie in \[0, 1\], got \[255, 255\]"),
        (np.zeros((0, 8, 3)), "output: image has no pixels"),
    ],
)
def test_bad_input_is_a_clear_error_naming_the_argument(bad: np.ndarray, message: str) -> None:
    good = np.zeros((8, 8, 3))
    with pytest.raises(ValueError, match=message):
        metrics(good, good, bad)

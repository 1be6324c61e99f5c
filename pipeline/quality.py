"""The three reference-free quality metrics of ``shared/data/README.md`` (structure, style_swd,
affine_res), implemented once so that eval, benchmarks and tests judge results the same way.

They are deterministic and need no learned network. Calibrated against the README's reference
means on the ten dpst-dev pairs (tests/test_quality.py checks them within 3%). Where the README
leaves a choice open this module makes it here:

* windows are 7×7 box filters with SciPy's ``mode="reflect"`` (edge sample repeated, ``dcba|abcd``,
  as in scikit-image's SSIM); local (co)variances are population moments (divide by 49);
* an output whose size differs from the content is resized to the content's size with PIL's
  bicubic filter (antialiased when shrinking) per float channel, so no 8-bit rounding is added;
* quantiles for style_swd come from a full sort with numpy's default linear interpolation
  (identical to ``np.quantile``, ten times faster);
* affine_res of a perfectly flat output (no local variance at all) is 0: a constant is an affine
  map of anything.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from scipy.ndimage import uniform_filter
from skimage.color import rgb2gray, rgb2lab

__all__ = ["ImageLike", "affine_res", "as_rgb_array", "metrics", "structure", "style_swd", "METRICS"]

ImageLike = Image.Image | NDArray[np.floating]
"""A PIL image (any mode, converted to RGB) or a float array (H, W, 3) with values in [0, 1]."""

METRICS = ("structure", "style_swd", "affine_res")

WINDOW = 7
C2 = 0.03**2
RIDGE = 1e-4
SWD_DIRECTIONS = 64
SWD_LEVELS = 256


def as_rgb_array(image: ImageLike, *, name: str = "image") -> NDArray[np.float64]:
    """``image`` as float64 RGB (H, W, 3) in [0, 1]; a clear ``ValueError`` naming ``name`` for
    anything else (wrong shape, integer or non-finite data, values outside [0, 1], no pixels)."""
    if isinstance(image, Image.Image):
        array = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    else:
        array = np.asarray(image)
        if array.ndim != 3 or array.shape[2] != 3:
            raise ValueError(f"{name}: expected an RGB array of shape (H, W, 3), got shape {array.shape}")
        if not np.issubdtype(array.dtype, np.floating):
            raise ValueError(f"{name}: expected float values in [0, 1], got dtype {array.dtype}")
        array = array.astype(np.float64, copy=False)
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name}: contains NaN or infinite values")
        if array.size and (array.min() < 0.0 or array.max() > 1.0):
            raise ValueError(f"{name}: values must lie in [0, 1], got [{array.min():.4g}, {array.max():.4g}]")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name}: image has no pixels (shape {array.shape})")
    return array


def structure(content: ImageLike, output: ImageLike) -> float:
    """SSIM without its luminance term on grey images: 1 when the output keeps the content's local
    patterns (brightness shifts are free), lower when detail is lost, flattened or invented."""
    c, o = _aligned(content, output)
    gc, go = rgb2gray(c), rgb2gray(o)
    mc, mo = _box(gc), _box(go)
    var_c = _box(gc * gc) - mc * mc
    var_o = _box(go * go) - mo * mo
    cov = _box(gc * go) - mc * mo
    return float(np.mean((2.0 * cov + C2) / (var_c + var_o + C2)))


def style_swd(style: ImageLike, output: ImageLike) -> float:
    """Sliced Wasserstein-1 distance between the CIE Lab colours of output and style (Lab units):
    0 when the output has the style's colour distribution. Image sizes may differ."""
    s = as_rgb_array(style, name="style")
    o = as_rgb_array(output, name="output")
    return float(np.mean(np.abs(_projected_quantiles(s) - _projected_quantiles(o))))


def affine_res(content: ImageLike, output: ImageLike) -> float:
    """Share of the output's local variance that no per-window affine recolouring of the content
    explains (ridge-regularised like the guided filter): 0 is photorealistic in Luan et al.'s
    sense, larger means structure the content does not have."""
    c, o = _aligned(content, output)
    mean_c = _box(c)
    mean_o = _box(o)
    # Per-pixel 3x3 covariance of the content colours, ridge on the diagonal.
    cov_cc = np.empty(c.shape[:2] + (3, 3))
    for i in range(3):
        for j in range(i, 3):
            cov_cc[..., i, j] = cov_cc[..., j, i] = _box(c[..., i] * c[..., j]) - mean_c[..., i] * mean_c[..., j]
    cov_cc += RIDGE * np.eye(3)
    # Cross-covariance: cov_co[..., i, k] = cov(C_i, O_k); column k is the regression target O_k.
    cov_co = np.empty_like(cov_cc)
    for i in range(3):
        for k in range(3):
            cov_co[..., i, k] = _box(c[..., i] * o[..., k]) - mean_c[..., i] * mean_o[..., k]
    var_o = np.maximum(_box(o * o) - mean_o * mean_o, 0.0)
    coef = np.linalg.solve(cov_cc, cov_co)  # coef[..., :, k] = a for channel k
    residual = np.maximum(var_o - np.sum(coef * cov_co, axis=-2), 0.0)
    total = float(var_o.mean(axis=(0, 1)).sum())
    if total <= 1e-12:
        return 0.0
    return float(residual.mean(axis=(0, 1)).sum() / total)


def metrics(content: ImageLike, style: ImageLike, output: ImageLike) -> dict[str, float]:
    """All three metrics of one result, keyed by the names in :data:`METRICS`."""
    c = as_rgb_array(content, name="content")
    o = _resized(as_rgb_array(output, name="output"), c.shape[:2])
    return {
        "structure": structure(c, o),
        "style_swd": style_swd(style, o),
        "affine_res": affine_res(c, o),
    }


def _aligned(content: ImageLike, output: ImageLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    c = as_rgb_array(content, name="content")
    o = as_rgb_array(output, name="output")
    return c, _resized(o, c.shape[:2])


def _resized(image: NDArray[np.float64], shape: tuple[int, int]) -> NDArray[np.float64]:
    if image.shape[:2] == shape:
        return image
    height, width = shape
    channels = [
        np.asarray(Image.fromarray(np.ascontiguousarray(image[..., k], dtype=np.float32)).resize((width, height), Image.Resampling.BICUBIC))
        for k in range(3)
    ]
    return np.clip(np.stack(channels, axis=-1).astype(np.float64), 0.0, 1.0)


def _box(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """7×7 local mean over the two image axes (channels, if any, stay separate)."""
    size = (WINDOW, WINDOW) + (1,) * (x.ndim - 2)
    return uniform_filter(x, size=size, mode="reflect")


def _fibonacci_directions(count: int) -> NDArray[np.float64]:
    k = np.arange(count)
    z = 1.0 - (2.0 * k + 1.0) / count
    r = np.sqrt(1.0 - z * z)
    phi = k * np.pi * (3.0 - np.sqrt(5.0))
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


_DIRECTIONS = _fibonacci_directions(SWD_DIRECTIONS)
_LEVELS = (np.arange(SWD_LEVELS) + 0.5) / SWD_LEVELS


def _projected_quantiles(image: NDArray[np.float64]) -> NDArray[np.float64]:
    """(directions, levels) quantiles of the Lab colours projected on each direction."""
    lab = rgb2lab(image).reshape(-1, 3)
    projected = np.sort(_DIRECTIONS @ lab.T, axis=1)
    n = projected.shape[1]
    position = _LEVELS * (n - 1)
    lower = np.floor(position).astype(np.intp)
    upper = np.minimum(lower + 1, n - 1)
    fraction = position - lower
    low, high = projected[:, lower], projected[:, upper]
    return low + (high - low) * fraction

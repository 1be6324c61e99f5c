"""Differentiable colour science: sRGB -> CIE Lab and fixed projection directions for the colour
term of the style loss, and luma for the affine head's brightness levels.

Lab because it is roughly perceptually uniform, so a distance there is a distance people see, and
because it is where results are judged (``style_swd`` in ``shared/data/README.md``). The formulas
are the standard sRGB (IEC 61966-2-1) and CIE 1976 L*a*b* ones with the D65 white, as in
scikit-image's ``rgb2lab``; values are divided by 100 so that L lies in [0, 1].
"""

from __future__ import annotations

import math

import torch

__all__ = ["rgb_to_lab", "fibonacci_directions", "luma"]

_RGB_TO_XYZ = torch.tensor(
    [
        [0.412453, 0.357580, 0.180423],
        [0.212671, 0.715160, 0.072169],
        [0.019334, 0.119193, 0.950227],
    ]
)
_D65_WHITE = torch.tensor([0.95047, 1.0, 1.08883])
_EPSILON = 216.0 / 24389.0  # CIE's (6/29)^3
_KAPPA = 24389.0 / 27.0


def rgb_to_lab(image: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` sRGB in [0, 1] -> CIE Lab / 100 (L in [0, 1], a and b about [-1, 1]).

    Computed in float32 whatever the input's dtype; values outside [0, 1] are clamped first.
    """
    rgb = image.float().clamp(0.0, 1.0)
    linear = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055).clamp_min(1e-8).pow(2.4), rgb / 12.92)
    matrix = (_RGB_TO_XYZ / _D65_WHITE[:, None]).to(rgb.device)
    xyz = torch.einsum("ij,bjhw->bihw", matrix, linear)
    f = torch.where(xyz > _EPSILON, xyz.clamp_min(_EPSILON).pow(1.0 / 3.0), (_KAPPA * xyz + 16.0) / 116.0)
    fx, fy, fz = f.unbind(1)
    lab = torch.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim=1)
    return lab / 100.0


def fibonacci_directions(count: int = 64) -> torch.Tensor:
    """``count`` unit directions spread evenly over the sphere (a Fibonacci lattice), ``(3, count)``:
    deterministic, and the same set ``style_swd`` slices along."""
    k = torch.arange(count, dtype=torch.float64)
    z = 1.0 - (2.0 * k + 1.0) / count
    r = torch.sqrt(1.0 - z * z)
    phi = k * math.pi * (3.0 - math.sqrt(5.0))
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi), z]).float()


def luma(image: torch.Tensor) -> torch.Tensor:
    """Rec. 601 luma of ``(B, 3, H, W)`` sRGB in [0, 1], as ``(B, 1, H, W)``: cheap brightness."""
    weights = image.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (image * weights).sum(dim=1, keepdim=True)

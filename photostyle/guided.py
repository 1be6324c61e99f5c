"""Guided full-resolution rendering: run the net small, lift the result with local affine colour maps.

A photorealistic style is, locally, an affine recolouring of the input. So the net runs at a
working resolution, a local affine transform (3x3 matrix + offset per pixel) is fitted between the
small input and the small output in every window (the guided filter of He et al., with a ridge on
the colour covariance), and the smoothly upsampled transforms are applied to the full-resolution
input. Detail comes from the full-resolution photo; cost is that of the small net run plus a few
per-pixel operations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["fit_local_affine", "apply_local_affine", "guided_upsample"]


def _box(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over (2r+1)^2 windows, reflect-padded so borders see a full window."""
    k = 2 * radius + 1
    pad_mode = "reflect" if min(x.shape[-2:]) > radius else "replicate"
    return F.avg_pool2d(F.pad(x, (radius,) * 4, mode=pad_mode), k, stride=1)


def fit_local_affine(guide: torch.Tensor, target: torch.Tensor, *, radius: int = 4, eps: float = 1e-4) -> torch.Tensor:
    """Per-pixel affine maps ``target ~ A @ guide + b`` fitted in (2r+1)^2 windows.

    ``guide``, ``target``: ``(1, 3, h, w)``. Returns ``(1, 12, h, w)``: the 3x3 ``A`` row-major,
    then ``b``; window-averaged, as in the guided filter, so the maps vary smoothly.
    """
    g = guide.double()
    t = target.double()
    _, _, h, w = g.shape
    mean_g = _box(g, radius)  # (1,3,h,w)
    mean_t = _box(t, radius)
    gg = _box((g[:, :, None] * g[:, None]).reshape(1, 9, h, w), radius)
    gt = _box((t[:, :, None] * g[:, None]).reshape(1, 9, h, w), radius)  # [c, d]: E[t_c g_d]
    cov_gg = gg.reshape(1, 3, 3, h, w) - mean_g[:, :, None] * mean_g[:, None]
    cov_tg = gt.reshape(1, 3, 3, h, w) - mean_t[:, :, None] * mean_g[:, None]
    eye = torch.eye(3, dtype=g.dtype, device=g.device)
    sigma = cov_gg.permute(0, 3, 4, 1, 2) + eps * eye  # (1,h,w,3,3)
    rhs = cov_tg.permute(0, 3, 4, 2, 1)  # (1,h,w,3[d],3[c])
    a = torch.linalg.solve(sigma, rhs).transpose(-1, -2)  # (1,h,w,3[c],3[d])
    b = mean_t.permute(0, 2, 3, 1) - (a @ mean_g.permute(0, 2, 3, 1)[..., None])[..., 0]
    coeffs = torch.cat([a.reshape(1, h, w, 9), b], dim=-1).permute(0, 3, 1, 2)
    return _box(coeffs, radius).to(guide.dtype)


def apply_local_affine(coeffs: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Apply ``(1, 12, H, W)`` maps to ``(1, 3, H, W)`` pixels."""
    _, _, h, w = image.shape
    a = coeffs[:, :9].reshape(1, 3, 3, h, w)
    b = coeffs[:, 9:]
    return torch.einsum("bcdhw,bdhw->bchw", a, image) + b


def guided_upsample(
    small_input: torch.Tensor, small_output: torch.Tensor, full_input: torch.Tensor, *, radius: int = 4, eps: float = 1e-4
) -> torch.Tensor:
    """Lift ``small_output`` (the net's result on ``small_input``) to ``full_input``'s resolution."""
    coeffs = fit_local_affine(small_input, small_output, radius=radius, eps=eps)
    coeffs = F.interpolate(coeffs, size=full_input.shape[-2:], mode="bilinear", align_corners=False)
    return apply_local_affine(coeffs, full_input)

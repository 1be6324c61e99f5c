"""The global colour step with whole covariances: a linear optimal transport of the photo's colours.

Reinhard et al.'s transfer matches each RGB channel's mean and spread on its own; it cannot turn a
photo's colours along a direction the channels do not share (a teal-and-orange grade, a warm
highlight over cool shadows). The linear Monge-Kantorovich transfer (Pitie and Kokaram, 2007)
matches the mean and the whole 3 x 3 covariance with the affine map of RGB that moves colours
least, so it is still a global recolouring that keeps every edge (and the per-channel transfer
when both covariances are diagonal). For a photo with colour mean m and covariance P and a look
with mean beta and covariance S:

    T = P^-1/2 (P^1/2 S P^1/2)^1/2 P^-1/2,        y = T (x - m) + beta

:class:`ColourTransportNorm` is that step as a norm layer: the photo's statistics are its input's
(a whole-photo statistic, recorded and replayed for tiles like an instance norm's), and the look's
are its per-style parameters: ``beta`` the mean, ``gamma`` a 3 x 3 factor with S = gamma gamma^T,
so any value of it is a valid covariance and training moves it freely.
"""

from __future__ import annotations

import torch

from photostyle.norm import ConditionalInstanceNorm2d, Statistics

__all__ = ["ColourTransportNorm", "transport_matrix", "symmetric_sqrt"]

# Added to every photo covariance: a flat photo's noise is magnified at most 100x (and the same
# floor keeps the inverse square root finite), as a spread of 2.5 / 255 would be.
PHOTO_COVARIANCE_FLOOR = 1e-4


class _SymmetricSqrt(torch.autograd.Function):
    """The square root of symmetric positive semi-definite matrices, with the exact gradient.

    Through ``eigh`` the gradient holds 1 / (l_i - l_j), which is infinite when two eigenvalues
    meet (a grey photo: both chroma axes alike); the square root's own derivative is
    V [(V^T G V) / (s_i + s_j)] V^T (the solution of the Sylvester equation R dR + dR R = dA),
    finite wherever the matrix is not singular.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, matrix: torch.Tensor) -> torch.Tensor:
        values, vectors = torch.linalg.eigh(matrix)
        roots = values.clamp_min(0).sqrt()
        ctx.save_for_backward(vectors, roots)
        return vectors @ torch.diag_embed(roots) @ vectors.transpose(-1, -2)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        vectors, roots = ctx.saved_tensors
        sym = (grad + grad.transpose(-1, -2)) / 2
        inner = vectors.transpose(-1, -2) @ sym @ vectors
        divided = (roots[..., :, None] + roots[..., None, :]).clamp_min(1e-12)
        return vectors @ (inner / divided) @ vectors.transpose(-1, -2)


def symmetric_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    """The symmetric square root of each ``(..., n, n)`` positive semi-definite matrix."""
    return _SymmetricSqrt.apply(matrix)


def transport_matrix(photo: torch.Tensor, look: torch.Tensor) -> torch.Tensor:
    """The linear map that carries colours of covariance ``photo`` to covariance ``look`` moving
    them least: ``(B, 3, 3)`` from two ``(B, 3, 3)`` covariances (``photo`` already floored)."""
    root = symmetric_sqrt(photo)
    inverse = torch.linalg.inv(root)
    return inverse @ symmetric_sqrt(root @ look @ root) @ inverse


def colour_moments(x: torch.Tensor) -> Statistics:
    """Per-sample colour mean ``(B, 3, 1, 1)`` (float32) and covariance ``(B, 3, 3)`` (float64,
    floored by :data:`PHOTO_COVARIANCE_FLOOR`)."""
    flat = x.float().flatten(2)
    mean = flat.mean(dim=2, keepdim=True)
    centred = flat - mean
    covariance = (centred @ centred.transpose(1, 2)).double() / flat.shape[2]
    floor = PHOTO_COVARIANCE_FLOOR * torch.eye(3, dtype=torch.float64, device=x.device)
    return mean[..., None], covariance + floor


class ColourTransportNorm(ConditionalInstanceNorm2d):
    """The photo's colours carried to a look's colour mean and covariance (module docstring).

    Its per-style parameters are ``gamma`` ``(styles, 3, 3)``, the look's covariance factor, and
    ``beta`` ``(styles, 3)``, its mean; a fresh layer (gamma = I, beta = 0) whitens the colours.
    """

    def __init__(self, num_styles: int) -> None:
        super().__init__(3, num_styles)
        self.gamma = torch.nn.Parameter(torch.eye(3).repeat(num_styles, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        # In float32 whatever the autocast: these are the photo's own colours, and a covariance
        # of millions of pixels summed in bf16 would be off by a percent.
        with torch.autocast(x.device.type, enabled=False):
            x = x.float()
            mean, covariance = self._statistics(lambda: colour_moments(x), x.device)
            factor = self.gamma[style].double()
            transport = transport_matrix(covariance, factor @ factor.transpose(1, 2)).float()
            return torch.einsum("bij,bjhw->bihw", transport, x - mean) + self.beta[style][:, :, None, None].float()

    @torch.no_grad()
    def start_at(self, slot: int, photo: torch.Tensor) -> None:
        """Make style ``slot`` carry any photo to ``photo``'s colour mean and (floored) covariance.
        Floored as every photo's is, so the look starts at full rank: a black-and-white photo's
        covariance has rank one, and a factor of rank one keeps it under every gradient step,
        so such a look could never learn a colour."""
        mean, covariance = colour_moments(photo)
        self.gamma[slot] = symmetric_sqrt(covariance[0]).to(self.gamma)
        self.beta[slot] = mean[0, :, 0, 0].to(self.beta)

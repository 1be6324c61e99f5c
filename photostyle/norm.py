"""Conditional instance normalisation (Dumoulin et al. 2017): the only per-style parameters.

Every style owns one (gamma, beta) pair per norm layer; the convolutions around it are shared.
A forward call takes a per-sample style index, so one batch can mix styles.

For tiled stylising of very large photos the per-channel statistics must be those of the *whole*
image, not of each tile; :func:`shared_statistics` records them on one pass and replays them on
the next (see ``photostyle.stylize``).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ConditionalInstanceNorm2d", "shared_statistics"]

_EPS = 1e-5


class ConditionalInstanceNorm2d(nn.Module):
    """Instance norm whose affine parameters are picked per sample from a table of styles."""

    def __init__(self, channels: int, num_styles: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(num_styles, channels))
        self.beta = nn.Parameter(torch.zeros(num_styles, channels))
        self._record = False
        self._recorded: tuple[torch.Tensor, torch.Tensor] | None = None
        self._replay: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def num_styles(self) -> int:
        return self.gamma.shape[0]

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        if self._replay is None and not self._record:
            x_hat = F.instance_norm(x, eps=_EPS)  # one fused kernel: the common path
        else:
            if self._replay is not None:
                mean, var = (t.to(x.device) for t in self._replay)
            else:
                var, mean = torch.var_mean(x.float(), dim=(2, 3), keepdim=True, correction=0)
                self._recorded = (mean.detach(), var.detach())
            x_hat = (x - mean.to(x.dtype)) * torch.rsqrt(var + _EPS).to(x.dtype)
        gamma = self.gamma[style][:, :, None, None].to(x_hat.dtype)
        beta = self.beta[style][:, :, None, None].to(x_hat.dtype)
        return torch.addcmul(beta, x_hat, gamma)


@contextlib.contextmanager
def shared_statistics(
    net: nn.Module, stats: list[tuple[torch.Tensor, torch.Tensor]] | None = None
) -> Iterator[list[tuple[torch.Tensor, torch.Tensor]]]:
    """Record (``stats=None``) or replay per-layer instance statistics on every norm layer of ``net``.

    Recording yields a list that is filled, on leaving the block, with one (mean, var) per layer in
    module order (from the last forward call); replaying makes
    every layer normalise with the given statistics instead of the input's own, so tiles of one
    photo are normalised as the whole photo would be.
    """
    layers = [m for m in net.modules() if isinstance(m, ConditionalInstanceNorm2d)]
    recorded: list[tuple[torch.Tensor, torch.Tensor]] = []
    if stats is not None and len(stats) != len(layers):
        raise ValueError(f"got statistics for {len(stats)} norm layers, the network has {len(layers)}")
    try:
        for i, layer in enumerate(layers):
            if stats is None:
                layer._record = True
            else:
                layer._replay = stats[i]
        yield recorded
        if stats is None:
            missing = [i for i, layer in enumerate(layers) if layer._recorded is None]
            if missing:
                raise RuntimeError("no forward pass ran while recording instance statistics")
            recorded.extend(layer._recorded for layer in layers)
    finally:
        for layer in layers:
            layer._record = False
            layer._recorded = None
            layer._replay = None

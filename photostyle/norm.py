"""Conditional instance normalisation (Dumoulin et al. 2017): the only per-style parameters.

Every style owns one (gamma, beta) pair per norm layer; the convolutions around it are shared.
A forward call takes a per-sample style index, so one batch can mix styles.

For tiled stylising of very large photos the per-channel statistics must be those of the *whole*
image, not of each tile; :func:`shared_statistics` records them on one pass and replays them on
the next (see ``photostyle.stylize``). Any layer that depends on whole-photo statistics (the
colour table of :mod:`photostyle.lut` too) derives from :class:`WholePhotoStatistics` to take part.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ConditionalInstanceNorm2d", "WholePhotoStatistics", "shared_statistics"]

_EPS = 1e-5


Statistics = tuple[torch.Tensor, ...]


class WholePhotoStatistics(nn.Module):
    """A layer whose output depends on statistics of the whole photo it sees.

    Normally they are computed from the input; :func:`shared_statistics` switches the layer to
    recording them (one pass over the whole, downscaled photo) or to replaying recorded ones
    (every tile of that photo), so tiles come out as the whole photo would.
    """

    def __init__(self) -> None:
        super().__init__()
        self._record = False
        self._recorded: Statistics | None = None
        self._replay: Statistics | None = None

    @property
    def _shared(self) -> bool:
        """Whether statistics are being recorded or replayed (not just computed)."""
        return self._record or self._replay is not None

    def _statistics(self, compute: Callable[[], Statistics], device: torch.device) -> Statistics:
        """The replayed statistics, or ``compute()``'s (kept when recording)."""
        if self._replay is not None:
            return tuple(t.to(device) for t in self._replay)
        stats = compute()
        if self._record:
            self._recorded = tuple(t.detach() for t in stats)
        return stats


class ConditionalInstanceNorm2d(WholePhotoStatistics):
    """Instance norm whose affine parameters are picked per sample from a table of styles."""

    def __init__(self, channels: int, num_styles: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(num_styles, channels))
        self.beta = nn.Parameter(torch.zeros(num_styles, channels))

    @property
    def num_styles(self) -> int:
        return self.gamma.shape[0]

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        if not self._shared:
            x_hat = F.instance_norm(x, eps=_EPS)  # one fused kernel: the common path
        else:
            mean, var = self._statistics(lambda: _moments(x), x.device)
            x_hat = (x - mean.to(x.dtype)) * torch.rsqrt(var + _EPS).to(x.dtype)
        gamma = self.gamma[style][:, :, None, None].to(x_hat.dtype)
        beta = self.beta[style][:, :, None, None].to(x_hat.dtype)
        return torch.addcmul(beta, x_hat, gamma)


def _moments(x: torch.Tensor) -> Statistics:
    """Per-sample, per-channel (mean, variance), in float32."""
    var, mean = torch.var_mean(x.float(), dim=(2, 3), keepdim=True, correction=0)
    return mean, var


@contextlib.contextmanager
def shared_statistics(net: nn.Module, stats: list[Statistics] | None = None) -> Iterator[list[Statistics]]:
    """Record (``stats=None``) or replay the statistics of every whole-photo layer of ``net``.

    Recording yields a list that is filled, on leaving the block, with each layer's statistics in
    module order (from the last forward call): (mean, var) for a norm layer; replaying makes
    every layer use the given statistics instead of its input's own, so tiles of one
    photo are normalised (and recoloured) as the whole photo would be.
    """
    layers = [m for m in net.modules() if isinstance(m, WholePhotoStatistics)]
    recorded: list[Statistics] = []
    if stats is not None and len(stats) != len(layers):
        raise ValueError(f"got statistics for {len(stats)} whole-photo layers, the network has {len(layers)}")
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
                raise RuntimeError("no forward pass ran while recording whole-photo statistics")
            recorded.extend(layer._recorded for layer in layers)
    finally:
        for layer in layers:
            layer._record = False
            layer._recorded = None
            layer._replay = None

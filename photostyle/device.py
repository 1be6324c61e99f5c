"""The one place that decides where tensors live and in which precision.

CUDA when present, CPU otherwise; on CUDA, bf16 autocast and channels_last (tensor-core friendly);
on CPU, fp32 (bf16 on CPUs without native support is slower and less exact), with channels_last
for inference only (measured: 1.7x faster for the lite net at 512x512 on 2 cores; no gain when
training).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

__all__ = ["resolve_device", "autocast", "memory_format"]


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"`` picks CUDA when available; anything else is taken as given."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available on this machine")
    return dev


def memory_format(device: torch.device, *, training: bool = False) -> torch.memory_format:
    """channels_last on CUDA (cuDNN's fast path) and for CPU inference (oneDNN's); contiguous
    when training on CPU."""
    if device.type == "cuda" or not training:
        return torch.channels_last
    return torch.contiguous_format


@contextlib.contextmanager
def autocast(device: torch.device) -> Iterator[None]:
    """bf16 autocast on CUDA; a no-op on CPU."""
    if device.type == "cuda":
        with torch.autocast("cuda", dtype=torch.bfloat16):
            yield
    else:
        yield

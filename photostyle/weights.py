"""Tensors on disk: safetensors only, never pickle.

A base (shared convolutions) and a style (per-style instance-norm gamma/beta) are both plain
``dict[str, Tensor]``; this module turns them into bytes and back, with a flat ``str -> str``
metadata header. The pipeline stores those bytes wherever it likes; ``photostyle`` never needs to
know about object storage.
"""

from __future__ import annotations

import hashlib
import json

import torch
from safetensors import SafetensorError
from safetensors.torch import load as _load_bytes
from safetensors.torch import save as _save_bytes

__all__ = [
    "WeightsError",
    "dumps",
    "loads",
    "tensors_digest",
]


class WeightsError(ValueError):
    """A weights file or blob that cannot be read as safetensors."""


def _contiguous_cpu(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in sorted(tensors.items())}


def dumps(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """Serialise tensors (moved to CPU, keys sorted so equal tensors give equal bytes)."""
    bad = {k: type(v).__name__ for k, v in (metadata or {}).items() if not isinstance(v, str)}
    if bad:
        raise WeightsError(f"safetensors metadata values must be str, got {bad}")
    return _save_bytes(_contiguous_cpu(tensors), metadata=metadata)


def loads(data: bytes, *, source: str = "<bytes>") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Parse safetensors bytes into (tensors, metadata); ``source`` names the input in errors."""
    if not data:
        raise WeightsError(f"{source}: empty weights data")
    try:
        tensors = _load_bytes(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len])
    except (SafetensorError, ValueError, UnicodeDecodeError) as exc:
        raise WeightsError(f"{source}: not a valid safetensors file ({exc})") from exc
    return tensors, dict(header.get("__metadata__") or {})


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and values: identity of a set of tensors, independent
    of metadata, so the same base published twice gets the same id."""
    h = hashlib.sha256()
    for name, t in _contiguous_cpu(tensors).items():
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()

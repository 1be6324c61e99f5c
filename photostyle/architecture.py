"""What a base's recorded architecture may be, and whether its weights are exactly what it builds.

A base's architecture comes from outside the process (a ``meta.json``, a safetensors header) and
decides how much memory the net and its activations take, so it is checked before anything is
built: every field known and of the right type, every size within :data:`LIMITS`. Then the
weights must be exactly the net's: the same tensor names, shapes and dtypes as a network built
from that architecture (on the ``meta`` device: nothing is allocated). A tampered architecture
that still fits its weights can only differ in fields without parameters (the heads' cell size
and table levels), and those are bounded too.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import torch

from photostyle.network import StyleNet
from photostyle.norm import ConditionalInstanceNorm2d
from photostyle.presets import NetConfig

__all__ = [
    "LIMITS",
    "MAX_PARAMETERS",
    "ArchitectureError",
    "check_base_tensors",
    "check_config",
    "check_style_tensors",
    "config_from_record",
]

# Upper bounds on every size field (inclusive). The widths are twice the paper's (32, 64, 128):
# activations grow with them, and the paper's net already takes a few GB at the 4.2 MP untiled
# limit (photostyle.stylize), so these keep a worker's activations within about twice that.
LIMITS: dict[str, int | tuple[int, ...]] = {
    "channels": (64, 128, 256),
    "residual_blocks": 16,
    "outer_kernel": 15,
    "affine_cell": 256,
    "affine_bins": 64,
    "lut_levels": (64, 64, 64),
}
MAX_PARAMETERS = 8_000_000  # 32 MB of float32; the paper's base has 1.7 M
_HEADS = ("rgb", "affine", "lut")
Signature = dict[str, tuple[tuple[int, ...], torch.dtype]]  # tensor name -> shape, dtype
_MINIMUM = {"lut_levels": 2}  # a colour table needs two levels per axis; every other size is >= 1


class ArchitectureError(ValueError):
    """An architecture record, or weights, that no network of this package can be built from;
    the message starts with the field or tensor at fault."""


def config_from_record(raw: Any) -> NetConfig:
    """A :class:`NetConfig` from a recorded architecture (a dict that went through JSON), or
    :class:`ArchitectureError` naming the first bad field (``arch.<field>``). Fields added since
    the record was written take their defaults; unknown fields are refused."""
    if not isinstance(raw, Mapping):
        raise ArchitectureError(f"arch: expected an object, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(NetConfig)}
    unknown = sorted(set(raw) - fields.keys())
    if unknown:
        raise ArchitectureError(f"arch.{unknown[0]}: unknown field (known: {', '.join(fields)})")
    values = {}
    for name, value in raw.items():
        default = getattr(NetConfig(), name)
        if isinstance(default, tuple):
            if not isinstance(value, (list, tuple)) or len(value) != len(default) or not all(_is_int(v) for v in value):
                raise ArchitectureError(f"arch.{name}: expected {len(default)} integers, got {value!r}")
            value = tuple(value)
        elif isinstance(default, int):
            if not _is_int(value):
                raise ArchitectureError(f"arch.{name}: expected an integer, got {value!r}")
        elif not isinstance(value, type(default)):
            raise ArchitectureError(f"arch.{name}: expected a {type(default).__name__}, got {value!r}")
        values[name] = value
    config = NetConfig(**values)
    check_config(config)
    return config


def check_config(config: NetConfig) -> None:
    """Refuse an architecture outside :data:`LIMITS` or over :data:`MAX_PARAMETERS`, before any
    of it is built."""
    _meta_net(config)


def _meta_net(config: NetConfig) -> StyleNet:
    """``config``'s one-style network on the ``meta`` device (shapes only, nothing allocated),
    once its sizes are known to be within bounds."""
    if config.head not in _HEADS:
        raise ArchitectureError(f"arch.head: {config.head!r} is not one of {', '.join(_HEADS)}")
    if config.outer_kernel % 2 == 0:
        raise ArchitectureError(f"arch.outer_kernel: {config.outer_kernel} is even; outer kernels are odd")
    for name, limit in LIMITS.items():
        value = getattr(config, name)
        values, limits = (value, limit) if isinstance(limit, tuple) else ((value,), (limit,))
        low = _MINIMUM.get(name, 1)
        if any(not low <= v <= top for v, top in zip(values, limits)):
            raise ArchitectureError(f"arch.{name}: {value!r} is outside the allowed {low}..{limit!r}")
    with torch.device("meta"):
        net = StyleNet(config, num_styles=1)
    count = sum(math.prod(t.shape) for t in net.state_dict().values())
    if count > MAX_PARAMETERS:
        raise ArchitectureError(f"arch: {count:,} parameters, over the limit of {MAX_PARAMETERS:,}")
    return net


def check_base_tensors(config: NetConfig, tensors: Mapping[str, torch.Tensor]) -> None:
    """Refuse weights that are not exactly the shared tensors of ``config``'s network."""
    base, _ = _expected(config)
    _compare(base, tensors, "base")


def check_style_tensors(config: NetConfig, tensors: Mapping[str, torch.Tensor]) -> None:
    """Refuse a style that is not exactly one (gamma, beta) row of ``config``'s norm layers."""
    _, style = _expected(config)
    _compare(style, tensors, "style")


def _expected(config: NetConfig) -> tuple[Signature, Signature]:
    """Names, shapes and dtypes of the base's and of one style's tensors, for ``config``."""
    net = _meta_net(config)
    per_style = {
        f"{layer}.{p}" for layer, m in net.named_modules() if isinstance(m, ConditionalInstanceNorm2d) for p in ("gamma", "beta")
    }
    state = net.state_dict()
    base = {k: (tuple(t.shape), t.dtype) for k, t in state.items() if k not in per_style}
    style = {k: (tuple(state[k].shape[1:]), state[k].dtype) for k in per_style}
    return base, style


def _compare(expected: Signature, tensors: Mapping[str, torch.Tensor], what: str) -> None:
    actual = {k: (tuple(t.shape), t.dtype) for k, t in tensors.items()}
    missing, extra = sorted(expected.keys() - actual.keys()), sorted(actual.keys() - expected.keys())
    if missing or extra:
        raise ArchitectureError(
            f"{what} tensors do not fit the architecture: missing {missing[:3]}, unexpected {extra[:3]}"
        )
    for name in sorted(expected):
        if actual[name] != expected[name]:
            (shape, dtype), (want_shape, want_dtype) = actual[name], expected[name]
            raise ArchitectureError(
                f"{what} tensor {name}: shape {list(shape)} {dtype} does not fit the architecture, "
                f"which builds {list(want_shape)} {want_dtype}"
            )
        # A NaN or infinity would only surface later, as every photo failing somewhere deep in the net.
        if tensors[name].is_floating_point() and not bool(torch.isfinite(tensors[name]).all()):
            raise ArchitectureError(f"{what} tensor {name}: holds NaN or infinite values")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)

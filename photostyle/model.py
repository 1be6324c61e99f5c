"""Trained weights as typed objects: a shared :class:`Base` and per-style :class:`Style`.

A base holds every convolution of a :class:`~photostyle.network.StyleNet` plus its architecture;
a style holds one row of every norm layer's (gamma, beta). Any number of styles trained on the
same base can be loaded into one network (:func:`build_net`), which is how a batch mixes styles.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch

from photostyle import weights
from photostyle.architecture import check_base_tensors, config_from_record
from photostyle.norm import ConditionalInstanceNorm2d
from photostyle.presets import NetConfig
from photostyle.network import StyleNet

__all__ = ["Base", "Style", "split_net", "build_net", "identity_style", "style_parameter_names"]

_ARCH_KEY = "photostyle.arch"


@dataclass(frozen=True)
class Base:
    """Shared convolution weights of a style network, with the architecture that built them.

    Constructing one checks that the weights are exactly what the architecture builds, and that
    the architecture is within bounds (:mod:`photostyle.architecture`), so no network is ever
    built from a record that does not describe its weights."""

    config: NetConfig
    tensors: Mapping[str, torch.Tensor]

    def __post_init__(self) -> None:
        check_base_tensors(self.config, self.tensors)

    @property
    def num_parameters(self) -> int:
        return sum(t.numel() for t in self.tensors.values())

    def digest(self) -> str:
        """sha256 of the tensors (not of any file): the base's content identity."""
        return weights.tensors_digest(dict(self.tensors))

    def to_bytes(self, metadata: Mapping[str, str] | None = None) -> bytes:
        return weights.dumps(dict(self.tensors), {**(metadata or {}), _ARCH_KEY: self.config.to_json()})

    @classmethod
    def from_bytes(cls, data: bytes, *, source: str = "<bytes>") -> "Base":
        tensors, meta = weights.loads(data, source=source)
        if _ARCH_KEY not in meta:
            raise weights.WeightsError(f"{source}: not a photostyle base (no {_ARCH_KEY!r} in its metadata)")
        try:
            return cls(config_from_record(json.loads(meta[_ARCH_KEY])), tensors)
        except ValueError as exc:  # bad JSON, or an ArchitectureError
            raise weights.WeightsError(f"{source}: not a valid photostyle base ({exc})") from exc


@dataclass(frozen=True)
class Style:
    """One style: the (gamma, beta) vectors of every norm layer, for one base."""

    tensors: Mapping[str, torch.Tensor]
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def num_parameters(self) -> int:
        return sum(t.numel() for t in self.tensors.values())

    def to_bytes(self, metadata: Mapping[str, str] | None = None) -> bytes:
        return weights.dumps(dict(self.tensors), {**self.metadata, **(metadata or {})})

    @classmethod
    def from_bytes(cls, data: bytes, *, source: str = "<bytes>") -> "Style":
        tensors, meta = weights.loads(data, source=source)
        return cls(tensors, meta)


def _norm_layers(net: StyleNet) -> dict[str, ConditionalInstanceNorm2d]:
    return {name: m for name, m in net.named_modules() if isinstance(m, ConditionalInstanceNorm2d)}


def style_parameter_names(net: StyleNet) -> list[str]:
    """Names of the per-style tensors, ``<layer>.gamma`` / ``<layer>.beta``."""
    return [f"{layer}.{p}" for layer in _norm_layers(net) for p in ("gamma", "beta")]


def split_net(net: StyleNet) -> tuple[Base, list[Style]]:
    """Cut a network into its shared base and one :class:`Style` per style slot."""
    style_names = set(style_parameter_names(net))
    state = net.state_dict()
    base = Base(net.config, {k: v.detach().clone() for k, v in state.items() if k not in style_names})
    styles = [
        Style({k: state[k][i].detach().clone() for k in sorted(style_names)}) for i in range(net.num_styles)
    ]
    return base, styles


def build_net(base: Base, styles: Sequence[Style]) -> StyleNet:
    """A network with ``base``'s convolutions and ``styles`` in slots 0..n-1 (in that order)."""
    if not styles:
        raise ValueError("build_net needs at least one style")
    net = StyleNet(base.config, num_styles=len(styles))
    expected = set(style_parameter_names(net))
    state: dict[str, torch.Tensor] = dict(base.tensors)
    for i, style in enumerate(styles):
        if set(style.tensors) != expected:
            missing, extra = sorted(expected - set(style.tensors)), sorted(set(style.tensors) - expected)
            raise ValueError(f"style {i} does not fit this base: missing {missing[:3]}, unexpected {extra[:3]}")
    for name in expected:
        state[name] = torch.stack([s.tensors[name].to(torch.float32) for s in styles])
    net.load_state_dict(state, strict=True)
    return net


def identity_style(config: NetConfig) -> Style:
    """The starting point of a new style: gamma = 1, beta = 0 on every norm layer."""
    return split_net(StyleNet(config, num_styles=1))[1][0]

"""Network sizes: the paper's and a small one that trains on two CPU cores in minutes.

One place for every architecture number. ``paper`` is Johnson et al.'s transformation network
(which Yao et al. build on) with conditional instance norm; ``lite`` was chosen by measurement on a
2-core CPU (see README, "Numbers: paper or ours").
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Literal, Mapping

__all__ = ["NetConfig", "PRESETS", "get_preset"]

Head = Literal["rgb", "affine", "lut"]


@dataclass(frozen=True)
class NetConfig:
    """Architecture of a style network (what a base's weights need to be rebuilt)."""

    channels: tuple[int, int, int] = (32, 64, 128)  # full, 1/2 and 1/4 resolution widths
    residual_blocks: int = 5
    outer_kernel: int = 9  # kernel of the first and last convolutions
    # "rgb": the net paints pixels; "affine": it predicts colour transforms shared per cell;
    # "lut": it predicts colour transforms shared per colour over the whole photo
    head: Head = "rgb"
    affine_cell: int = 1  # affine head: side in pixels of the cells its colour maps are smoothed over
    affine_bins: int = 1  # affine head: brightness levels a cell keeps apart (1: plain cell averages)
    lut_levels: tuple[int, int, int] = (8, 6, 6)  # lut head: CIE L, a and b levels of its colour table

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "NetConfig":
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "NetConfig":
        """From :func:`dataclasses.asdict` output that went through JSON (lists back to tuples);
        fields added since a config was recorded take their defaults."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


PRESETS: dict[str, NetConfig] = {
    "paper": NetConfig(channels=(32, 64, 128), residual_blocks=5, outer_kernel=9, head="rgb"),
    "lite": NetConfig(channels=(16, 32, 64), residual_blocks=3, outer_kernel=5, head="lut", lut_levels=(8, 6, 6)),
    # lite before colour tables: transfers more, but may paint light into flat skies (README, Quality)
    "lite-cells": NetConfig(
        channels=(16, 32, 64), residual_blocks=3, outer_kernel=5, head="affine", affine_cell=32, affine_bins=8
    ),
}


def get_preset(name: str) -> NetConfig:
    """Look up a preset by name; unknown names list the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}") from None

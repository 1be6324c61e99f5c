"""The presets: each one a network architecture and the schedule it was tuned with, together.

One place for every architecture and schedule number, including the constants of the output
heads. ``paper`` is Johnson et al.'s transformation network (which Yao et al. build on) with
conditional instance norm; ``lite`` was chosen by measurement on a 2-core CPU (see README,
"Numbers: paper or ours"). What a training run actually used is its
:class:`~photostyle.recipe.Recipe`, resolved from a preset and the user's overrides.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Literal, Mapping

__all__ = ["NetConfig", "Schedule", "Preset", "PRESETS", "get_preset", "preset_of"]

Head = Literal["rgb", "affine", "lut"]


@dataclass(frozen=True)
class NetConfig:
    """Architecture of a style network: everything a base's weights need to be rebuilt and to
    give the same output, the heads' constants included."""

    channels: tuple[int, int, int] = (32, 64, 128)  # full, 1/2 and 1/4 resolution widths
    residual_blocks: int = 5
    outer_kernel: int = 9  # kernel of the first and last convolutions
    # "rgb": the net paints pixels; "affine": it predicts colour transforms shared per cell;
    # "lut": it predicts colour transforms shared per colour over the whole photo
    head: Head = "rgb"
    affine_cell: int = 1  # affine head: side in pixels of the cells its colour maps are smoothed over
    affine_bins: int = 1  # affine head: brightness levels a cell keeps apart (1: plain cell averages)
    affine_level_floor: float = 0.05  # affine head: share of the whole cell every level also averages over
    lut_levels: tuple[int, int, int] = (8, 6, 6)  # lut head: CIE L, a and b levels of its colour table
    lut_chroma_range: float = 0.8  # lut head: a and b (Lab / 100) are tabulated over [-range, range]
    # lut head: every entry also holds this share of an average entry's weight of the whole
    # photo's mean maps, so a colour only a few pixels have follows the photo's overall transform
    lut_entry_floor: float = 0.4

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "NetConfig":
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "NetConfig":
        """From :func:`dataclasses.asdict` output that went through JSON (lists back to tuples).
        Fields added since a config was recorded take their defaults, which are the values the
        code used before the field existed; unknown fields are refused."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown architecture field(s) {unknown}: recorded by a newer photostyle?")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


@dataclass(frozen=True)
class Schedule:
    """How a network is trained: iterations, crops, photo sizes and learning rates."""

    iterations: int
    crop: int  # random-crop side in pixels
    train_side: int  # photos are downscaled so their long side is at most this
    colour_side: int  # long side of the whole photos the colour term compares
    learning_rate: float = 1e-3  # shared convolutions
    norm_learning_rate: float = 1e-2  # per-style (gamma, beta): few numbers that must carry a whole look

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")
        for name in ("crop", "train_side", "colour_side"):
            if getattr(self, name) < 16:
                raise ValueError(f"{name} must be >= 16 pixels, got {getattr(self, name)}")


@dataclass(frozen=True)
class Preset:
    """A named architecture with the schedule and colour-term weight it was tuned with."""

    net: NetConfig
    schedule: Schedule
    # a colour table cannot place colours by position, so it needs a firmer push
    colour_weight: float
    colour_crop_weight: float = 0.0  # the colour term on crops too (photostyle.losses.LossConfig)


_LITE_NET = NetConfig(channels=(16, 32, 64), residual_blocks=3, outer_kernel=5)
_LITE_SCHEDULE = Schedule(iterations=300, crop=128, train_side=384, colour_side=192)

PRESETS: dict[str, Preset] = {
    "paper": Preset(
        NetConfig(channels=(32, 64, 128), residual_blocks=5, outer_kernel=9, head="rgb"),
        Schedule(iterations=2000, crop=256, train_side=512, colour_side=256),
        colour_weight=10.0,
    ),
    # half lite-cells' iterations: with the colour term on crops it transfers as much to unseen
    # photos in 150 as in 300, and a pair trains in about 3 minutes on 2 cores (docs/quality.md)
    "lite": Preset(
        dataclasses.replace(_LITE_NET, head="lut", lut_levels=(8, 6, 6)),
        dataclasses.replace(_LITE_SCHEDULE, iterations=150),
        colour_weight=30.0,
        colour_crop_weight=1.0,
    ),
    # lite before colour tables: transfers more, but may paint light into flat skies (README, Quality)
    "lite-cells": Preset(
        dataclasses.replace(_LITE_NET, head="affine", affine_cell=32, affine_bins=8), _LITE_SCHEDULE, colour_weight=10.0
    ),
}


def get_preset(name: str) -> Preset:
    """Look up a preset by name; unknown names list the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}") from None


def preset_of(config: NetConfig) -> str | None:
    """The name of the preset whose architecture is ``config``, if any."""
    return next((name for name, preset in PRESETS.items() if preset.net == config), None)

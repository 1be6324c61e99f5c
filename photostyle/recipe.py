"""A style's recipe: the one record of everything that made it, resolved once from the user's config.

:class:`TrainConfig` is what a user asks for (``None`` fields: the preset's defaults);
:meth:`TrainConfig.resolve` turns it into a :class:`Recipe`, which names every number the
training and the trained network depend on: the architecture with its heads' constants, the
schedule, the losses and their colour term, the loss network's identity, the seed, the frozen
base of a new style, and :data:`ALGORITHM_VERSION`. Two runs with equal recipes on the same
photos train the same style; a catalog compares recipes, never loose settings, to decide whether
a style is already trained. A recipe is frozen and round-trips through JSON
(:meth:`Recipe.to_dict`, :meth:`Recipe.from_dict`).
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from photostyle.losses import LossConfig, default_loss_config
from photostyle.lossnet import LossNetIdentity, loss_net_identity
from photostyle.model import Base
from photostyle.presets import NetConfig, Schedule, get_preset, preset_of

__all__ = ["ALGORITHM_VERSION", "Recipe", "TrainConfig"]

ALGORITHM_VERSION = 3
"""Bump this whenever the code trains a different style from the same recipe and photos (a new
loss, an initialisation, a changed default): recipes then differ, and ``train`` retrains styles
made under the old version. tests/test_recipe.py holds each preset's default recipe digest per
version, so a default that changes without a bump fails there."""

_STYLE_ITERATION_FRACTION = 0.5  # the paper: a new style needs about half the iterations
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Recipe:
    """Everything that made a style (or a base), and nothing that did not (device, logging)."""

    algorithm_version: int
    preset: str  # where the defaults came from; ``net`` and ``schedule`` are what ran
    net: NetConfig
    schedule: Schedule
    loss: LossConfig
    loss_net: LossNetIdentity
    seed: int
    base: str | None = None  # a new style's frozen base: sha256 of its tensors; None: trained with its base

    def __post_init__(self) -> None:
        if self.base is not None and not _SHA256.fullmatch(self.base):
            raise ValueError(f"recipe base {self.base!r}: expected the sha256 of a base's tensors")

    @property
    def mode(self) -> str:
        """``"pair"``: a fresh base and two styles; ``"style"``: two new styles on a frozen base."""
        return "pair" if self.base is None else "style"

    def to_dict(self) -> dict[str, Any]:
        """The recipe as JSON values (tuples as lists): what a catalog stores and compares."""
        result: dict[str, Any] = json.loads(self.to_json())
        return result

    def to_json(self) -> str:
        """Canonical JSON (sorted keys): equal recipes give equal text."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "Recipe":
        """The recipe :meth:`to_dict` recorded; anything else raises ``ValueError`` saying why."""
        try:
            fields = dict(raw)
            unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(cls)})
            if unknown:
                raise ValueError(f"unknown field(s) {unknown}: recorded by a newer photostyle?")
            return cls(
                algorithm_version=int(fields["algorithm_version"]),
                preset=str(fields["preset"]),
                net=NetConfig.from_dict(fields["net"]),
                schedule=Schedule(**fields["schedule"]),
                loss=LossConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields["loss"].items()}),
                loss_net=LossNetIdentity(**fields["loss_net"]),
                seed=int(fields["seed"]),
                base=fields.get("base"),
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ValueError(f"not a photostyle recipe: {type(exc).__name__}: {exc}") from exc

    @classmethod
    def from_json(cls, text: str) -> "Recipe":
        return cls.from_dict(json.loads(text))


@dataclass(frozen=True)
class TrainConfig:
    """What a user asks for; every ``None`` takes the preset's default (see :meth:`resolve`)."""

    preset: str | None = None  # None: "lite"; for a new style, the base's own preset
    iterations: int | None = None  # None: the preset's (half of it for a new style)
    crop: int | None = None  # random-crop side in pixels
    train_side: int | None = None  # photos are downscaled so their long side is at most this
    colour_side: int | None = None  # long side of the whole photos the colour term compares
    learning_rate: float | None = None  # shared convolutions
    norm_learning_rate: float | None = None  # per-style (gamma, beta)
    seed: int = 0
    loss_net: str = "vgg19"
    loss_weights: str | Path | None = "imagenet"  # "imagenet", "random" or a local state-dict path
    loss: LossConfig | None = None  # None: default layers/weights for loss_net, the preset's colour weight
    device: str | None = None  # None: CUDA when available (not part of the recipe)
    log_every: int = 10  # iterations between loss-history rows (not part of the recipe)

    def resolve(self, *, base: Base | None = None) -> Recipe:
        """The recipe this config asks for: a fresh pair, or with ``base`` new styles on it.
        A weights file is read to hash it. Settings that cannot work raise ``ValueError``."""
        name = self.preset or _default_preset(base)
        preset = get_preset(name)
        if base is not None and preset.net != base.config:
            raise ValueError(f"config preset {name!r} does not match the base's architecture {base.config}")
        default = preset.schedule
        iterations = self.iterations
        if iterations is None:
            iterations = default.iterations if base is None else max(1, int(default.iterations * _STYLE_ITERATION_FRACTION))
        crop = default.crop if self.crop is None else self.crop
        schedule = Schedule(
            iterations=iterations,
            crop=crop,
            train_side=max(default.train_side, crop) if self.train_side is None else self.train_side,
            colour_side=default.colour_side if self.colour_side is None else self.colour_side,
            learning_rate=default.learning_rate if self.learning_rate is None else self.learning_rate,
            norm_learning_rate=default.norm_learning_rate if self.norm_learning_rate is None else self.norm_learning_rate,
        )
        loss = self.loss or dataclasses.replace(
            default_loss_config(self.loss_net), colour_weight=preset.colour_weight, colour_crop_weight=preset.colour_crop_weight
        )
        return Recipe(
            algorithm_version=ALGORITHM_VERSION,
            preset=name,
            net=preset.net,
            schedule=schedule,
            loss=loss,
            loss_net=loss_net_identity(self.loss_net, self.loss_weights),
            seed=self.seed,
            base=None if base is None else base.digest(),
        )


def _default_preset(base: Base | None) -> str:
    """``lite`` for a fresh pair; a new style's base's own preset, found by its architecture."""
    if base is None:
        return "lite"
    name = preset_of(base.config)
    if name is None:
        raise ValueError(f"base architecture {base.config} matches no preset")
    return name

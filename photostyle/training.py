"""Training from exactly two photos: both directions at once, or only a new style's norm parameters.

One iteration, with c and s random crops of the content and style photos, ->s the style photo's
look (slot 0) and ->c the content photo's look (slot 1):

    one mixed batch   [c, s, c, s] with styles [->s, ->c, ->c, ->s]  ->  cs, sc, cc, ss
    cycle batch       [cs, sc]     with styles [->c, ->s]            ->  csc, scs
    content   VGG(cs) ~ VGG(c),  VGG(sc) ~ VGG(s)
    style     Gram(VGG(cs)) ~ Gram(VGG(style photo)),  Gram(VGG(sc)) ~ Gram(VGG(content photo)),
              and the colours of the whole content photo ->s ~ the style photo's (and back):
              a crop need not hold all of a look's colours, a whole photo does
    cycle     csc ~ c,  scs ~ s
    self      cc ~ c,   ss ~ s
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from photostyle import device as devices
from photostyle.imageio import to_tensor
from photostyle.losses import (
    LossConfig,
    colour_directions,
    colour_loss,
    content_loss,
    cycle_loss,
    default_loss_config,
    gram,
    self_loss,
    sorted_projections,
    style_loss,
)
from photostyle.lossnet import LossNetwork, load_loss_network
from photostyle.model import Base, Style, build_net, identity_style, split_net, style_parameter_names
from photostyle.network import StyleNet
from photostyle.presets import PRESETS, get_preset

__all__ = ["Progress", "TrainConfig", "TrainReport", "StylePair", "train_pair", "train_style", "STYLE", "REVERSE"]

log = logging.getLogger(__name__)

STYLE, REVERSE = 0, 1  # slots: the style photo's look (->s) and the content photo's look (->c)

# Called after every iteration with (iterations done, iterations in all), so a caller can show
# progress; it must be cheap (throttle on the caller's side) and must not raise.
Progress = Callable[[int, int], None]

# Per-preset schedule defaults (see README, "Numbers: paper or ours"), and the colour term's weight
# each was tuned with: a colour table cannot place colours by position, so it needs a firmer push.
_LITE = {"iterations": 300, "crop": 128, "train_side": 384, "colour_side": 192}
_SCHEDULE = {
    "paper": {"iterations": 2000, "crop": 256, "train_side": 512, "colour_side": 256, "colour_weight": 10.0},
    "lite": {**_LITE, "colour_weight": 30.0},
    "lite-cells": {**_LITE, "colour_weight": 10.0},
}
_STYLE_ITERATION_FRACTION = 0.5  # the paper: a new style needs about half the iterations


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (recorded in the report and the catalog)."""

    preset: str = "lite"
    iterations: int | None = None  # None: the preset's default (half of it for train_style)
    crop: int | None = None  # random-crop side in pixels; None: the preset's default
    train_side: int | None = None  # photos are downscaled so their long side is at most this
    colour_side: int | None = None  # long side of the whole photos the colour term compares
    learning_rate: float = 1e-3  # shared convolutions
    norm_learning_rate: float = 1e-2  # per-style (gamma, beta): few numbers that must carry a whole look
    seed: int = 0
    loss_net: str = "vgg19"
    loss_weights: str | None = "imagenet"  # "imagenet", "random" or a local state-dict path
    loss: LossConfig | None = None  # None: default layers/weights for loss_net, the preset's colour weight
    device: str | None = None  # None: CUDA when available
    log_every: int = 10

    def resolved(self, *, style_only: bool = False) -> "TrainConfig":
        """A copy with every default filled in, so reports say exactly what ran."""
        get_preset(self.preset)
        sched = _SCHEDULE[self.preset]
        iterations = self.iterations
        if iterations is None:
            iterations = sched["iterations"]
            if style_only:
                iterations = max(1, int(iterations * _STYLE_ITERATION_FRACTION))
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        crop = self.crop or sched["crop"]
        if crop < 16:
            raise ValueError(f"crop must be >= 16 pixels, got {crop}")
        colour_side = self.colour_side or sched["colour_side"]
        if colour_side < 16:
            raise ValueError(f"colour_side must be >= 16 pixels, got {colour_side}")
        return dataclasses.replace(
            self,
            iterations=iterations,
            crop=crop,
            train_side=self.train_side or max(sched["train_side"], crop),
            colour_side=colour_side,
            loss=self.loss or dataclasses.replace(default_loss_config(self.loss_net), colour_weight=sched["colour_weight"]),
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TrainReport:
    """What a run did: losses over time, final losses, time, and the exact settings."""

    iterations: int
    seconds: float
    config: dict[str, Any]
    loss_network: dict[str, str]
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def final_losses(self) -> dict[str, float]:
        return {k: v for k, v in self.history[-1].items() if k != "iteration"} if self.history else {}


@dataclass(frozen=True)
class StylePair:
    """The result of training on two photos: one base and the two styles that share it."""

    base: Base
    style: Style  # the style photo's look: apply this to other photos
    reverse: Style  # the content photo's look
    report: TrainReport


def train_pair(
    content: Image.Image, style: Image.Image, config: TrainConfig | None = None, *, progress: Progress | None = None
) -> StylePair:
    """Train a fresh base and both styles from two photos."""
    cfg = (config or TrainConfig()).resolved()
    torch.manual_seed(cfg.seed)
    net = StyleNet(get_preset(cfg.preset), num_styles=2)
    return _train(net, content, style, cfg, trainable=list(net.parameters()), style_only=False, progress=progress)


def train_style(
    base: Base,
    content: Image.Image,
    style: Image.Image,
    config: TrainConfig | None = None,
    *,
    progress: Progress | None = None,
) -> StylePair:
    """Learn two new styles on a frozen ``base``: only norm (gamma, beta) parameters are trained.

    The returned pair carries ``base`` itself; its tensors are never modified.
    """
    cfg = (config or TrainConfig(preset=_preset_name(base))).resolved(style_only=True)
    if get_preset(cfg.preset) != base.config:
        raise ValueError(f"config preset {cfg.preset!r} does not match the base's architecture {base.config}")
    torch.manual_seed(cfg.seed)
    fresh = identity_style(base.config)
    net = build_net(base, [fresh, fresh])
    norms = _norm_parameters(net)
    for p in net.parameters():
        p.requires_grad_(False)
    for p in norms:
        p.requires_grad_(True)
    pair = _train(net, content, style, cfg, trainable=norms, style_only=True, progress=progress)
    return dataclasses.replace(pair, base=base)


def _norm_parameters(net: StyleNet) -> list[torch.nn.Parameter]:
    """The per-style (gamma, beta) tables, the only thing a style owns."""
    return [net.get_parameter(name) for name in style_parameter_names(net)]


def _start_from_colour_statistics(net: StyleNet, content: torch.Tensor, style: torch.Tensor) -> None:
    """Start each look's photo norm at its photo's colour mean and spread, so that training
    starts from a global colour transfer (Reinhard et al.) that is already self- and
    cycle-consistent, and learns the local part."""
    photo_norm = getattr(net.head, "photo_norm", None)
    if photo_norm is None:
        return
    with torch.no_grad():
        for slot, photo in ((STYLE, style), (REVERSE, content)):
            var, mean = torch.var_mean(photo.float(), dim=(0, 2, 3), correction=0)
            photo_norm.gamma[slot] = var.sqrt()
            photo_norm.beta[slot] = mean


def _preset_name(base: Base) -> str:
    for name, cfg in PRESETS.items():
        if cfg == base.config:
            return name
    raise ValueError(f"base architecture {base.config} matches no preset")


def _prepare(image: Image.Image, side: int, dev: torch.device) -> torch.Tensor:
    """RGB photo -> (1, 3, H, W) tensor with long side <= ``side`` (area-averaged downscale)."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    scale = side / max(image.size)
    if scale < 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BOX)
    return to_tensor(image).unsqueeze(0).to(dev)


def _random_crop(x: torch.Tensor, crop: int, gen: torch.Generator) -> torch.Tensor:
    h, w = x.shape[-2:]
    ch, cw = min(crop, h), min(crop, w)
    top = int(torch.randint(0, h - ch + 1, (1,), generator=gen))
    left = int(torch.randint(0, w - cw + 1, (1,), generator=gen))
    return x[..., top : top + ch, left : left + cw]


def _train(
    net: StyleNet,
    content: Image.Image,
    style: Image.Image,
    cfg: TrainConfig,
    *,
    trainable: list[torch.nn.Parameter],
    style_only: bool,
    progress: Progress | None,
) -> StylePair:
    dev = devices.resolve_device(cfg.device)
    fmt = devices.memory_format(dev, training=True)
    losses: LossConfig = cfg.loss  # type: ignore[assignment]  # filled by resolved()
    lossnet: LossNetwork = load_loss_network(cfg.loss_net, cfg.loss_weights, layers=losses.layers).to(dev)
    net = net.to(dev, memory_format=fmt).train()
    c_full = _prepare(content, cfg.train_side, dev)  # type: ignore[arg-type]
    s_full = _prepare(style, cfg.train_side, dev)  # type: ignore[arg-type]
    with torch.no_grad(), devices.autocast(dev):
        grams_s = {n: gram(f) for n, f in lossnet(s_full).items() if n in losses.style_layers}
        grams_c = {n: gram(f) for n, f in lossnet(c_full).items() if n in losses.style_layers}
    _start_from_colour_statistics(net, c_full, s_full)
    directions = colour_directions().to(dev)
    c_whole = _prepare(content, cfg.colour_side, dev).contiguous(memory_format=fmt)  # type: ignore[arg-type]
    s_whole = _prepare(style, cfg.colour_side, dev).contiguous(memory_format=fmt)  # type: ignore[arg-type]
    colours_s, colours_c = sorted_projections(s_full, directions), sorted_projections(c_full, directions)
    norms = {id(p) for p in _norm_parameters(net)}
    optimizer = torch.optim.Adam(
        [
            {"params": [p for p in trainable if id(p) not in norms], "lr": cfg.learning_rate},
            {"params": [p for p in trainable if id(p) in norms], "lr": cfg.norm_learning_rate},
        ]
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    styles_fwd = torch.tensor([STYLE, REVERSE, REVERSE, STYLE], device=dev)
    styles_cyc = torch.tensor([REVERSE, STYLE], device=dev)
    history: list[dict[str, float]] = []
    log.info("training %s (%s, %d iterations, crop %d) on %s", "style" if style_only else "pair", cfg.preset, cfg.iterations, cfg.crop, dev)
    start = time.perf_counter()
    for it in range(1, cfg.iterations + 1):  # type: ignore[operator]
        c = _random_crop(c_full, cfg.crop, gen)  # type: ignore[arg-type]
        s = _random_crop(s_full, cfg.crop, gen)  # type: ignore[arg-type]
        if c.shape != s.shape:  # photos smaller than the crop: bring both to a common size
            hw = (min(c.shape[-2], s.shape[-2]), min(c.shape[-1], s.shape[-1]))
            c, s = c[..., : hw[0], : hw[1]], s[..., : hw[0], : hw[1]]
        with devices.autocast(dev):
            batch = torch.cat([c, s, c, s]).contiguous(memory_format=fmt)
            cs, sc, cc, ss = net(batch, styles_fwd).chunk(4)
            csc, scs = net(torch.cat([cs, sc]), styles_cyc).chunk(2)
            feats = lossnet(torch.cat([cs, sc, c, s]))
            out = {n: f[:2] for n, f in feats.items()}
            ref = {n: f[2:] for n, f in feats.items()}
            terms = {
                "content": content_loss(out, ref, losses.content_layers),
                "style": style_loss({n: f[:1] for n, f in out.items()}, grams_s, losses.style_layers)
                + style_loss({n: f[1:] for n, f in out.items()}, grams_c, losses.style_layers),
                "colour": colour_loss(net(c_whole, STYLE), colours_s, directions)
                + colour_loss(net(s_whole, REVERSE), colours_c, directions),
                "cycle": cycle_loss(csc, c) + cycle_loss(scs, s),
                "self": self_loss(cc, c) + self_loss(ss, s),
            }
            weighted = {
                "content": losses.content_weight * terms["content"],
                "style": losses.style_weight * terms["style"],
                "colour": losses.colour_weight * terms["colour"],
                "cycle": losses.cycle_weight * terms["cycle"],
                "self": losses.self_weight * terms["self"],
            }
            total = sum(weighted.values())
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        if it % cfg.log_every == 0 or it == cfg.iterations:
            row = {"iteration": float(it), "total": total.item(), **{k: v.item() for k, v in weighted.items()}}
            history.append(row)
            log.debug("iteration %d: %s", it, row)
        if progress is not None:
            progress(it, cfg.iterations)  # type: ignore[arg-type]
    seconds = time.perf_counter() - start
    net = net.to("cpu", memory_format=torch.contiguous_format).eval()
    base, (style_look, content_look) = split_net(net)
    report = TrainReport(
        iterations=cfg.iterations,  # type: ignore[arg-type]
        seconds=seconds,
        config=cfg.to_dict(),
        loss_network=dict(lossnet.identity),
        history=history,
    )
    log.info("trained in %.1f s (%.2f it/s), final losses %s", seconds, cfg.iterations / seconds, report.final_losses)  # type: ignore[operator]
    return StylePair(base=base, style=style_look, reverse=content_look, report=report)

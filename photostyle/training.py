"""Training from exactly two photos: both directions at once, or only a new style's norm parameters.

One iteration, with c and s random crops of the content and style photos, ->s the style photo's
look (slot 0) and ->c the content photo's look (slot 1):

    one mixed batch   [c, s, c, s] with styles [->s, ->c, ->c, ->s]  ->  cs, sc, cc, ss
    cycle batch       [cs, sc]     with styles [->c, ->s]            ->  csc, scs
    content   VGG(cs) ~ VGG(c),  VGG(sc) ~ VGG(s)
    style     Gram(VGG(cs)) ~ Gram(VGG(style photo)),  Gram(VGG(sc)) ~ Gram(VGG(content photo)),
              and the colours of the whole content photo ->s ~ the style photo's (and back):
              a crop need not hold all of a look's colours, a whole photo does; with
              colour_crop_weight, also of a random part of each whole photo (colours the net
              was not fitted to, as on the photos a style is applied to); with extra content
              photos (a sample of the user's collection), also of one of them ->s, in turn
    cycle     csc ~ c,  scs ~ s
    self      cc ~ c,   ss ~ s
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from photostyle import device as devices
from photostyle.imageio import downscale, to_tensor
from photostyle.losses import (
    LossConfig,
    colour_directions,
    colour_loss,
    content_loss,
    cycle_loss,
    gram,
    self_loss,
    sorted_projections,
    style_loss,
)
from photostyle.lossnet import RANDOM, LossNetwork, load_loss_network
from photostyle.model import Base, Style, build_net, identity_style, split_net, style_parameter_names
from photostyle.network import StyleNet
from photostyle.recipe import Recipe, TrainConfig

__all__ = ["Progress", "TrainReport", "StylePair", "train_pair", "train_style", "STYLE", "REVERSE"]

log = logging.getLogger(__name__)

STYLE, REVERSE = 0, 1  # slots: the style photo's look (->s) and the content photo's look (->c)

# Called after every iteration with (iterations done, iterations in all), so a caller can show
# progress; it must be cheap (throttle on the caller's side) and must not raise.
Progress = Callable[[int, int], None]


@dataclass
class TrainReport:
    """What a run did: its recipe, losses over time, final losses and time."""

    recipe: Recipe
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def iterations(self) -> int:
        return self.recipe.schedule.iterations

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


@dataclass(frozen=True)
class _Run:
    """How to run a recipe here: where the loss network's weights are, the device, logging."""

    loss_weights: str | Path
    device: str | None
    log_every: int
    progress: Progress | None = None


def train_pair(
    content: Image.Image,
    style: Image.Image,
    config: TrainConfig | Recipe | None = None,
    *,
    extra_content: Sequence[Image.Image] = (),
    loss_weights: str | Path | None = None,
    device: str | None = None,
    progress: Progress | None = None,
) -> StylePair:
    """Train a fresh base and both styles from two photos.

    ``config``: a :class:`TrainConfig` (resolved here), or a :class:`Recipe` resolved elsewhere
    (a batch driver), used as is; then ``loss_weights`` is the local file of the recipe's loss
    network weights, when they are a file, and ``device`` where to train. ``extra_content``: more
    photos the style is for (a sample of the user's collection), whose colours it is also asked
    to move to the style photo's (``LossConfig.extra_content_weight``), seen with their long side
    at the schedule's ``colour_side``; the content photo's look does not see them. ``progress``
    is called after every iteration."""
    recipe, run = _plan(config or TrainConfig(), None, loss_weights, device, progress)
    if recipe.mode != "pair":
        raise ValueError(f"a recipe for new styles on base {recipe.base} cannot train a pair: use train_style")
    torch.manual_seed(recipe.seed)
    net = StyleNet(recipe.net, num_styles=2)
    return _train(net, content, style, extra_content, recipe, run, trainable=list(net.parameters()))


def train_style(
    base: Base,
    content: Image.Image,
    style: Image.Image,
    config: TrainConfig | Recipe | None = None,
    *,
    extra_content: Sequence[Image.Image] = (),
    loss_weights: str | Path | None = None,
    device: str | None = None,
    progress: Progress | None = None,
) -> StylePair:
    """Learn two new styles on a frozen ``base``: only norm (gamma, beta) parameters are trained.

    ``config`` and ``extra_content`` as for :func:`train_pair`; a recipe must name this base. The returned pair carries
    ``base`` itself; its tensors are never modified.
    """
    recipe, run = _plan(config or TrainConfig(), base, loss_weights, device, progress)
    if recipe.base != base.digest() or recipe.net != base.config:
        raise ValueError(f"the recipe is for base {recipe.base}, not this base ({base.digest()})")
    torch.manual_seed(recipe.seed)
    fresh = identity_style(base.config)
    net = build_net(base, [fresh, fresh])
    norms = _norm_parameters(net)
    for p in net.parameters():
        p.requires_grad_(False)
    for p in norms:
        p.requires_grad_(True)
    pair = _train(net, content, style, extra_content, recipe, run, trainable=norms)
    return dataclasses.replace(pair, base=base)


def _plan(
    config: TrainConfig | Recipe,
    base: Base | None,
    loss_weights: str | Path | None,
    device: str | None,
    progress: Progress | None,
) -> tuple[Recipe, _Run]:
    """The recipe to train and how to run it here."""
    if isinstance(config, TrainConfig):
        if loss_weights is not None or device is not None:
            raise ValueError("with a TrainConfig, give loss_weights and device in the config")
        weights = "imagenet" if config.loss_weights is None else config.loss_weights
        return config.resolve(base=base), _Run(weights, config.device, config.log_every, progress)
    identity = config.loss_net
    if loss_weights is None:
        if identity.weights == "file":
            raise ValueError(f"the recipe's loss network has weights file sha256 {identity.sha256}: pass loss_weights=PATH")
        loss_weights = RANDOM if identity.weights == RANDOM else "imagenet"
    return config, _Run(loss_weights, device, 10, progress)


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


def _prepare(image: Image.Image, side: int, dev: torch.device) -> torch.Tensor:
    """RGB photo -> (1, 3, H, W) tensor with long side <= ``side`` (area-averaged downscale)."""
    return to_tensor(downscale(image, side)).unsqueeze(0).to(dev)


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
    extra_content: Sequence[Image.Image],
    recipe: Recipe,
    run: _Run,
    *,
    trainable: list[torch.nn.Parameter],
) -> StylePair:
    dev = devices.resolve_device(run.device)
    fmt = devices.memory_format(dev, training=True)
    sched, losses = recipe.schedule, recipe.loss
    lossnet = _loss_network(recipe, run).to(dev)
    net = net.to(dev, memory_format=fmt).train()
    c_full = _prepare(content, sched.train_side, dev)
    s_full = _prepare(style, sched.train_side, dev)
    with torch.no_grad(), devices.autocast(dev):
        grams_s = {n: gram(f) for n, f in lossnet(s_full).items() if n in losses.style_layers}
        grams_c = {n: gram(f) for n, f in lossnet(c_full).items() if n in losses.style_layers}
    _start_from_colour_statistics(net, c_full, s_full)
    directions = colour_directions(losses.colour_directions).to(dev)
    c_whole = _prepare(content, sched.colour_side, dev).contiguous(memory_format=fmt)
    s_whole = _prepare(style, sched.colour_side, dev).contiguous(memory_format=fmt)
    extras = [_prepare(photo, sched.colour_side, dev).contiguous(memory_format=fmt) for photo in extra_content]
    colours_s, colours_c = sorted_projections(s_full, directions), sorted_projections(c_full, directions)
    norms = {id(p) for p in _norm_parameters(net)}
    optimizer = torch.optim.Adam(
        [
            {"params": [p for p in trainable if id(p) not in norms], "lr": sched.learning_rate},
            {"params": [p for p in trainable if id(p) in norms], "lr": sched.norm_learning_rate},
        ]
    )
    gen = torch.Generator().manual_seed(recipe.seed)
    styles_fwd = torch.tensor([STYLE, REVERSE, REVERSE, STYLE], device=dev)
    styles_cyc = torch.tensor([REVERSE, STYLE], device=dev)
    history: list[dict[str, float]] = []
    log.info("training %s (%s, %d iterations, crop %d) on %s", recipe.mode, recipe.preset, sched.iterations, sched.crop, dev)
    start = time.perf_counter()
    for it in range(1, sched.iterations + 1):
        c = _random_crop(c_full, sched.crop, gen)
        s = _random_crop(s_full, sched.crop, gen)
        if c.shape != s.shape:  # photos smaller than the crop: bring both to a common size
            hw = (min(c.shape[-2], s.shape[-2]), min(c.shape[-1], s.shape[-1]))
            c, s = c[..., : hw[0], : hw[1]], s[..., : hw[0], : hw[1]]
        with devices.autocast(dev):
            batch = torch.cat([c, s, c, s]).contiguous(memory_format=fmt)
            cs, sc, cc, ss = net(batch, styles_fwd).chunk(4)
            csc, scs = net(torch.cat([cs, sc]), styles_cyc).chunk(2)
            out = lossnet(torch.cat([cs, sc]))
            with torch.no_grad():  # the content targets: no gradient, and only as deep as the content layers
                ref = lossnet(torch.cat([c, s]), losses.content_layers)
            terms = {
                "content": content_loss(out, ref, losses.content_layers),
                "style": style_loss({n: f[:1] for n, f in out.items()}, grams_s, losses.style_layers)
                + style_loss({n: f[1:] for n, f in out.items()}, grams_c, losses.style_layers),
                "colour": colour_loss(net(c_whole, STYLE), colours_s, directions)
                + colour_loss(net(s_whole, REVERSE), colours_c, directions)
                + _crop_colour_loss(net, c_whole, s_whole, colours_s, colours_c, directions, losses, gen)
                + _extra_colour_loss(net, extras, it, colours_s, directions, losses),
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
        if it % run.log_every == 0 or it == sched.iterations:
            row = {"iteration": float(it), "total": total.item(), **{k: v.item() for k, v in weighted.items()}}
            history.append(row)
            log.debug("iteration %d: %s", it, row)
        if run.progress is not None:
            run.progress(it, sched.iterations)
    seconds = time.perf_counter() - start
    net = net.to("cpu", memory_format=torch.contiguous_format).eval()
    base, (style_look, content_look) = split_net(net)
    report = TrainReport(recipe=recipe, seconds=seconds, history=history)
    log.info("trained in %.1f s (%.2f it/s), final losses %s", seconds, sched.iterations / seconds, report.final_losses)
    return StylePair(base=base, style=style_look, reverse=content_look, report=report)


def _crop_colour_loss(
    net: StyleNet,
    c_whole: torch.Tensor,
    s_whole: torch.Tensor,
    colours_s: torch.Tensor,
    colours_c: torch.Tensor,
    directions: torch.Tensor,
    losses: LossConfig,
    gen: torch.Generator,
) -> torch.Tensor | float:
    """The colour term on a random crop of each whole photo, at its share of the colour weight:
    the whole look asked of a part of the photo, whose colours the net has not been fitted to."""
    if losses.colour_crop_weight == 0:
        return 0.0
    crops = (_scaled_crop(c_whole, losses.colour_crop_sides, gen), _scaled_crop(s_whole, losses.colour_crop_sides, gen))
    return losses.colour_crop_weight * (
        colour_loss(net(crops[0], STYLE), colours_s, directions) + colour_loss(net(crops[1], REVERSE), colours_c, directions)
    )


def _extra_colour_loss(
    net: StyleNet,
    extras: Sequence[torch.Tensor],
    iteration: int,
    colours_s: torch.Tensor,
    directions: torch.Tensor,
    losses: LossConfig,
) -> torch.Tensor | float:
    """The colour term ->s on this iteration's extra content photo (each in turn), at its share
    of the colour weight: the look asked of the photos it is for, not only of the content photo."""
    if not extras or losses.extra_content_weight == 0:
        return 0.0
    photo = extras[(iteration - 1) % len(extras)]
    return losses.extra_content_weight * colour_loss(net(photo, STYLE), colours_s, directions)


def _scaled_crop(x: torch.Tensor, sides: tuple[float, float], gen: torch.Generator) -> torch.Tensor:
    """A random crop whose sides are one random share in ``sides`` of ``x``'s (at least 16 px)."""
    low, high = sides
    share = low + (high - low) * float(torch.rand((), generator=gen))
    h, w = x.shape[-2:]
    ch, cw = min(h, max(16, int(h * share))), min(w, max(16, int(w * share)))
    top = int(torch.randint(0, h - ch + 1, (1,), generator=gen))
    left = int(torch.randint(0, w - cw + 1, (1,), generator=gen))
    return x[..., top : top + ch, left : left + cw]


def _loss_network(recipe: Recipe, run: _Run) -> LossNetwork:
    """The recipe's loss network, from where this run has its weights: weights that are not the
    ones the recipe names (a replaced file) are refused rather than trained with."""
    return load_loss_network(recipe.loss_net.arch, run.loss_weights, layers=recipe.loss.layers, expected=recipe.loss_net)

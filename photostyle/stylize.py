"""Stylising photos of any size with a trained base and style.

``render="full"`` runs the network on every pixel; ``render="guided"`` runs it with the long side at
most ``working_side`` and lifts the result to full resolution with local affine colour maps
(:mod:`photostyle.guided`), many times faster on large photos. ``render="lut"``, for colour-table
(``lut`` head) styles only, records the photo's statistics at ``working_side``, turns the style into
the 3-D LUT it is for that photo and applies it to the 8-bit photo (:mod:`photostyle.lut_render`):
no full-resolution float tensor at all. ``strength`` blends the result toward the photo itself: in
the LUT for ``lut`` (exact), on the pixels otherwise.

Photos up to ``max_untiled_pixels`` go through the network in one piece. Larger ones go in
overlapping tiles, each extended by a context margin that is cut away afterwards, and blended with
linear ramps in the overlaps. Instance normalisation is the catch: each tile alone would be
normalised with its *own* statistics and come out in a different tone (and the ``lut`` head's
colour table likewise). So the statistics of every such layer are first recorded on the whole
photo (downscaled to fit ``stats_pixels``, which defaults to ``max_untiled_pixels``) and every tile
uses those; the seams then vanish. Tiles
are also cut on multiples of the net's ``period`` with at least two periods of context, so the
affine head averages its colour maps over the same cells as on the whole photo.
"""

from __future__ import annotations

import logging
from typing import Iterator

import torch
import torch.nn.functional as F
from PIL import Image

from photostyle import device as devices
from photostyle import lut_render
from photostyle.guided import guided_upsample
from photostyle.imageio import to_image, to_tensor
from photostyle.model import Base, Style, build_net
from photostyle.norm import Statistics, shared_statistics
from photostyle.presets import NetConfig

__all__ = ["Stylizer", "stylize", "RENDERS", "DEFAULT_WORKING_SIDES", "default_render", "default_working_side", "check_render"]

RENDERS = ("full", "guided", "lut")

log = logging.getLogger(__name__)

# The long side the net sees, per render (docs/quality.md and docs/performance.md): guided at 512
# is as good as at 1024 on a 7 MP photo and twice as fast; lut's statistics at 256 score as well
# as at 512 against the full render on the ten dev styles, in a third of the time (0.08 s).
DEFAULT_WORKING_SIDES = {"guided": 512, "lut": 256}
DEFAULT_MAX_UNTILED_PIXELS = 4_194_304  # 2048 x 2048: a few GB of activations for the paper net


def default_render(config: NetConfig) -> str:
    """The render a style gets unless one is asked for: ``lut`` for colour-table styles, else
    ``guided`` (measured, README, Performance)."""
    return "lut" if config.head == "lut" else "guided"


def default_working_side(render: str) -> int:
    """The long side the net sees with ``render`` unless another is asked for (``full``: unused)."""
    return DEFAULT_WORKING_SIDES.get(render, DEFAULT_WORKING_SIDES["guided"])


def check_render(config: NetConfig, render: str | None) -> str:
    """``render``, or the style's default when None; a ValueError names an unknown render, and
    ``lut`` for a style whose result is not a function of colour alone."""
    if render is None:
        return default_render(config)
    if render not in RENDERS:
        raise ValueError(f"unknown render {render!r}; choose one of {', '.join(RENDERS)}")
    if render == "lut" and config.head != "lut":
        raise ValueError(
            f"render 'lut' needs a colour-table style (a base with the 'lut' head, preset lite); this style's base "
            f"has the {config.head!r} head, whose result is not a function of colour alone: use 'guided' or 'full'"
        )
    return render


class Stylizer:
    """One style, loaded once on a device; call it on photos (PIL) or tensors of any size."""

    def __init__(
        self,
        base: Base,
        style: Style,
        *,
        device: str | torch.device | None = None,
        render: str | None = "full",
        working_side: int | None = None,
        max_untiled_pixels: int = DEFAULT_MAX_UNTILED_PIXELS,
        stats_pixels: int | None = None,
        tile_size: int = 1024,
        tile_overlap: int = 64,
        tile_margin: int = 32,
        lut_size: int = lut_render.DEFAULT_LUT_SIZE,
        strength: float = 1.0,
    ) -> None:
        render = check_render(base.config, render)
        working_side = default_working_side(render) if working_side is None else working_side
        if working_side < 64:
            raise ValueError(f"working_side must be >= 64 pixels, got {working_side}")
        if tile_overlap < 0 or tile_margin < 0 or tile_size <= tile_overlap:
            raise ValueError(f"bad tiling: size {tile_size}, overlap {tile_overlap}, margin {tile_margin}")
        self.device = devices.resolve_device(device)
        self._format = devices.memory_format(self.device)
        self.net = build_net(base, [style]).to(self.device, memory_format=self._format).eval()
        self.render, self.working_side = render, working_side
        self.lut_size, self.strength = lut_render.check_size(lut_size), lut_render.check_strength(strength)
        self.max_untiled_pixels = max_untiled_pixels
        self.stats_pixels = stats_pixels or max_untiled_pixels
        self.tile_size, self.tile_overlap, self.tile_margin = tile_size, tile_overlap, tile_margin

    def __call__(self, image: Image.Image) -> Image.Image:
        """Stylise an RGB photo; the result has the same size."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        if self.render == "lut":
            return lut_render.apply_table(image, lut_render.toward_identity(self.colour_table(image), self.strength))
        return to_image(self.tensor(to_tensor(image).unsqueeze(0))[0])

    def colour_table(self, image: Image.Image) -> torch.Tensor:
        """The style as a 3-D LUT for this photo (``lut_size`` ** 3 colours, strength 1); see
        :mod:`photostyle.lut_render`."""
        return lut_render.colour_table(self.net, self.photo_statistics(image), self.lut_size)

    def working_copy(self, image: Image.Image) -> Image.Image:
        """The RGB ``image`` downscaled (an 8-bit box filter) to ``working_side`` and
        ``stats_pixels`` (itself when it is no larger): what the net sees with ``render="lut"``."""
        scale = min(1.0, self.working_side / max(image.size), (self.stats_pixels / (image.width * image.height)) ** 0.5)
        if scale == 1:
            return image
        return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BOX)

    @torch.inference_mode()
    def photo_statistics(self, image: Image.Image) -> list[Statistics]:
        """Every whole-photo layer's statistics, recorded on the :meth:`working_copy` of the RGB
        ``image``: what ``render="lut"`` replays."""
        with shared_statistics(self.net) as stats:
            self._run(to_tensor(self.working_copy(image)).unsqueeze(0).to(self.device))
        return stats

    @torch.inference_mode()
    def tensor(self, x: torch.Tensor) -> torch.Tensor:
        """Stylise ``(1, 3, H, W)`` in [0, 1]; returns a CPU float tensor of the same shape, clamped.
        With ``render="lut"`` the photo goes through 8 bits (as every photo read from a file is)."""
        if self.render == "lut":
            return to_tensor(self(to_image(x))).unsqueeze(0)
        x = x.to(self.device)
        h, w = x.shape[-2:]
        scale = self.working_side / max(h, w)
        if self.render == "guided" and scale < 1:
            small = F.interpolate(x, size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="area")
            out = guided_upsample(small, self._any_size(small), x)
        else:
            out = self._any_size(x)
        out = out.float().clamp_(0, 1)
        if self.strength != 1.0:  # the result blended with the photo, as lut_render.toward_identity
            out = torch.lerp(x.float(), out, self.strength)
        return out.cpu()

    def _any_size(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return self._run(x) if h * w <= self.max_untiled_pixels else self._tiled(x)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        with devices.autocast(self.device):
            return self.net(x.contiguous(memory_format=self._format), 0).float()

    def _tiled(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        scale = min(1.0, (self.stats_pixels / (h * w)) ** 0.5)
        small = x if scale == 1.0 else F.interpolate(x, size=(max(1, int(h * scale)), max(1, int(w * scale))), mode="area")
        with shared_statistics(self.net) as stats:
            self._run(small)
        out = torch.zeros((1, 3, h, w), device=self.device)
        weight = torch.zeros((1, 1, h, w), device=self.device)
        period = self.net.period
        m = max(self.tile_margin, 2 * period)
        with shared_statistics(self.net, stats):
            for top, left, th, tw in _tiles(h, w, self.tile_size, self.tile_overlap):
                t0, l0 = max(0, top - m) // period * period, max(0, left - m) // period * period
                t1, l1 = min(h, top + th + m), min(w, left + tw + m)
                tile = self._run(x[..., t0:t1, l0:l1])[..., top - t0 : top - t0 + th, left - l0 : left - l0 + tw]
                ramp = _ramp(th, tw, top, left, h, w, self.tile_overlap, x.device)
                out[..., top : top + th, left : left + tw] += tile * ramp
                weight[..., top : top + th, left : left + tw] += ramp
        log.debug("stylised %dx%d in tiles of %d", w, h, self.tile_size)
        return out / weight


def _tiles(h: int, w: int, size: int, overlap: int) -> Iterator[tuple[int, int, int, int]]:
    """(top, left, height, width) of tiles covering an h x w image, overlapping by ``overlap``."""
    def starts(n: int) -> list[int]:
        if n <= size:
            return [0]
        step = size - overlap
        pos = list(range(0, n - size, step))
        return pos + [n - size]

    for top in starts(h):
        for left in starts(w):
            yield top, left, min(size, h), min(size, w)


def _ramp(th: int, tw: int, top: int, left: int, h: int, w: int, overlap: int, device: torch.device) -> torch.Tensor:
    """Blend weights: rising linearly over ``overlap`` pixels on edges shared with other tiles."""
    def axis(n: int, start: int, total: int) -> torch.Tensor:
        r = torch.ones(n, device=device)
        if overlap > 0:
            ramp = (torch.arange(overlap, device=device, dtype=torch.float32) + 1) / (overlap + 1)
            k = min(overlap, n)
            if start > 0:
                r[:k] = torch.minimum(r[:k], ramp[:k])
            if start + n < total:
                r[n - k :] = torch.minimum(r[n - k :], ramp[:k].flip(0))
        return r

    return (axis(th, top, h)[:, None] * axis(tw, left, w)[None, :])[None, None]


def stylize(
    base: Base, style: Style, image: Image.Image, *, device: str | torch.device | None = None, render: str = "full"
) -> Image.Image:
    """Stylise one photo (convenience for notebooks; build a :class:`Stylizer` to reuse the model)."""
    return Stylizer(base, style, device=device, render=render)(image)

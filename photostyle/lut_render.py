"""Colour-table styles rendered as what they are: a 3-D LUT applied to the 8-bit photo.

For a style on the ``lut`` head (:class:`photostyle.network.LUTHead`) the net's result at a pixel
is, once the photo's whole-photo statistics are fixed, a function of that pixel's colour alone:
``photo_norm`` is a per-channel affine map with the photo's mean and spread, and the colour maps
are read from the photo's colour table at the pixel's own Lab colour. So the statistics are
recorded on the photo at the working side (:func:`photostyle.norm.shared_statistics`), the net
is run with them replayed on an RGB grid of ``size``\\ :sup:`3` colours (:func:`colour_table`),
and that table is applied to the full-resolution 8-bit photo by Pillow's trilinear
:class:`PIL.ImageFilter.Color3DLUT` (C, 8-bit in and out): no full-resolution float tensor is
ever made. The only approximation is trilinear interpolation between grid colours (README,
Performance, measures it against the net on every pixel with the same statistics).

Tables are ``(size ** 3, 3)`` float32 in [0, 1], red index fastest, then green, then blue: the
order of Pillow's ``Color3DLUT`` and of the ``.cube`` format (:mod:`photostyle.cube`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageFilter
from torch import nn

from photostyle.norm import Statistics, shared_statistics

__all__ = [
    "DEFAULT_LUT_SIZE",
    "MAX_LUT_SIZE",
    "MIN_LUT_SIZE",
    "apply_table",
    "check_size",
    "check_strength",
    "colour_table",
    "fit_table",
    "identity_table",
    "pixel_weights",
    "toward_identity",
]

DEFAULT_LUT_SIZE = 33  # grid colours per channel: trained styles within 0.1/255 of the net on average (docs/performance.md)
MIN_LUT_SIZE, MAX_LUT_SIZE = 2, 65  # Pillow's Color3DLUT limits
EMPTY_CELL_WEIGHT = 0.01  # fit_table: share of an average grid colour's weight that every colour
# also gives to the plain mean of the photos' own tables, so colours no photo has follow the net


def check_size(size: int) -> int:
    """A LUT size Pillow can apply, or a ValueError naming it."""
    if isinstance(size, bool) or not isinstance(size, int) or not MIN_LUT_SIZE <= size <= MAX_LUT_SIZE:
        raise ValueError(f"LUT size must be a whole number from {MIN_LUT_SIZE} to {MAX_LUT_SIZE}, got {size!r}")
    return size


def check_strength(strength: float) -> float:
    """A strength in [0, 1] (NaN refused too), or a ValueError naming it."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be a number from 0 to 1, got {strength!r}")
    return float(strength)


def identity_table(size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The grid colours themselves: ``(size ** 3, 3)``, red index fastest."""
    levels = torch.linspace(0, 1, check_size(size), device=device)
    blue, green, red = torch.meshgrid(levels, levels, levels, indexing="ij")
    return torch.stack([red, green, blue], dim=-1).reshape(-1, 3)


def colour_table(net: nn.Module, statistics: list[Statistics], size: int, *, style: int = 0) -> torch.Tensor:
    """The net's colour function for the photo whose ``statistics`` were recorded: the net run,
    with them replayed, on every grid colour (a ``size ** 2`` x ``size`` image, one colour per
    pixel; with the statistics fixed no pixel depends on its neighbours). Float32 whatever the
    device's autocast: the table is small and its errors reach every pixel. Clipped only to the
    range Pillow's table holds, not to [0, 1]: Pillow clips each pixel after interpolating, as the
    net's result is clipped per pixel (measured no better or worse than clipping the table)."""
    device = next(net.parameters()).device
    grid = identity_table(size, device)
    image = grid.T.reshape(1, 3, size * size, size)  # row-major: column = red, row = green + size * blue
    with torch.inference_mode(), shared_statistics(net, statistics):
        out = net(image, torch.tensor([style], device=device))
    return out.float().clamp(-1, 2).reshape(3, -1).T.contiguous().cpu()


def toward_identity(table: torch.Tensor, strength: float) -> torch.Tensor:
    """``table`` blended toward the identity: 0 leaves every colour as it is, 1 is the table.
    The blend is of the result (clipped to [0, 1]) with the photo, as on pixels; it is exact at
    every grid colour, and trilinear interpolation is linear in the table."""
    strength = check_strength(strength)
    if strength == 1.0:
        return table
    return torch.lerp(identity_table(_size_of(table)), table.float().clamp(0, 1), strength)


def apply_table(image: Image.Image, table: torch.Tensor) -> Image.Image:
    """Apply a ``(size ** 3, 3)`` table to an 8-bit RGB photo (trilinear, in Pillow's C code)."""
    if image.mode != "RGB":
        raise ValueError(f"image mode must be RGB, got {image.mode!r}")
    size = _size_of(table)
    flat = np.ascontiguousarray(table.detach().to("cpu", torch.float32).numpy()).reshape(-1)
    return image.filter(ImageFilter.Color3DLUT(size, flat, channels=3))


def pixel_weights(image: Image.Image, size: int) -> torch.Tensor:
    """How much of ``image`` falls on each grid colour: every pixel's trilinear weights summed,
    divided by the pixel count (``(size ** 3,)``, sums to 1). Call it on the working-side photo."""
    rgb = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).reshape(-1, 3).copy())
    position = rgb.double() * ((size - 1) / 255)
    lower = position.floor().clamp(max=size - 2)
    upper_share = position - lower
    lower = lower.long()
    weights = torch.zeros(size**3, dtype=torch.float64)
    for corner in torch.cartesian_prod(*[torch.tensor([0, 1])] * 3):
        index = lower + corner
        flat = index[:, 0] + size * (index[:, 1] + size * index[:, 2])
        weight = torch.where(corner.bool(), upper_share, 1 - upper_share).prod(dim=1)
        weights.index_add_(0, flat, weight)
    return (weights / rgb.shape[0]).float()


def fit_table(tables: Sequence[torch.Tensor], weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """One table for several photos' own tables: at every grid colour, their mean weighted by how
    much of each photo falls there (:func:`pixel_weights`), which is the least-squares fit to
    their colour functions over those photos' pixels. Every colour also gives
    ``EMPTY_CELL_WEIGHT`` of an average colour's weight to the plain mean of the tables, so a
    colour no photo has gets the net's own prediction for it, not nothing."""
    if not tables or len(tables) != len(weights):
        raise ValueError(f"fit_table needs one weight per table, got {len(tables)} tables and {len(weights)} weights")
    stacked = torch.stack([t.float() for t in tables])  # (photos, entries, 3)
    hits = torch.stack([w.float() for w in weights])[..., None]  # (photos, entries, 1)
    floor = EMPTY_CELL_WEIGHT / stacked.shape[1]
    fitted = ((hits * stacked).sum(0) + floor * stacked.mean(0)) / (hits.sum(0) + floor)
    return fitted.clamp(0, 1)


def _size_of(table: torch.Tensor) -> int:
    """The grid size of a ``(size ** 3, 3)`` table, or a ValueError saying what is wrong."""
    if table.dim() != 2 or table.shape[1] != 3:
        raise ValueError(f"a colour table has shape (size ** 3, 3), got {tuple(table.shape)}")
    size = round(table.shape[0] ** (1 / 3))
    if size**3 != table.shape[0]:
        raise ValueError(f"a colour table has size ** 3 rows, got {table.shape[0]}")
    return check_size(size)

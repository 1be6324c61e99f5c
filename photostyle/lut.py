"""A colour lookup table that shares the affine head's colour maps among pixels of one colour.

The maps the head predicts per pixel are averaged over the whole photo among pixels of similar
CIE Lab colour, and each pixel reads back the average of its own colour. The result is a function
of colour alone, like a colourist's 3-D LUT: two pixels of the same colour get the same recolouring
wherever they are. So a flat sky cannot get a patch of the style's lights painted into part of it,
which per-cell maps (:func:`photostyle.network.edge_aware_mean`) allowed (see README, Quality).

Splat: each pixel adds its maps to the 8 table entries around its colour with trilinear (tent)
weights. Slice: each pixel reads the table trilinearly at its colour (gathering the same 8
entries with the same weights), normalised by the weight read the same way. The table is a
whole-photo statistic: tiled rendering records it once on the whole photo and replays it on every
tile (:func:`photostyle.norm.shared_statistics`).
"""

from __future__ import annotations

import itertools

import torch

from photostyle.colour import rgb_to_lab
from photostyle.norm import WholePhotoStatistics

__all__ = ["ColourLUT"]

_CHUNK = 65536  # pixels per pass: each pass's temporaries stay in cache (3-4x faster at 1 MP on CPU)


class ColourLUT(WholePhotoStatistics):
    """Average ``(B, C, H, W)`` maps per colour of ``image`` over the whole photo.

    ``chroma_range``: a and b (Lab / 100) are tabulated over [-range, range]; beyond, the edge
    entries. ``entry_floor``: every entry also holds this share of an average entry's weight of
    the whole photo's mean maps, so a colour only a few pixels have follows the photo's overall
    transform. (Both are :class:`~photostyle.presets.NetConfig` fields.)
    """

    def __init__(self, levels: tuple[int, int, int], *, chroma_range: float, entry_floor: float) -> None:
        super().__init__()
        if len(levels) != 3 or min(levels) < 2:
            raise ValueError(f"a colour table needs at least 2 levels of L, a and b each, got {levels}")
        if chroma_range <= 0 or entry_floor < 0:
            raise ValueError(f"a colour table needs chroma_range > 0 and entry_floor >= 0, got {chroma_range}, {entry_floor}")
        self.levels = tuple(levels)
        self.chroma_range, self.entry_floor = chroma_range, entry_floor

    def forward(self, maps: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        b, c, h, w = maps.shape
        where = _table_coordinates(image, self.chroma_range).reshape(b, 3, h * w)
        weight = maps.new_ones(b, 1, h, w, dtype=torch.float32)  # carried as a last channel
        values = torch.cat([maps.float(), weight], dim=1).reshape(b, c + 1, h * w)
        chunks = [
            (_corners(where[..., start : start + _CHUNK], self.levels), values[..., start : start + _CHUNK])
            for start in range(0, h * w, _CHUNK)
        ]
        (table,) = self._statistics(lambda: (_splat(chunks, self.levels, self.entry_floor),), maps.device)
        sliced = torch.cat([_slice(table, corners) for corners, _ in chunks], dim=2).view(b, c + 1, h, w)
        return (sliced[:, :c] / sliced[:, c:].clamp_min(1e-8)).to(maps.dtype)


Corners = list[tuple[torch.Tensor, torch.Tensor]]  # (flat entry index, weight) per corner, each (B, N)


def _table_coordinates(image: torch.Tensor, chroma_range: float) -> torch.Tensor:
    """Each pixel's colour as (L, a, b) in [0, 1]: ``(B, 3, H, W)``, float32."""
    lab = rgb_to_lab(image)
    chroma = lab[:, 1:] / (2 * chroma_range) + 0.5
    return torch.cat([lab[:, :1], chroma], dim=1).clamp(0, 1)


def _corners(where: torch.Tensor, levels: tuple[int, ...]) -> Corners:
    """For each of the 8 table entries around the colour of every pixel in ``where`` ``(B, 3, N)``:
    the entry's flat index and the pixel's trilinear weight for it, both ``(B, N)``. Splat and
    slice share them."""
    size = torch.tensor(levels, device=where.device).view(1, 3, 1)
    position = where * (size - 1)
    lower = torch.minimum(position.floor(), (size - 2).to(position.dtype))
    upper_share = position - lower
    lower = lower.long()
    corners = []
    for corner in itertools.product((0, 1), repeat=3):
        step = torch.tensor(corner, device=where.device).view(1, 3, 1)
        index = lower + step
        flat = (index[:, 0] * levels[1] + index[:, 1]) * levels[2] + index[:, 2]
        corners.append((flat, torch.where(step.bool(), upper_share, 1 - upper_share).prod(dim=1)))
    return corners


def _splat(chunks: list[tuple[Corners, torch.Tensor]], levels: tuple[int, ...], entry_floor: float) -> torch.Tensor:
    """The table ``(B, C + 1, entries)`` from every chunk's (corners, values ``(B, C + 1, n)``):
    tent-weighted mean values per entry, the last channel (values' last, all ones) the weight."""
    b, c1, _ = chunks[0][1].shape
    entries = levels[0] * levels[1] * levels[2]
    table = chunks[0][1].new_zeros(b, c1, entries)
    for corners, values in chunks:
        for flat, weight in corners:
            table = table.scatter_add(2, flat[:, None].expand(-1, c1, -1), values * weight[:, None])
    table = table / sum(values.shape[2] for _, values in chunks)
    return table + entry_floor / entries * table.sum(dim=2, keepdim=True)


def _slice(table: torch.Tensor, corners: Corners) -> torch.Tensor:
    """Read ``table`` trilinearly at the colours the corners were made for: ``(B, C + 1, N)``."""
    c1 = table.shape[1]
    return sum(torch.gather(table, 2, flat[:, None].expand(-1, c1, -1)) * weight[:, None] for flat, weight in corners)

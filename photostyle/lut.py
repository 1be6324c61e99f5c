"""How the affine heads share their per-pixel colour maps: a colour table, or a bilateral grid.

:class:`ColourLUT` (the ``lut`` head) shares the maps among pixels of one colour over the whole
photo; :func:`edge_aware_mean` (the ``affine`` head, ``lite-cells``) among pixels of similar
brightness within a cell.

The maps the head predicts per pixel are averaged over the whole photo among pixels of similar
CIE Lab colour, and each pixel reads back the average of its own colour. The result is a function
of colour alone, like a colourist's 3-D LUT: two pixels of the same colour get the same recolouring
wherever they are. So a flat sky cannot get a patch of the style's lights painted into part of it,
which per-cell maps (:func:`edge_aware_mean`) allowed (see README, Quality).

Splat: each pixel adds its maps to the 8 table entries around its colour with trilinear (tent)
weights. Slice: each pixel reads the table trilinearly at its colour (gathering the same 8
entries with the same weights), normalised by the weight read the same way. The table is a
whole-photo statistic: tiled rendering records it once on the whole photo and replays it on every
tile (:func:`photostyle.norm.shared_statistics`).
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from photostyle.colour import rgb_to_lab
from photostyle.norm import WholePhotoStatistics

__all__ = ["ColourLUT", "edge_aware_mean"]

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


def edge_aware_mean(maps: torch.Tensor, guide: torch.Tensor, *, cell: int, bins: int, level_floor: float) -> torch.Tensor:
    """Average ``maps`` over ``cell`` px cells among pixels of similar ``guide`` (a bilateral grid).

    Splat: each pixel adds its values to the two nearest of ``bins`` guide levels of its cell,
    with tent weights, and the cells are averaged. Slice: each pixel reads the grid at its own
    position and guide level (trilinear). Its result, normalised by the weight read the same way,
    is a smooth spatial average over pixels whose guide lies within about 2 / (bins - 1) of its
    own: across a strong brightness edge almost nothing is shared. Every level also holds
    ``level_floor`` of the whole cell's average, so a level only a few pixels fall in (a
    star, a catchlight) follows its surroundings instead of those pixels' own transforms.
    ``bins=1`` is plain cell averaging.
    In float32 whatever the autocast dtype: a cell sums up to ``cell``^2 pixels.
    """
    c = maps.shape[1]
    level = guide.float().clamp(0, 1) * (bins - 1)  # each pixel's fractional level
    values = torch.cat([maps.float(), torch.ones_like(level)], dim=1)  # the last channel carries weight
    sliced = _grid_slice(_grid_splat(values, level, cell, bins, level_floor), level, bins)
    return (sliced[:, :c] / sliced[:, c:].clamp_min(1e-8)).to(maps.dtype)


def _grid_splat(values: torch.Tensor, level: torch.Tensor, cell: int, bins: int, level_floor: float) -> torch.Tensor:
    """Per-cell, per-level averages ``(B, C, bins, cells high, cells wide)`` of tent-weighted values."""
    b, c, h, w = values.shape
    grid_h, grid_w = -(-h // cell), -(-w // cell)
    cells = grid_h * grid_w
    lower = level.floor().clamp(max=max(bins - 2, 0))
    upper_share = (level - lower).view(b, 1, h * w)  # 0 when bins == 1
    rows = torch.arange(h, device=values.device) // cell
    cols = torch.arange(w, device=values.device) // cell
    cell_of_pixel = (rows[:, None] * grid_w + cols).view(1, 1, h * w)
    index = (lower.long().view(b, 1, h * w) * cells + cell_of_pixel).expand(-1, c, -1)
    flat = values.reshape(b, c, h * w)
    grid = values.new_zeros(b, c, (bins + 1) * cells)  # a spare level keeps bins == 1 in range
    grid = grid.scatter_add(2, index, flat * (1 - upper_share)).scatter_add(2, index + cells, flat * upper_share)
    grid = grid.view(b, c, bins + 1, grid_h, grid_w)[:, :, :bins] / _pixels_per_cell(h, w, cell, values)
    return grid + level_floor * grid.sum(dim=2, keepdim=True)


def _grid_slice(grid: torch.Tensor, level: torch.Tensor, bins: int) -> torch.Tensor:
    """Read ``grid`` trilinearly at every pixel's own position and level: ``(B, C, H, W)``."""
    b, _, h, w = level.shape
    ys = ((torch.arange(h, device=level.device, dtype=level.dtype) + 0.5) * (2 / h) - 1).view(1, h, 1)
    xs = ((torch.arange(w, device=level.device, dtype=level.dtype) + 0.5) * (2 / w) - 1).view(1, 1, w)
    zs = (level[:, 0] + 0.5) * (2 / bins) - 1
    where = torch.stack([xs.expand(b, h, w), ys.expand(b, h, w), zs], dim=-1)[:, None]  # grid_sample's xyz
    return F.grid_sample(grid, where, mode="bilinear", padding_mode="border", align_corners=False)[:, :, 0]


def _pixels_per_cell(h: int, w: int, cell: int, like: torch.Tensor) -> torch.Tensor:
    """How many pixels each cell holds (the last row and column of cells may be partial)."""
    def counts(n: int) -> torch.Tensor:
        starts = torch.arange(0, n, cell, device=like.device, dtype=like.dtype)
        return (n - starts).clamp(max=cell)

    return counts(h)[:, None] * counts(w)[None, :]

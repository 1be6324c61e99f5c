"""Contact sheets: rows of captioned image cells in one picture, so that a person can judge
results by looking at them side by side (``preview``: input | output; ``eval``: content |
style | ours | baselines).

Cells are scaled to one height so rows compare at the same scale, and the cells of a column
share its width so that columns line up from row to row. Pillow only.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

__all__ = ["Cell", "fit", "render"]

Cell = tuple[Image.Image, str]
"""An image and its caption (``\\n`` separates caption lines)."""

_ELLIPSIS = "…"


def fit(image: Image.Image, cell_height: int, max_width: int | None = None) -> Image.Image:
    """``image`` as RGB, scaled (up or down) to ``cell_height`` or, for panoramas, to
    ``max_width`` (default: twice the height), aspect ratio kept: every cell at one scale.

    ``render`` calls it on every cell; call it early yourself to drop full-size photos as soon
    as they are decoded (fitting twice changes nothing)."""
    max_width = max_width or 2 * cell_height
    width, height = image.size
    scale = min(cell_height / height, max_width / width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size != image.size:
        image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)
    return image if image.mode == "RGB" else image.convert("RGB")


def render(
    rows: Sequence[Sequence[Cell]],
    *,
    cell_height: int = 256,
    max_cell_width: int | None = None,
    gap: int = 8,
    font_size: int = 14,
    background: tuple[int, int, int] = (255, 255, 255),
    text_colour: tuple[int, int, int] = (32, 32, 32),
) -> Image.Image:
    """One RGB image of ``rows``: each cell fitted (see :func:`fit`) and centred in its column,
    its caption below it, shortened in the middle (``…``) to the column's width.

    Rows may have different numbers of cells; a column is as wide as its widest cell."""
    if not rows or not any(rows):
        raise ValueError("a contact sheet needs at least one cell")
    if cell_height < 1 or gap < 0:
        raise ValueError(f"cell_height must be positive and gap not negative, got {cell_height} and {gap}")
    fitted = [[(fit(image, cell_height, max_cell_width), caption) for image, caption in row] for row in rows]
    n_columns = max(len(row) for row in fitted)
    widths = [max(row[c][0].width for row in fitted if c < len(row)) for c in range(n_columns)]
    font = _font(font_size)
    line_height = _line_height(font)
    caption_lines = [max((len(caption.splitlines()) for _, caption in row), default=0) for row in fitted]
    row_heights = [cell_height + (gap // 2 + lines * line_height if lines else 0) for lines in caption_lines]

    size = (sum(widths) + gap * (n_columns + 1), sum(row_heights) + gap * (len(rows) + 1))
    sheet = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(sheet)
    y = gap
    for row, row_height in zip(fitted, row_heights):
        x = gap
        for (image, caption), width in zip(row, widths):
            sheet.paste(image, (x + (width - image.width) // 2, y + (cell_height - image.height) // 2))
            text_y = y + cell_height + gap // 2
            for line in caption.splitlines():
                line = _shorten(line, font, width)
                left = x + (width - draw.textlength(line, font=font)) / 2
                draw.text((left, text_y), line, font=font, fill=text_colour)
                text_y += line_height
            x += width + gap
        y += row_height + gap
    return sheet


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled font (FreeType at ``size`` when Pillow has FreeType, else its fixed bitmap
    font): no font file to ship or find on the host."""
    return ImageFont.load_default(size=size)


def _line_height(font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> int:
    top, bottom = font.getbbox("Ágjy|")[1::2]
    return bottom - min(top, 0) + 2


def _shorten(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int) -> str:
    """``text`` cut in the middle to fit ``width`` pixels: both the start and the end of a long
    path or name usually matter."""
    if font.getlength(text) <= width:
        return text
    keep = len(text)
    while keep > 0:
        keep -= 1
        candidate = text[: (keep + 1) // 2] + _ELLIPSIS + text[len(text) - keep // 2 :]
        if font.getlength(candidate) <= width:
            return candidate
    return ""

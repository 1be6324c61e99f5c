"""3-D LUTs as ``.cube`` text (Adobe Cube LUT Specification 1.0), the format grading tools read.

Layout: keyword lines (``TITLE "..."``, ``LUT_3D_SIZE N``, ``DOMAIN_MIN 0 0 0``,
``DOMAIN_MAX 1 1 1``), then N\\ :sup:`3` lines of three numbers, the red index changing fastest,
then green, then blue: the order of :mod:`photostyle.lut_render`'s tables, so a table is written
and read as it is. Comments (``#``) and blank lines are allowed anywhere. Only what this project
writes is read back: a 3-D table over the domain [0, 1]; a 1-D table, another domain or a
malformed line is refused, naming the file and line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from photostyle.lut_render import check_size

__all__ = ["Cube", "CubeError", "format_cube", "parse_cube"]


class CubeError(ValueError):
    """A ``.cube`` text this reader refuses; the message names the file (and line) and why."""


@dataclass(frozen=True)
class Cube:
    """A parsed ``.cube``: its title (may be empty) and its ``(size ** 3, 3)`` table."""

    title: str
    table: torch.Tensor

    @property
    def size(self) -> int:
        return round(self.table.shape[0] ** (1 / 3))


def format_cube(table: torch.Tensor, title: str) -> str:
    """The ``.cube`` text of a ``(size ** 3, 3)`` table in [0, 1], red index fastest."""
    size = round(table.shape[0] ** (1 / 3))
    if table.dim() != 2 or table.shape[1] != 3 or size**3 != table.shape[0]:
        raise ValueError(f"a colour table has shape (size ** 3, 3), got {tuple(table.shape)}")
    check_size(size)
    if '"' in title or "\n" in title:
        raise ValueError(f"a .cube title cannot hold quotes or line breaks: {title!r}")
    values = table.detach().to("cpu", torch.float64).clamp(0, 1).tolist()
    lines = [f'TITLE "{title}"', f"LUT_3D_SIZE {size}", "DOMAIN_MIN 0.0 0.0 0.0", "DOMAIN_MAX 1.0 1.0 1.0"]
    lines += [f"{r:.6f} {g:.6f} {b:.6f}" for r, g, b in values]
    return "\n".join(lines) + "\n"


def parse_cube(text: str, *, name: str = "<cube>") -> Cube:
    """Read a ``.cube`` text (see the module's docstring for what is accepted)."""
    title, size, rows = "", None, []
    domain = {"DOMAIN_MIN": [0.0, 0.0, 0.0], "DOMAIN_MAX": [1.0, 1.0, 1.0]}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{name}: line {number}"
        keyword, _, rest = line.partition(" ")
        if keyword == "TITLE":
            title = rest.strip().strip('"')
        elif keyword == "LUT_3D_SIZE":
            try:
                size = check_size(int(rest))
            except ValueError as exc:
                raise CubeError(f"{where}: bad LUT_3D_SIZE {rest.strip()!r} ({exc})") from None
        elif keyword == "LUT_1D_SIZE":
            raise CubeError(f"{where}: a 1-D LUT; only 3-D LUTs (LUT_3D_SIZE) are read")
        elif keyword in domain:
            domain[keyword] = _numbers(rest, where)
        elif keyword[0].isalpha():
            raise CubeError(f"{where}: unknown keyword {keyword!r}")
        else:
            if size is None:
                raise CubeError(f"{where}: table data before LUT_3D_SIZE")
            rows.append(_numbers(line, where))
    if size is None:
        raise CubeError(f"{name}: no LUT_3D_SIZE line")
    if domain != {"DOMAIN_MIN": [0.0, 0.0, 0.0], "DOMAIN_MAX": [1.0, 1.0, 1.0]}:
        raise CubeError(f"{name}: only the domain [0, 1] is supported, got {domain['DOMAIN_MIN']} to {domain['DOMAIN_MAX']}")
    if len(rows) != size**3:
        raise CubeError(f"{name}: LUT_3D_SIZE {size} needs {size**3} table lines, found {len(rows)}")
    return Cube(title, torch.tensor(rows, dtype=torch.float32))


def _numbers(text: str, where: str) -> list[float]:
    """Exactly three finite numbers, or a CubeError naming the line."""
    parts = text.split()
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise CubeError(f"{where}: expected three numbers, got {text.strip()!r}")
    return values

"""``styles export --cube``: a colour-table style as one ``.cube`` file for grading tools.

The style's colour function differs a little from photo to photo (its statistics are the
photo's), so one table is fitted over calibration photos (:func:`photostyle.lut_render.fit_table`):
by default the photo the style was trained to restyle, as recorded in its meta and only if it can
still be read with the recorded checksum (the store keeps no photos); else the ones given.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence

from photostyle import Stylizer
from photostyle.cube import format_cube
from photostyle.imageio import decode
from photostyle.lut_render import fit_table, pixel_weights
from pipeline.published import LoadedStyle, restyled_photo
from pipeline.storage import StorageError, read_bytes

__all__ = ["ExportError", "calibration_photos", "export_cube"]

log = logging.getLogger(__name__)


class ExportError(ValueError):
    """The style cannot be exported as asked; the message names the style and what to do."""


def calibration_photos(loaded: LoadedStyle, given: Sequence[str]) -> list[str]:
    """The photos to fit on: ``given``, else the style's own training photo after checking that
    it is still there with the checksum its meta records."""
    if given:
        return list(given)
    spec = loaded.ref.spec
    record = restyled_photo(loaded)
    if record is None:
        raise ExportError(f"{spec}: its meta records no training photo to fit the table on; give --calibrate PHOTO")
    uri = record["uri"]
    try:
        data = read_bytes(uri)
    except (StorageError, OSError) as exc:
        raise ExportError(
            f"{spec}: its training photo {uri} cannot be read ({exc}); the store keeps no photos: give --calibrate PHOTO"
        ) from exc
    if hashlib.sha256(data).hexdigest() != record["sha256"]:
        raise ExportError(
            f"{spec}: its training photo {uri} has changed since training (sha256 differs from the meta's); "
            "give --calibrate PHOTO"
        )
    return [uri]


def export_cube(loaded: LoadedStyle, photos: Sequence[str], *, size: int, working_side: int) -> str:
    """The ``.cube`` text of the one table fitted over ``photos`` (URIs), titled with the style's
    spec. Non-colour-table styles are refused by name (their result is not a function of colour)."""
    try:
        stylizer = Stylizer(loaded.base, loaded.style, render="lut", lut_size=size, working_side=working_side)
    except ValueError as exc:
        raise ExportError(f"{loaded.ref.spec}: cannot be a .cube: {exc}") from None
    tables, weights = [], []
    for uri in photos:
        small = stylizer.working_copy(decode(read_bytes(uri), name=uri).image)
        tables.append(stylizer.colour_table(small))
        weights.append(pixel_weights(small, size))
        log.info("%s: colour table of %s", loaded.ref.spec, uri)
    return format_cube(fit_table(tables, weights), title=loaded.ref.spec)

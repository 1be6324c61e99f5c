"""``pst-pipeline preview``: a contact sheet (input | output) of the latest results under an
``apply --output``, found through its manifest, so that a person can look rather than read."""

from __future__ import annotations

import logging
import posixpath
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import click
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from photostyle.imageio import ImageDecodeError, decode, encode
from pipeline import contact_sheet
from pipeline.commands.errors import reported
from pipeline.commands.options import s3_timeout_options
from pipeline.manifests import STATUS_OK, ManifestError
from pipeline.outputs_manifest import MANIFEST_DIR, read_outputs
from pipeline.ownership import current_filter, read_owner
from pipeline.storage import StorageError, filesystem, join, read_bytes, uri_of, write_atomic

__all__ = ["latest_results", "preview"]

log = logging.getLogger(__name__)

MAX_PHOTOS = 100  # a sheet is for a person to look at; beyond this, it is a gallery
_SHEET_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}
_COLUMNS = ["input_uri", "output_uri", "style", "style_version", "finished_at"]


@click.command()
@s3_timeout_options
@click.option("--output", "output_uri", required=True, metavar="URI", help="An apply --output folder or bucket prefix.")
@click.option(
    "--n",
    "count",
    type=click.IntRange(1, MAX_PHOTOS),
    default=12,
    show_default=True,
    help="How many photos: the latest stylised, one row each.",
)
@click.option(
    "--to",
    "sheet_uri",
    default="preview.png",
    show_default=True,
    metavar="URI",
    help="Where to write the sheet (.png, .jpg or .webp): a path or any fsspec URI.",
)
@click.option(
    "--height",
    "cell_height",
    type=click.IntRange(32, 2048),
    default=256,
    show_default=True,
    metavar="PX",
    help="Height of each photo on the sheet.",
)
def preview(output_uri: str, count: int, sheet_uri: str, cell_height: int) -> None:
    """A contact sheet of the latest results under --output: one row per photo, its input
    beside its result, captioned with the file name and the style version.

    Photos are found through the manifest (OUTPUT/_manifest/), the latest 'ok' result of each
    input first; photos that can no longer be read are left out with a warning."""
    uri, shown, problems = write_preview(output_uri, count, sheet_uri, cell_height)
    left_out = f", {problems} left out (unreadable)" if problems else ""
    click.echo(f"{uri}: {shown} photo(s) from {output_uri}{left_out}")


def write_preview(output_uri: str, count: int, sheet_uri: str, cell_height: int = 256) -> tuple[str, int, int]:
    """Render and write the sheet; returns (sheet URI, photos shown, photos left out)."""
    sheet_format = _SHEET_FORMATS.get(posixpath.splitext(sheet_uri)[1].lower())
    if sheet_format is None:
        raise click.BadParameter(f"{sheet_uri}: name it .png, .jpg or .webp", param_hint="--to")
    with reported(output_uri):
        results = latest_results(output_uri, count)
        rows, problems = _load_rows(results, cell_height)
        if not rows:
            raise click.ClickException(
                f"{output_uri}: none of the {results.num_rows} latest results could be shown; first: {problems[0]}"
            )
        sheet = contact_sheet.render(rows, cell_height=cell_height)
    with reported(sheet_uri):
        fs, path = filesystem(sheet_uri)
        write_atomic(fs, path, encode(sheet, format=sheet_format))
    return uri_of(fs, path), len(rows), len(problems)


def latest_results(output_uri: str, count: int) -> pa.Table:
    """The latest ``ok`` row of each of the ``count`` most recently stylised inputs, newest first.

    Two scans, so that a manifest of millions of rows is never read whole: only the input and
    time columns to pick the inputs, then the full rows of those inputs only."""
    ok = (pc.field("status") == STATUS_OK) & current_filter(read_owner(output_uri))  # rows of the files there now
    times = read_outputs(output_uri, columns=["input_uri", "finished_at"], filter=ok)
    if times.num_rows == 0:
        manifest = join(output_uri, MANIFEST_DIR)
        if read_outputs(output_uri, columns=["status"]).num_rows == 0:
            raise ManifestError(f"outputs manifest {manifest}: no part files (nothing applied there)")
        raise ManifestError(
            f"outputs manifest {manifest}: no '{STATUS_OK}' rows, every photo failed "
            f"(see pst-pipeline status --output {output_uri})"
        )
    latest = times.group_by("input_uri").aggregate([("finished_at", "max")])
    latest = latest.sort_by([("finished_at_max", "descending"), ("input_uri", "ascending")]).slice(0, count)
    chosen = read_outputs(output_uri, columns=_COLUMNS, filter=ok & pc.field("input_uri").isin(latest["input_uri"]))
    newest_first = chosen.sort_by([("finished_at", "descending"), ("output_uri", "ascending")])
    inputs = newest_first["input_uri"]
    first_of_input = pc.equal(pc.index_in(inputs, value_set=inputs), pa.array(range(len(inputs))))
    return newest_first.filter(first_of_input)


def _load_rows(results: pa.Table, cell_height: int) -> tuple[list[list[contact_sheet.Cell]], list[str]]:
    """One sheet row per result, in order, read and decoded in threads (I/O and decoding release
    the GIL); what cannot be read or decoded is reported instead."""
    loaded, problems = [], []
    with ThreadPoolExecutor(max_workers=min(8, results.num_rows)) as pool:
        for row in pool.map(lambda r: _load_row(r, cell_height), results.to_pylist()):
            if isinstance(row, str):
                log.warning("left out: %s", row)
                problems.append(row)
            else:
                loaded.append(row)
    return loaded, problems


def _load_row(result: dict[str, Any], cell_height: int) -> list[contact_sheet.Cell] | str:
    """Input and output cells of one result, each shrunk as soon as it is decoded; or why not."""
    try:
        images = [_thumbnail(result[key], cell_height) for key in ("input_uri", "output_uri")]
    except (StorageError, ImageDecodeError) as exc:
        return str(exc)
    name = posixpath.basename(result["input_uri"])
    return [(images[0], name), (images[1], f"{result['style']}@{result['style_version']}")]


def _thumbnail(uri: str, cell_height: int) -> Image.Image:
    return contact_sheet.fit(decode(read_bytes(uri), name=uri).image, cell_height)

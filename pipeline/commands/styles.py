"""``pst-pipeline styles``: what the store holds, for people and for scripts (``--json``)."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import click

from photostyle.imageio import ImageDecodeError
from photostyle.lut_render import DEFAULT_LUT_SIZE, MAX_LUT_SIZE, MIN_LUT_SIZE
from photostyle.stylize import default_working_side
from pipeline.catalog import Catalog
from pipeline.commands.documents import emit
from pipeline.commands.errors import reported
from pipeline.commands.options import s3_timeout_options, store_option
from pipeline.cube_export import ExportError, calibration_photos, export_cube
from pipeline.names import InvalidName
from pipeline.published import load_style
from pipeline.storage import filesystem, resolve_store, write_atomic

__all__ = ["styles"]


@click.group()
def styles() -> None:
    """Trained styles in the store."""


@styles.command("list")
@s3_timeout_options
@store_option
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for scripts.")
def list_styles(store: str | None, as_json: bool) -> None:
    """Every style with its latest version, base, creation time and size.

    A style whose latest meta.json cannot be read is listed with its error (JSON: "error"),
    the others as usual; the exit status is then 1."""
    uri = resolve_store(store)
    with reported(uri):
        infos = Catalog(uri).list_styles()
    damaged = [i for i in infos if i.error]
    if as_json:
        emit([asdict(i) for i in infos])
    elif not infos:
        click.echo(f"no styles in {uri}", err=True)
    else:
        rows = [("NAME", "VERSION", "BASE", "CREATED", "SIZE")]
        rows += [(i.name, i.version, i.base_id, i.created, _human_size(i.size)) for i in infos if not i.error]
        widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
        for r in rows:
            click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
        for i in damaged:
            click.echo(f"error: {i.name}@{i.version} cannot be read: {i.error}", err=True)
    if damaged:
        raise click.exceptions.Exit(1)


@styles.command("show")
@s3_timeout_options
@click.argument("spec", metavar="NAME[@VERSION]")
@store_option
@click.option("--json", "as_json", is_flag=True, help="The meta.json as is, for scripts.")
def show_style(spec: str, store: str | None, as_json: bool) -> None:
    """The recorded meta of one style version (the latest when no version is given)."""
    uri = resolve_store(store)
    with reported(uri):
        catalog = Catalog(uri)
        try:
            ref = catalog.resolve(spec)
        except InvalidName as exc:
            raise click.BadParameter(str(exc), param_hint="NAME[@VERSION]") from exc
        meta = catalog.style_meta(ref)
    if as_json:
        emit(meta)
        return
    width = max(map(len, meta))
    for key in sorted(meta):
        click.echo(f"{key.ljust(width)}  {_plain(meta[key])}")


@styles.command("export")
@click.argument("spec", metavar="NAME[@VERSION]")
@click.option("--cube", "cube_uri", required=True, metavar="FILE", help="Where to write the .cube file (any fsspec URI).")
@click.option(
    "--size",
    type=click.IntRange(MIN_LUT_SIZE, MAX_LUT_SIZE),
    default=DEFAULT_LUT_SIZE,
    show_default=True,
    help="Colours per channel of the table.",
)
@click.option(
    "--calibrate",
    "photos",
    multiple=True,
    metavar="PHOTO",
    help="A photo (URI) to fit the table on; repeat for several. [default: the photo the style was trained to restyle, if still readable]",
)
@click.option("--working-side", type=click.IntRange(min=64), default=default_working_side("lut"), show_default=True, metavar="PX", help="Long side the network sees each photo at.")
@store_option
def export_style(spec: str, cube_uri: str, size: int, photos: tuple[str, ...], working_side: int, store: str | None) -> None:
    """Write a colour-table style (preset lite) as a 3-D LUT in the .cube format (Adobe Cube LUT
    Specification 1.0) for Resolve, Premiere, Photoshop, ffmpeg's lut3d or OpenColorIO.

    \b
    A colour-table style recolours each photo by a table that depends a little on the photo.
    The file holds the one table that fits best over the --calibrate photos (weighted by how
    many of their pixels have each colour); by default the style's own training photo."""
    uri = resolve_store(store)
    with reported(uri):
        try:
            loaded = load_style(Catalog(uri), spec)
        except InvalidName as exc:
            raise click.BadParameter(str(exc), param_hint="NAME[@VERSION]") from exc
        try:
            text = export_cube(loaded, calibration_photos(loaded, photos), size=size, working_side=working_side)
        except (ExportError, ImageDecodeError) as exc:
            raise click.ClickException(str(exc)) from exc
    with reported(cube_uri):
        fs, path = filesystem(cube_uri)
        write_atomic(fs, path, text.encode())
    click.echo(f"wrote {cube_uri}: {loaded.ref.spec}, {size}^3 colours, fitted on {len(photos) or 1} photo(s)")


def _plain(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _human_size(size: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"

"""``pst-pipeline apply``: one style over a whole photo collection, safe to rerun, schedule and
kill; ``--json`` for schedulers."""

from __future__ import annotations


import click

from photostyle.lut_render import DEFAULT_LUT_SIZE, MAX_LUT_SIZE, MIN_LUT_SIZE
from photostyle.stylize import DEFAULT_WORKING_SIDES
from pipeline.apply_job import ApplyOptions, JobFailed, PlanError, plan_apply, run_apply
from pipeline.catalog import Catalog
from pipeline.commands.documents import emit
from pipeline.commands.errors import reported
from pipeline.commands.options import render_options, resource_quantity, s3_timeout_options, shared_fs_option, store_option
from pipeline.outputs import FORMATS, SAME_FORMAT
from pipeline.published import load_style
from pipeline.storage import resolve_store

__all__ = ["apply"]

EXIT_TOO_MANY_ERRORS = 3


@click.command()
@s3_timeout_options
@click.option("--style", "style_spec", required=True, metavar="NAME[@VERSION]", help="Style to apply (latest version when none is given).")
@click.option("--input", "input_uri", required=True, metavar="URI", help="Folder or bucket prefix (recursive), or a .parquet/.csv manifest with a 'uri' column.")
@click.option("--output", "output_uri", required=True, metavar="URI", help="Folder or bucket prefix for the results and their manifest (_manifest/).")
@store_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice([SAME_FORMAT, *FORMATS]),
    default=SAME_FORMAT,
    show_default=True,
    help="Output format; 'same' follows each input's extension (JPEG, PNG, WebP), and writes TIFF and BMP inputs as PNG.",
)
@click.option("--quality", type=click.IntRange(1, 100), default=92, show_default=True, help="JPEG/WebP quality.")
@click.option(
    "--max-side",
    type=click.IntRange(min=1),
    default=None,
    metavar="PX",
    help="Refuse (as error rows) photos whose long side exceeds PX; results are never resized.",
)
@render_options
@click.option(
    "--working-side",
    type=click.IntRange(min=64),
    default=None,
    show_default=", ".join(f"{side} for {render}" for render, side in DEFAULT_WORKING_SIDES.items()),
    metavar="PX",
    help="Long side the network sees with --render guided or lut.",
)
@click.option(
    "--lut-size",
    type=click.IntRange(MIN_LUT_SIZE, MAX_LUT_SIZE),
    default=DEFAULT_LUT_SIZE,
    show_default=True,
    metavar="N",
    help="Colours per channel of the 3-D LUT of --render lut.",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Photos per batch, and per manifest commit.")
@click.option("--concurrency", type=click.IntRange(min=1), default=None, metavar="N", help="Stylise workers. [default: one per GPU, else one per CPU]")
@click.option(
    "--gpus-per-worker",
    type=click.FloatRange(min=0),
    default=None,
    callback=resource_quantity,
    metavar="F",
    help="GPUs per stylise worker (fractions share a GPU); 0 runs on CPUs. [default: 1 when the cluster has GPUs, else 0]",
)
@click.option("--force", is_flag=True, help="Redo every input, also those already done for this style version.")
@shared_fs_option
@click.option(
    "--batch-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=ApplyOptions.batch_timeout,
    show_default=True,
    metavar="SECONDS",
    help="Stop the job (exit 1; a rerun resumes) when no batch has been committed for this long.",
)
@click.option(
    "--allow-http",
    is_flag=True,
    help="Fetch http:// and https:// URIs that an input manifest lists (refused by default: a manifest must not make "
    "workers request arbitrary addresses). Local files, s3, gs and az are fetched, and any scheme --input or --output uses.",
)
@click.option(
    "--max-error-rate",
    type=click.FloatRange(0, 1),
    default=0.01,
    show_default=True,
    metavar="R",
    help=f"Exit {EXIT_TOO_MANY_ERRORS} when more than this fraction of this run's photos failed.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document with the run's counts, for schedulers.")
@click.pass_context
def apply(
    ctx: click.Context,
    style_spec: str,
    input_uri: str,
    output_uri: str,
    store: str | None,
    fmt: str,
    quality: int,
    max_side: int | None,
    render: str | None,
    strength: float,
    working_side: int | None,
    lut_size: int,
    batch_size: int,
    concurrency: int | None,
    gpus_per_worker: float | None,
    force: bool,
    batch_timeout: float,
    allow_http: bool,
    shared_fs: bool,
    max_error_rate: float,
    as_json: bool,
) -> None:
    """Stylise every photo of --input with one style, into --output.

    \b
    Paths: results mirror the inputs' paths below --input; for a manifest, the path after
    the URI's scheme (s3://bucket/a/b.jpg -> OUTPUT/bucket/a/b.jpg; /data/b.jpg ->
    OUTPUT/data/b.jpg). A name keeps its extension unless the format changes (.JPG stays
    .JPG; x.tif becomes x.png). Hidden files and folders, and --output inside --input, are
    skipped. Each result has its input's size (after EXIF orientation), ICC profile and EXIF.

    \b
    One style per output: --output belongs to the first style applied there (recorded in
    _manifest/owner.json); another style is refused before any work. Another version of
    that style restyles every photo, and only its rows count as done from then on, so an
    'ok' row always describes the file at its output_uri.

    \b
    Refused inputs (error rows naming the problem): anything but a regular file (FIFOs,
    devices), files over the size cap (8 bytes per pixel of the pixel limit), symbolic
    links leading out of --input, two inputs with one result path (a//x.jpg and a/x.jpg),
    and a manifest's URIs of schemes other than local files, object stores (s3, gs, az)
    and those of --input and --output (http(s) only with --allow-http).

    \b
    Resuming: every batch is committed to OUTPUT/_manifest/ as soon as it is written, so a
    rerun (after a crash, or tomorrow with new photos) does only the inputs without an 'ok'
    row for this style version; failed ones are retried. Photos that cannot be read,
    decoded or written become error rows and the run goes on.

    \b
    On a cluster: one apply per --output at a time (a newer run, e.g. a restarted driver, takes
    over and fences the old run's last commits); local --input/--output paths are refused when
    the cluster has several nodes, unless --shared-fs says every node mounts them.

    \b
    Exit status: 0; 3 when more than --max-error-rate of this run's photos failed (the
    counts are printed either way); 1 for an unknown or damaged style, or an unreadable input.
    """
    uri = resolve_store(store)
    options = ApplyOptions(
        format=fmt,
        quality=quality,
        max_side=max_side,
        render=render,
        strength=strength,
        working_side=working_side,
        lut_size=lut_size,
        batch_size=batch_size,
        concurrency=concurrency,
        gpus_per_worker=gpus_per_worker,
        force=force,
        batch_timeout=batch_timeout,
        allow_http=allow_http,
        shared_fs=shared_fs,
    )
    with reported(uri):
        style = load_style(Catalog(uri), style_spec)
    with reported(f"{input_uri} -> {output_uri}"):
        try:
            result = run_apply(plan_apply(style, input_uri, output_uri, options), options)
        except (PlanError, JobFailed) as exc:
            raise click.ClickException(str(exc)) from exc
    if as_json:
        emit(result.to_json())
    else:
        click.echo(
            f"{result.style}@{result.style_version}: {result.processed} stylised, {result.errors} failed, "
            f"{result.skipped} already done, in {result.seconds:.1f} s (model {result.model_seconds:.1f} s)"
        )
        click.echo(f"run {result.run_id}; manifest {result.manifest}")
    if result.error_rate > max_error_rate:
        click.echo(
            f"error: {result.errors} of {result.processed + result.errors} photos failed "
            f"({result.error_rate:.1%} > --max-error-rate {max_error_rate:g}); "
            f"see pst-pipeline status --output {output_uri}",
            err=True,
        )
        ctx.exit(EXIT_TOO_MANY_ERRORS)

"""``pst-pipeline demo``: the whole product in a few minutes on a fresh machine, no arguments.

Trains a ``lite`` style from two real photos that scikit-image ships (``skimage.data``), publishes
it to the store, applies it to a few more sample photos with the real ``apply`` pipeline, writes a
contact sheet, and says what to try next. It uses torchvision's ImageNet VGG19 when it can be had;
offline it says so loudly and trains with the random loss network (recorded in the style's meta).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import click
import pyarrow as pa
import pyarrow.parquet as pq
import ray
from PIL import Image

from photostyle import LossNetUnavailable, load_loss_network
from photostyle.imageio import encode
from pipeline.apply_job import ApplyOptions, plan_apply, run_apply
from pipeline.catalog import Catalog
from pipeline.commands.errors import reported
from pipeline.commands.options import s3_timeout_options, store_option
from pipeline.commands.preview import write_preview
from pipeline.published import load_style
from pipeline.ray_runtime import ensure_ray
from pipeline.storage import resolve_store
from pipeline.training_jobs import STATUS_ERROR, Row, plan_job, run_rows

__all__ = ["demo"]

log = logging.getLogger(__name__)

STYLE_NAME = "demo-coffee"
_PAIR = ("chelsea", "coffee")  # content (a cat), style (warm, brown tones)
_TARGETS = ("astronaut", "rocket", "chelsea", "hubble_deep_field")


def _sample(name: str) -> Image.Image:
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")


def _write_samples(folder: Path, names: tuple[str, ...]) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        path = folder / f"{name}.jpg"
        path.write_bytes(encode(_sample(name), format="jpeg", quality=95))
        paths.append(str(path))
    return paths


def _loss_network(vgg_weights: str | None) -> tuple[str, str | None]:
    """(loss net, weights URI) for the demo: ImageNet VGG19 if reachable, else random, loudly."""
    if vgg_weights:
        return "vgg19", vgg_weights
    try:
        load_loss_network("vgg19", "imagenet", layers=("relu1_1",))
        return "vgg19", None
    except LossNetUnavailable as exc:
        log.warning(
            "\n%s\nImageNet VGG19 weights are not available here (%s).\n"
            "The demo continues with a RANDOM loss network: the plumbing runs end to end, but the style\n"
            "says little about quality (its meta.json records recipe.loss_net.weights = 'random').\n"
            "For real results pass the weights: pst-pipeline demo --vgg-weights PATH_OR_URI\n%s",
            "=" * 78,
            str(exc).split(" (")[0],
            "=" * 78,
        )
        return "random", None


@click.command()
@s3_timeout_options
@store_option
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("pst-demo"),
    show_default=True,
    help="Where the sample photos, outputs and contact sheet go.",
)
@click.option("--vgg-weights", metavar="URI", default=None, help="VGG19 weights (torchvision layout), any fsspec URI.")
@click.option("--iterations", type=click.IntRange(min=1), default=None, help="Training iterations. [default: lite's]")
def demo(store: str | None, workdir: Path, vgg_weights: str | None, iterations: int | None) -> None:
    """Train a style from two sample photos, apply it to others, and show the result."""
    store_uri = resolve_store(store)
    workdir = workdir.resolve()
    log.info("demo: writing sample photos (skimage.data) to %s", workdir)
    content, style = _write_samples(workdir / "pair", _PAIR)
    inputs = workdir / "photos"
    _write_samples(inputs, _TARGETS)
    pairs = workdir / "pairs.parquet"
    pq.write_table(pa.table({"content": [content], "style": [style], "name": [STYLE_NAME]}), pairs)
    loss_net, weights = _loss_network(vgg_weights)
    with reported(store_uri):
        ensure_ray()
        cpus = max(1.0, float(ray.cluster_resources().get("CPU", 1)))  # one row: give it every core
        job = plan_job(store_uri, iterations=iterations, loss_net=loss_net, vgg_weights=weights, cpus_per_task=cpus)
        log.info("demo: training style %r (lite preset) from %s and %s", STYLE_NAME, *_PAIR)
        (trained,) = run_rows([Row(STYLE_NAME, content, style)], job)
        if trained.status == STATUS_ERROR:
            raise click.ClickException(f"training {STYLE_NAME} failed: {trained.error}")
        loaded = load_style(Catalog(store_uri), STYLE_NAME)
        outputs = workdir / "outputs"
        options = ApplyOptions(batch_size=2)
        log.info("demo: applying %s to %d photos in %s", loaded.ref.spec, len(_TARGETS), inputs)
        result = run_apply(plan_apply(loaded, str(inputs), str(outputs), options), options)
    sheet, shown, _ = write_preview(str(outputs), len(_TARGETS), str(workdir / "sheet.png"))
    here = os.getcwd()

    def rel(p: Path | str) -> str:
        return os.path.relpath(p, here) if str(p).startswith(here) else str(p)

    click.echo(
        f"""
Style   {loaded.ref.spec} (base {loaded.ref.base_id}, loss network: {loaded.meta['recipe']['loss_net']['weights']})
Store   {store_uri}
Photos  {rel(inputs)}  ->  {rel(outputs)}  ({result.processed} stylised, {result.errors} errors)
Sheet   {rel(sheet)}  ({shown} photos, input | output)

Try next:
  pst-pipeline styles list --store {store_uri}
  pst-pipeline styles show {STYLE_NAME} --store {store_uri}
  pst-pipeline apply --style {STYLE_NAME} --input YOUR_PHOTOS --output OUT --store {store_uri}
  pst-pipeline status --output {rel(outputs)}
  pst-pipeline preview --output {rel(outputs)} --to preview.png
"""
    )

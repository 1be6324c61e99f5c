"""``pst-pipeline train``: train the pairs manifest's rows on Ray, one task per row, and publish
each row's two styles to the store."""

from __future__ import annotations

import logging
from collections import Counter

import click

from pipeline.commands.documents import emit
from pipeline.commands.errors import reported
from pipeline.commands.options import s3_timeout_options, shared_fs_option, store_option, train_options
from pipeline.manifests import STATUS_ERROR, STATUS_OK
from pipeline.storage import resolve_store
from pipeline.training_jobs import (
    MODES,
    STATUS_SKIPPED,
    RowResult,
    SettingsError,
    check_names_in_store,
    load_rows,
    plan_job,
    refuse_node_local_paths,
    run_rows,
)

__all__ = ["train"]

log = logging.getLogger(__name__)


@click.command()
@s3_timeout_options
@click.option(
    "--pairs",
    "pairs_uri",
    metavar="URI",
    required=True,
    help=(
        "Pairs manifest (Parquet: content, style, name; optional extra_content: a list of photo URIs, "
        "a sample of the collection the style is for)."
    ),
)
@store_option
@click.option(
    "--mode",
    type=click.Choice(MODES),
    default="pair",
    show_default=True,
    help="pair: a fresh base and two styles per row; style: two new styles on the frozen --base.",
)
@click.option("--base", "base_id", metavar="BASE_ID", help="The base to train new styles on (--mode style).")
@train_options
@click.option("--force", is_flag=True, help="Train rows again even if already trained the same way.")
@shared_fs_option
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout, for scripts.")
def train(
    pairs_uri: str,
    store: str | None,
    mode: str,
    base_id: str | None,
    preset: str | None,
    iterations: int | None,
    crop: int | None,
    loss_net: str,
    vgg_weights: str | None,
    seed: int,
    gpus_per_task: float | None,
    cpus_per_task: float,
    force: bool,
    shared_fs: bool,
    as_json: bool,
) -> None:
    """Train one style pair per row of the pairs manifest, as Ray tasks, and publish them.

    Each row publishes NAME (the style photo's look) and NAME.reverse (the content photo's look).
    Rows already trained from the same photos with the same recipe are skipped; rows trained
    under another recipe (another algorithm version, a changed default or flag) are trained again
    and say so ("retrained: recipe changed (...)"). Uses the Ray cluster at $RAY_ADDRESS, else a
    local Ray; on a cluster of several nodes, local paths (store, photos, weights) are refused
    unless --shared-fs. Exit status 1 if any row failed."""
    store_uri = resolve_store(store)
    with reported(store_uri):
        rows = load_rows(pairs_uri)
        try:
            job = plan_job(
                store_uri,
                mode=mode,
                base=base_id,
                preset=preset,
                iterations=iterations,
                crop=crop,
                seed=seed,
                loss_net=loss_net,
                vgg_weights=vgg_weights,
                force=force,
                cpus_per_task=cpus_per_task,
            )
            refuse_node_local_paths(rows, job, shared_fs=shared_fs)
        except SettingsError as exc:
            raise click.UsageError(str(exc)) from exc
        check_names_in_store(rows, job.store)
    results = run_rows(rows, job, gpus_per_task=gpus_per_task)

    if as_json:
        emit({"results": [r.to_json() for r in results]})
    else:
        _echo_summary(results)
    failed = [r for r in results if r.status == STATUS_ERROR]
    if failed and len(failed) == len(results) and {r.cause for r in failed} == {"LossNetUnavailable"}:
        log.error("every row failed: the loss network's weights are unavailable on the workers: %s", failed[0].error)
    if failed:
        raise click.exceptions.Exit(1)


def _echo_summary(results: list[RowResult]) -> None:
    """One line per row, then the totals."""
    width = max(len(r.name) for r in results)
    for r in results:
        if r.status == STATUS_ERROR:
            detail = r.error
        else:
            detail = f"base {r.base}  " + " ".join(ref.spec for ref in r.styles) + (f"  ({r.note})" if r.note else "")
        click.echo(f"{r.name.ljust(width)}  {r.status.ljust(7)}  {r.seconds:7.1f} s  {detail}")
    counts = Counter(r.status for r in results)
    click.echo(
        f"{len(results)} row(s): {counts[STATUS_OK]} trained, {counts[STATUS_SKIPPED]} skipped, "
        f"{counts[STATUS_ERROR]} failed"
    )

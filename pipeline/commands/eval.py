"""``pst-pipeline eval``: how good are trained styles? The three reference-free metrics of
``pipeline.quality`` on each pair's real ``apply`` result, beside two classical baselines and an
optional published reference, as JSON, a Markdown table and a contact sheet."""

from __future__ import annotations

from typing import Any

import click
from click.core import ParameterSource

from pipeline.apply_job import JobFailed, PlanError
from pipeline.catalog import Catalog
from pipeline.commands.documents import emit
from pipeline.commands.errors import reported
from pipeline.commands.options import TRAIN_SETTINGS, render_options, s3_timeout_options, store_option, train_options
from pipeline.evaluation import (
    EvalError,
    build_cross_report,
    build_report,
    cross_applications,
    load_pairs,
    markdown_table,
    published_styles,
    score_pairs,
    stylize_contents,
    stylize_cross,
    train_styles,
    trained_on,
    write_report,
)
from pipeline.storage import resolve_store
from pipeline.training_jobs import SettingsError, TrainJob, plan_job

__all__ = ["eval_command"]


@click.command("eval")
@s3_timeout_options
@click.option(
    "--pairs",
    "pairs_uri",
    metavar="URI",
    required=True,
    help=(
        "Pairs manifest (Parquet: content, style, name; optional reference: an image to score alongside; "
        "optional extra_content, as for train)."
    ),
)
@store_option
@click.option(
    "--out",
    "out_uri",
    metavar="URI",
    required=True,
    help="Folder or prefix for the stylised photos (outputs/NAME/), report.json, report.md and sheet.png.",
)
@train_options
@render_options
@click.option(
    "--no-train",
    is_flag=True,
    help="Evaluate the latest published version of each pair's style instead of training it.",
)
@click.option(
    "--cross",
    is_flag=True,
    help="Also apply each style to every other pair's content photo and score it against its own style photo "
    "(report.json 'cross', a second table, cross-sheets/NAME.png per style).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report on stdout.")
@click.pass_context
def eval_command(
    ctx: click.Context,
    pairs_uri: str,
    store: str | None,
    out_uri: str,
    no_train: bool,
    cross: bool,
    as_json: bool,
    render: str | None,
    strength: float,
    **settings: Any,
) -> None:
    """Train each pair's style (rows already trained the same way are reused), stylise its
    content photo with the apply job, and score the result, Reinhard colour transfer,
    histogram matching and the row's reference image.

    \b
    Metrics (cells read structure / style_swd / affine_res):
      structure   local patterns of the content kept, 1 is best
      style_swd   colour distance to the style photo (CIE Lab), 0 is best
      affine_res  share of the result that is no local recolouring of the content, 0 is best

    With --cross, each style is also applied to every other pair's content photo (photos it
    never saw, as in production) and scored against its own style photo, beside the baselines
    given that style photo. Choose settings on one split of pairs and confirm on another.

    Exit status 1 if any pair cannot be trained, stylised or scored: means over different sets
    of pairs do not compare. Rerunning resumes: trained styles and results are reused."""
    uri = resolve_store(store)
    given = [name for name in TRAIN_SETTINGS if ctx.get_parameter_source(name) != ParameterSource.DEFAULT]
    if no_train and given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise click.UsageError(f"{flags}: training settings have no effect with --no-train")
    with reported(uri):
        pairs = load_pairs(pairs_uri)
        catalog = Catalog(uri)
        try:
            if no_train:
                refs = published_styles(catalog, pairs)
            else:
                refs = train_styles(pairs, _train_job(uri, settings), gpus_per_task=settings["gpus_per_task"])
            outputs = stylize_contents(catalog, pairs, refs, out_uri, render=render, strength=strength)
            scored = score_pairs(pairs, refs, outputs)
            cross_scored = []
            if cross:
                applications = cross_applications(pairs, trained_on(catalog, refs))
                cross_outputs = stylize_cross(catalog, applications, refs, out_uri, render=render, strength=strength)
                cross_refs = {a.name: refs[a.style_pair.name] for a in applications}
                cross_scored = score_pairs([a.as_pair for a in applications], cross_refs, cross_outputs)
        except (EvalError, PlanError, JobFailed) as exc:
            raise click.ClickException(str(exc)) from exc
    report = build_report(scored)
    if cross:
        report["cross"] = build_cross_report(cross_scored)
    with reported(out_uri):
        written = write_report(out_uri, report, scored, cross_scored)
    if as_json:
        emit(report)
    else:
        click.echo(markdown_table(report), nl=False)
        click.echo(f"wrote {', '.join(written)}")


def _train_job(store: str, settings: dict[str, Any]) -> TrainJob:
    """``train``'s job for these flags (pair mode), resolved; bad combinations are usage errors."""
    fields = {name: value for name, value in settings.items() if name != "gpus_per_task"}
    try:
        return plan_job(store, **fields)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from exc

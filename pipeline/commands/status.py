"""``pst-pipeline status``: what an output folder holds, from its manifest (never by listing
results), for people and for monitoring (``--json``)."""

from __future__ import annotations


import click

from pipeline.commands.documents import emit
from pipeline.commands.errors import reported
from pipeline.commands.options import s3_timeout_options
from pipeline.outputs import summarize
from pipeline.outputs_manifest import quarantine_unreadable

__all__ = ["status"]


@click.command()
@s3_timeout_options
@click.option("--output", "output_uri", required=True, metavar="URI", help="An apply --output folder or bucket prefix.")
@click.option(
    "--repair",
    is_flag=True,
    help="Move manifest part files that cannot be read to _manifest/quarantine/ (readable parts are never touched).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for scripts.")
def status(output_uri: str, repair: bool, as_json: bool) -> None:
    """Photos ok and failed under --output, per style version, and the runs that wrote them.

    \b
    Counted per distinct input: an input with any 'ok' row is ok, even if an earlier
    attempt failed. Once another version of the style was applied to the folder, only that
    version's rows since then count (its files were overwritten); 'owner' says which.
    Unreadable manifest parts are skipped and named (their photos are redone by the next
    apply); --repair moves them aside. Per Ray node: the attempts (manifest rows) it ran."""
    with reported(output_uri):
        if repair:
            for uri, problem in quarantine_unreadable(output_uri):
                click.echo(f"warning: moved unreadable manifest part to {uri} ({problem})", err=True)
        summary = summarize(output_uri)
    for part in summary["unreadable_parts"]:
        click.echo(f"warning: skipped unreadable manifest part {part['uri']} ({part['error']}); --repair moves it aside", err=True)
    if as_json:
        emit(summary)
        return
    click.echo(f"{summary['ok']} ok, {summary['error']} failed, {summary['runs']} run(s)")
    if (owner := summary["owner"]) is not None:
        since = f"run {owner['since']}" if owner["since"] else "the first run"
        click.echo(f"  files hold {owner['style']}@{owner['style_version']} (its rows since {since} count)")
    for s in summary["styles"]:
        click.echo(f"  {s['style']}@{s['style_version']}: {s['ok']} ok, {s['error']} failed")
    for n in summary["nodes"]:
        click.echo(f"  node {n['node_id'] or '(none recorded)'}: {n['ok']} ok, {n['error']} failed attempts")
    last = summary["last_run"]
    click.echo(f"last run {last['run_id']} (finished {last['finished_at']}): {last['ok']} ok, {last['error']} failed")

"""``pst-pipeline status``: what an output folder holds, from its manifest (never by listing
results), for people and for monitoring (``--json``)."""

from __future__ import annotations

import json

import click

from pipeline.commands.errors import reported
from pipeline.outputs import summarize

__all__ = ["status"]


@click.command()
@click.option("--output", "output_uri", required=True, metavar="URI", help="An apply --output folder or bucket prefix.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for scripts.")
def status(output_uri: str, as_json: bool) -> None:
    """Photos ok and failed under --output, per style version, and the runs that wrote them.

    Counted per distinct input: an input with any 'ok' row is ok, even if an earlier
    attempt failed. Per Ray node: the attempts (manifest rows) it ran."""
    with reported(output_uri):
        summary = summarize(output_uri)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(f"{summary['ok']} ok, {summary['error']} failed, {summary['runs']} run(s)")
    for s in summary["styles"]:
        click.echo(f"  {s['style']}@{s['style_version']}: {s['ok']} ok, {s['error']} failed")
    for n in summary["nodes"]:
        click.echo(f"  node {n['node_id'] or '(none recorded)'}: {n['ok']} ok, {n['error']} failed attempts")
    last = summary["last_run"]
    click.echo(f"last run {last['run_id']} (finished {last['finished_at']}): {last['ok']} ok, {last['error']} failed")

"""``pst-pipeline``: the command-line entry point.

The root group only sets up logging and ``--json``'s reserved stdout
(:mod:`pipeline.commands.documents`); each command lives in ``pipeline/commands/<name>.py`` and is
registered here, so a command's flags are defined in exactly one place (and deploy/ manifests are
checked against them).
"""

from __future__ import annotations

import logging

import click

from pipeline.commands.apply import apply
from pipeline.commands.demo import demo
from pipeline.commands.documents import JsonGroup
from pipeline.commands.eval import eval_command
from pipeline.commands.preview import preview
from pipeline.commands.status import status
from pipeline.commands.styles import styles
from pipeline.commands.train import train

__all__ = ["main"]


@click.group(cls=JsonGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging on stderr.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors on stderr.")
@click.version_option(package_name="photostyle")
def main(verbose: bool, quiet: bool) -> None:
    """Photo style transfer with consistency losses, as batch jobs on Ray and object storage."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


main.add_command(apply)
main.add_command(demo)
main.add_command(eval_command)
main.add_command(preview)
main.add_command(status)
main.add_command(styles)
main.add_command(train)

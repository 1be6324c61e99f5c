"""``pst-pipeline``: the command-line entry point.

The root group only sets up logging, the object-store timeouts and ``--json``'s reserved stdout
(:mod:`pipeline.commands.documents`); each command lives in ``pipeline/commands/<name>.py`` and is
registered here, so a command's flags are defined in exactly one place (and deploy/ manifests are
checked against them).
"""

from __future__ import annotations

import logging
import os

import click

from pipeline.commands.apply import apply
from pipeline.commands.demo import demo
from pipeline.commands.documents import JsonGroup
from pipeline.commands.eval import eval_command
from pipeline.commands.preview import preview
from pipeline.commands.status import status
from pipeline.commands.styles import styles
from pipeline.commands.train import train
from pipeline.storage import S3Timeouts

__all__ = ["main"]


_DEFAULT_TIMEOUTS = S3Timeouts()


@click.group(cls=JsonGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging on stderr.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors on stderr.")
@click.option(
    "--s3-connect-timeout",
    type=click.FloatRange(min=0, min_open=True),
    envvar=S3Timeouts.ENV["connect"],
    default=_DEFAULT_TIMEOUTS.connect,
    show_default=True,
    show_envvar=True,
    metavar="SECONDS",
    help="Seconds an S3 connection may take to open, per attempt.",
)
@click.option(
    "--s3-read-timeout",
    type=click.FloatRange(min=0, min_open=True),
    envvar=S3Timeouts.ENV["read"],
    default=_DEFAULT_TIMEOUTS.read,
    show_default=True,
    show_envvar=True,
    metavar="SECONDS",
    help="Seconds an S3 call may wait for its next byte, per attempt.",
)
@click.option(
    "--s3-attempts",
    type=click.IntRange(min=1),
    envvar=S3Timeouts.ENV["attempts"],
    default=_DEFAULT_TIMEOUTS.attempts,
    show_default=True,
    show_envvar=True,
    help="Attempts per S3 call (with backoff) before it fails.",
)
@click.version_option(package_name="photostyle")
def main(verbose: bool, quiet: bool, s3_connect_timeout: float, s3_read_timeout: float, s3_attempts: int) -> None:
    """Photo style transfer with consistency losses, as batch jobs on Ray and object storage."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Through the environment, so every filesystem of this process and of its Ray workers
    # (pipeline.ray_runtime passes it on) uses them.
    os.environ.update(S3Timeouts(s3_connect_timeout, s3_read_timeout, s3_attempts).env())


main.add_command(apply)
main.add_command(demo)
main.add_command(eval_command)
main.add_command(preview)
main.add_command(status)
main.add_command(styles)
main.add_command(train)

"""Click options shared by several commands, defined once so their flags and help never drift."""

from __future__ import annotations

import click

from pipeline.storage import DEFAULT_STORE, STORE_ENV

__all__ = ["store_option"]

# No click default or envvar here: pipeline.storage.resolve_store owns the precedence
# (--store, then $PST_STORE, then ./pst-store), so library callers get the same answer.
store_option = click.option(
    "--store",
    metavar="URI",
    default=None,
    help=f"Style store: any fsspec URI (path, s3://, gs://, ...). [default: ${STORE_ENV}, else {DEFAULT_STORE}]",
)

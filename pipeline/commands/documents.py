"""``--json``: exactly one JSON document on stdout, whatever happens, and nothing else there.

Schedulers parse a command's stdout. So while a ``--json`` command runs, stdout is reserved:
file descriptor 1 (which Ray's processes and any native library inherit) and ``sys.stdout``
both point at stderr, and only :func:`emit` writes to the real stdout. A command that fails
before it has emitted its document (a bad flag, a missing style, a crash) emits
``{"error": MESSAGE, "exit_code": N}`` instead; its message also goes to stderr as usual.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import click

__all__ = ["JSON_FLAG", "JsonGroup", "emit", "reserved_stdout"]

JSON_FLAG = "--json"
_document: list[IO[str]] = []  # the real stdout while a --json command runs (a stack: tests nest)
_emitted: list[bool] = []
_WANTS_JSON = "pipeline.json"  # key in click's context meta


def emit(document: Any) -> None:
    """Print the command's one JSON document (on the real stdout when it is reserved)."""
    text = json.dumps(document, indent=2)
    if not _document:
        click.echo(text)
        return
    _document[-1].write(text + "\n")
    _document[-1].flush()
    _emitted[-1] = True


@contextmanager
def reserved_stdout() -> Iterator[None]:
    """Send everything written to stdout, by Python or by native code and child processes, to
    stderr until the end of the block; :func:`emit` still reaches the real stdout."""
    original = sys.stdout
    original.flush()
    sys.stderr.flush()
    saved_fd = os.dup(1)
    real: IO[str] = original if _fileno(original) != 1 else os.fdopen(os.dup(saved_fd), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    _document.append(real)
    _emitted.append(False)
    try:
        yield
    finally:
        sys.stderr.flush()
        sys.stdout = original
        os.dup2(saved_fd, 1)
        os.close(saved_fd)
        _document.pop()
        _emitted.pop()
        if real is not original:
            real.close()


def _emitted_yet() -> bool:
    return bool(_emitted and _emitted[-1])


def _fileno(stream: IO[str]) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):  # e.g. click's test runner: no file behind it
        return None


class JsonGroup(click.Group):
    """The root group: a subcommand given ``--json`` runs with stdout reserved, and emits an
    error document if it fails without having emitted its own."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        options = args[: args.index("--")] if "--" in args else args
        ctx.meta[_WANTS_JSON] = JSON_FLAG in options
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        if not ctx.meta.get(_WANTS_JSON):
            return super().invoke(ctx)
        with reserved_stdout():
            try:
                return super().invoke(ctx)
            except click.exceptions.Exit as exc:
                if exc.exit_code and not _emitted_yet():
                    emit({"error": f"exit status {exc.exit_code}", "exit_code": exc.exit_code})
                raise
            except click.ClickException as exc:
                if not _emitted_yet():
                    emit({"error": exc.format_message(), "exit_code": exc.exit_code})
                raise
            except click.Abort:
                if not _emitted_yet():
                    emit({"error": "aborted", "exit_code": 1})
                raise
            except Exception as exc:
                if not _emitted_yet():
                    emit({"error": f"{type(exc).__name__}: {exc}", "exit_code": 1})
                raise

"""How commands report failure: an error the user can act on is one line naming the input and
the problem (exit status 1), never a traceback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click

from photostyle.weights import WeightsError
from pipeline.catalog import CatalogError
from pipeline.manifests import ManifestError
from pipeline.names import InvalidName
from pipeline.storage import BACKEND_ERRORS, StorageError

__all__ = ["reported"]


@contextmanager
def reported(context: str) -> Iterator[None]:
    """Run a command body, turning catalog, manifest, name, weights and storage errors into a
    :class:`click.ClickException`; backend errors, which may name no object, get ``context``
    (usually the store URI) in front."""
    try:
        yield
    except (CatalogError, ManifestError, InvalidName, WeightsError, StorageError) as exc:
        raise click.ClickException(str(exc)) from exc
    except BACKEND_ERRORS as exc:
        raise click.ClickException(f"{context}: {exc}") from exc

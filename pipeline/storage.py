"""Where the store is, and the few write primitives every command needs on any fsspec filesystem.

The catalog and the manifests are only correct if an object is never half-written and, where it
must be, never overwritten. Those two guarantees are made here, once, per filesystem kind:

- local (and any mounted shared disk): data goes to a temporary file in the target directory,
  then ``os.link`` (exclusive: fails if the target exists) or ``os.replace`` (overwrite) makes it
  visible in one atomic step;
- object stores (S3, GCS, ...): a single PUT is atomic by itself; exclusivity is the store's
  conditional create (s3fs sends ``If-None-Match: *`` and reports a taken key as
  ``FileExistsError``).
"""

from __future__ import annotations

import logging
import os
import time
import uuid

import fsspec
from botocore.exceptions import BotoCoreError
from fsspec.implementations.local import LocalFileSystem

__all__ = [
    "BACKEND_ERRORS",
    "DEFAULT_STORE",
    "STORE_ENV",
    "AlreadyExists",
    "ObjectNotFound",
    "StorageError",
    "filesystem",
    "join",
    "read_bytes",
    "resolve_store",
    "uri_of",
    "write_atomic",
    "write_exclusive",
]

log = logging.getLogger(__name__)

STORE_ENV = "PST_STORE"
DEFAULT_STORE = "./pst-store"
_CONFLICT_RETRIES = 5  # for S3 409 ConditionalRequestConflict, see write_exclusive


# What fsspec backends raise when a store is unreachable, forbidden or misconfigured: OSError
# subclasses, except botocore's credential/endpoint errors, which s3fs lets through as they are.
BACKEND_ERRORS: tuple[type[Exception], ...] = (OSError, BotoCoreError)


class StorageError(OSError):
    """An object that cannot be read or written; the message names it."""


class ObjectNotFound(StorageError, FileNotFoundError):
    """The named object does not exist."""


class AlreadyExists(StorageError, FileExistsError):
    """An exclusive create found the object already there (another writer won)."""


def resolve_store(store: str | None = None) -> str:
    """The store URI: the explicit value, else ``$PST_STORE``, else ``./pst-store`` (works with
    no setup, so a first run needs no configuration)."""
    return store or os.environ.get(STORE_ENV) or DEFAULT_STORE


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem for any URI (path, ``file://``, ``s3://``, ``gs://``, ``memory://``)
    and the path inside it, without a trailing slash."""
    try:
        fs, path = fsspec.core.url_to_fs(uri)
    except (ValueError, ImportError) as exc:  # unknown scheme, or its fsspec backend not installed
        raise StorageError(f"{uri}: cannot open ({exc})") from exc
    return fs, path.rstrip("/") or path


def join(*parts: str) -> str:
    """Join path segments with ``/`` (the separator of every fsspec filesystem)."""
    return "/".join(p.strip("/") if i else p.rstrip("/") for i, p in enumerate(parts))


def uri_of(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """A path as the user would write it: plain for local files, ``scheme://`` otherwise."""
    return path if _is_local(fs) else fs.unstrip_protocol(path)


def read_bytes(uri: str) -> bytes:
    """The whole content of the object at ``uri``; errors name the URI."""
    fs, path = filesystem(uri)
    try:
        return fs.cat_file(path)
    except FileNotFoundError as exc:
        raise ObjectNotFound(f"{uri}: no such object") from exc
    except OSError as exc:
        raise StorageError(f"{uri}: cannot read ({exc})") from exc


def write_exclusive(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Create ``path`` with ``data`` whole, or raise :class:`AlreadyExists` and change nothing.

    This is what makes published versions immutable: two writers racing for the same path get
    exactly one winner, and a reader never sees a partial object. Object stores get a conditional
    PUT (``pipe_file(mode="create")``: ``If-None-Match: *`` on s3fs, also for multipart uploads);
    a backend without conditional writes falls back to fsspec's check-then-write, which is not
    race-free."""
    if _is_local(fs):
        _local_write(path, data, exclusive=True)
        return
    for attempt in range(_CONFLICT_RETRIES + 1):
        try:
            fs.pipe_file(path, data, mode="create")
            return
        except FileExistsError as exc:
            raise AlreadyExists(f"{uri_of(fs, path)}: already exists") from exc
        except OSError as exc:
            # S3 answers 409 ConditionalRequestConflict while a competing conditional write to
            # the same key is in flight; AWS says retry, and the retry gets 412 or succeeds.
            if "ConditionalRequestConflict" not in str(exc) or attempt == _CONFLICT_RETRIES:
                raise StorageError(f"{uri_of(fs, path)}: cannot write ({exc})") from exc
            log.debug("conditional write conflict on %s; retrying", uri_of(fs, path))
            time.sleep(0.05 * 2**attempt)


def write_atomic(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write ``path`` whole, replacing any previous object: readers see the old or the new
    content, never a mix (for outputs that a retried task may legitimately rewrite)."""
    if _is_local(fs):
        _local_write(path, data, exclusive=False)
        return
    try:
        fs.pipe_file(path, data)
    except OSError as exc:
        raise StorageError(f"{uri_of(fs, path)}: cannot write ({exc})") from exc


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def _local_write(path: str, data: bytes, *, exclusive: bool) -> None:
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".tmp-{uuid.uuid4().hex}-{os.path.basename(path)}")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            os.link(tmp, path)
        else:
            os.replace(tmp, path)
    except FileExistsError as exc:
        raise AlreadyExists(f"{path}: already exists") from exc
    except OSError as exc:
        raise StorageError(f"{path}: cannot write ({exc.strerror or exc})") from exc
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)

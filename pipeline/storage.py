"""Where the store is, and the few write primitives every command needs on any fsspec filesystem.

The catalog and the manifests are only correct if an object is never half-written and, where it
must be, never overwritten. Those two guarantees are made here, once, per filesystem kind:

- local (and any mounted shared disk): data goes to a temporary file in the target directory,
  then ``os.link`` (exclusive: fails if the target exists) or ``os.replace`` (overwrite) makes it
  visible in one atomic step;
- object stores (S3, GCS, ...): a single PUT is atomic by itself; exclusivity is the store's
  conditional create (s3fs sends ``If-None-Match: *`` and reports a taken key as
  ``FileExistsError``).

No object-store call may hang: every S3 filesystem made here has connect and read timeouts and a
bounded number of attempts (:class:`S3Timeouts`, from ``$PST_S3_*``), so a stalled endpoint
becomes an error naming the object within a known time.
"""

from __future__ import annotations

import logging
import math
import os
import time
import uuid
from dataclasses import asdict, dataclass, fields
from typing import ClassVar

import fsspec
from aiobotocore.session import AioSession
from botocore.exceptions import BotoCoreError
from fsspec.implementations.local import LocalFileSystem

__all__ = [
    "BACKEND_ERRORS",
    "DEFAULT_STORE",
    "STORE_ENV",
    "AlreadyExists",
    "ObjectNotFound",
    "S3Timeouts",
    "StorageError",
    "filesystem",
    "join",
    "read_bytes",
    "resolve_store",
    "temporary_name",
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


@dataclass(frozen=True)
class S3Timeouts:
    """How long an S3 call may take: ``connect`` and ``read`` (seconds without a byte) per
    attempt, and ``attempts`` in all (botocore's standard retry mode, with backoff). One call
    therefore fails within about ``attempts * (connect + read)`` seconds plus backoff, never
    hangs. Read from the environment by every process (workers too), set by the CLI's flags."""

    connect: float = 10.0
    read: float = 60.0
    attempts: int = 3

    ENV: ClassVar[dict[str, str]] = {
        "connect": "PST_S3_CONNECT_TIMEOUT",
        "read": "PST_S3_READ_TIMEOUT",
        "attempts": "PST_S3_ATTEMPTS",
    }

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise StorageError(f"${self.ENV[f.name]}: {f.name} must be a positive number, got {value!r}")
        if not isinstance(self.attempts, int):
            raise StorageError(f"${self.ENV['attempts']}: attempts must be a whole number, got {self.attempts!r}")

    @classmethod
    def from_env(cls) -> "S3Timeouts":
        values: dict[str, float | int] = {}
        for f in fields(cls):
            raw = os.environ.get(cls.ENV[f.name])
            if raw:
                try:
                    values[f.name] = int(raw) if f.name == "attempts" else float(raw)
                except ValueError:
                    raise StorageError(f"${cls.ENV[f.name]}: not a number: {raw!r}") from None
        return cls(**values)

    def env(self) -> dict[str, str]:
        """These settings as the environment variables :meth:`from_env` reads."""
        return {self.ENV[k]: str(v) for k, v in asdict(self).items()}

    def storage_options(self) -> dict[str, object]:
        """s3fs constructor options (botocore's ``Config``) for these settings."""
        return {
            "config_kwargs": {
                "connect_timeout": self.connect,
                "read_timeout": self.read,
                "retries": {"max_attempts": self.attempts, "mode": "standard"},
            }
        }


_S3_PROTOCOLS = ("s3", "s3a")


def _session_without_expect_continue() -> AioSession:
    """A botocore session that sends no ``Expect: 100-continue``. botocore puts it on every
    upload, and aiohttp then waits for the interim response with no timeout at all, so an
    endpoint that stalls there would hang a PUT forever whatever the read timeout. Without it,
    the body (a photo, a manifest part) is sent at once and the read timeout covers the wait
    for the answer."""
    session = AioSession()
    session.register("before-send.s3", _without_expect_continue)
    return session


def _without_expect_continue(request: object, **_: object) -> None:
    request.headers.pop("Expect", None)  # type: ignore[attr-defined]


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
    protocol, _ = fsspec.core.split_protocol(uri)
    s3 = protocol in _S3_PROTOCOLS
    try:
        fs, path = fsspec.core.url_to_fs(uri, **(S3Timeouts.from_env().storage_options() if s3 else {}))
    except (ValueError, ImportError) as exc:  # unknown scheme, or its fsspec backend not installed
        raise StorageError(f"{uri}: cannot open ({exc})") from exc
    if s3:
        # s3fs retries a failed call (botocore's attempts included) 5 more times by default:
        # with botocore's attempts that multiplies into minutes of a stalled endpoint.
        fs.retries = 1
        if fs.session is None:  # a fresh instance (fsspec caches them): before its first call
            fs.session = _session_without_expect_continue()
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


def temporary_name() -> str:
    """A hidden, unique name for a file that is renamed once whole. Fixed length (37 bytes), so
    any name valid in the directory can be written through it (NAME_MAX is 255 bytes)."""
    return f".tmp-{uuid.uuid4().hex}"


def _local_write(path: str, data: bytes, *, exclusive: bool) -> None:
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, temporary_name())
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

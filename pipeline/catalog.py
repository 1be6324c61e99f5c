"""The style catalog: trained bases and styles in the store, the contract between ``train`` and
``apply``.

This module is the one place that knows the store layout::

    bases/<base_id>/weights.safetensors   shared conv weights; base_id = content digest
    bases/<base_id>/meta.json
    styles/<name>/<version>/norm.safetensors   one style (norm params) on one base
    styles/<name>/<version>/meta.json

Every object is created exclusively (never overwritten), tensors first and ``meta.json`` last, so
a version without ``meta.json`` is incomplete and invisible, and concurrent publishers of one
style get distinct versions. Reads check the tensor file's sha256 against ``meta.json``, a
base's tensors against its id (their digest), and every field the catalog writes into a
``meta.json``; reads are capped in size, so a hostile store cannot make a reader allocate more
than :data:`MAX_META_BYTES` / :data:`MAX_TENSOR_BYTES` per object.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import version as _package_version
from typing import Any, Callable

import torch

from photostyle.weights import dumps, loads, tensors_digest
from pipeline.names import InvalidName, is_valid_name, validate_name
from pipeline.storage import (
    AlreadyExists,
    ObjectNotFound,
    filesystem,
    join,
    resolve_store,
    uri_of,
    write_exclusive,
)

__all__ = [
    "BaseNotFound",
    "Catalog",
    "CatalogError",
    "ChecksumError",
    "MAX_META_BYTES",
    "MAX_TENSOR_BYTES",
    "StyleInfo",
    "StyleNotFound",
    "StyleRef",
    "parse_spec",
]

log = logging.getLogger(__name__)

_VERSION_RE = re.compile(r"v([1-9][0-9]*)")
_BASE_ID_RE = re.compile(r"[0-9a-f]{16}")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")

BASES = "bases"
STYLES = "styles"
BASE_TENSORS = "weights.safetensors"
STYLE_TENSORS = "norm.safetensors"
META = "meta.json"

# Keys the catalog writes into meta.json; a caller passing one would be silently contradicted.
_RESERVED = frozenset({"name", "version", "base_id", "sha256", "size", "created", "package_version"})
# Enough for far more concurrent publishers of one name than a cluster will ever run.
_MAX_PUBLISH_ATTEMPTS = 64
# Reads are capped: a meta.json holds settings and a few numbers (a few KB); a base's tensors are
# bounded by photostyle.architecture.MAX_PARAMETERS (32 MB of float32).
MAX_META_BYTES = 1 << 20
MAX_TENSOR_BYTES = 64 << 20


class CatalogError(Exception):
    """A catalog operation that cannot be done; the message says which object and why."""


class StyleNotFound(CatalogError, LookupError):
    """No complete version of the requested style in the store."""


class BaseNotFound(CatalogError, LookupError):
    """No complete base with the requested id in the store."""


class ChecksumError(CatalogError):
    """A tensor file whose sha256 differs from the one its ``meta.json`` recorded."""


@dataclass(frozen=True)
class StyleRef:
    """One immutable version of a style, and the base it was trained on."""

    name: str
    version: str
    base_id: str

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"

    def __str__(self) -> str:
        return self.spec


@dataclass(frozen=True)
class StyleInfo:
    """A line of ``styles list``: the latest version of one style, or why it cannot be read
    (``error``; the other fields are then None)."""

    name: str
    version: str
    base_id: str | None
    created: str | None
    size: int | None
    error: str | None = None


def parse_spec(spec: str) -> tuple[str, str | None]:
    """Split ``name`` or ``name@v3`` into (name, version or None), both validated."""
    name, sep, version = spec.partition("@")
    validate_name(name)
    if not sep:
        return name, None
    if not _VERSION_RE.fullmatch(version):
        raise InvalidName(f"invalid style version {version!r} in {spec!r}: expected v1, v2, ...")
    return name, version


def _version_number(version: str) -> int | None:
    m = _VERSION_RE.fullmatch(version)
    return int(m.group(1)) if m else None


class Catalog:
    """Bases and styles under one store URI (any fsspec filesystem)."""

    def __init__(self, store: str | None = None) -> None:
        self.uri = resolve_store(store)
        self.fs, self.root = filesystem(self.uri)

    def __repr__(self) -> str:
        return f"Catalog({self.uri!r})"

    # ---- layout -------------------------------------------------------------------------
    def _base_dir(self, base_id: str) -> str:
        return join(self.root, BASES, base_id)

    def _style_dir(self, name: str, version: str | None = None) -> str:
        return join(self.root, STYLES, name, version) if version else join(self.root, STYLES, name)

    def _uri(self, path: str) -> str:
        return uri_of(self.fs, path)

    # ---- bases --------------------------------------------------------------------------
    def has_base(self, base_id: str) -> bool:
        """Whether a complete base (``meta.json`` written) with this id is in the store."""
        self._check_base_id(base_id)
        self.fs.invalidate_cache(self._base_dir(base_id))
        return self.fs.exists(join(self._base_dir(base_id), META))

    def publish_base(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> str:
        """Store shared conv weights; returns their content-derived id. Publishing the same
        tensors again (from anywhere, concurrently or not) is a no-op."""
        base_id = tensors_digest(tensors)[:16]
        self._check_meta(meta, f"base {base_id}")
        if self.has_base(base_id):
            self.load_base(base_id)  # reuse only what really is this base (id, checksum, meta)
            log.info("base %s already in %s", base_id, self.uri)
            return base_id
        data = dumps(tensors)
        directory = self._base_dir(base_id)
        tensors_path = join(directory, BASE_TENSORS)
        try:
            write_exclusive(self.fs, tensors_path, data)
        except AlreadyExists:
            # Left by a publisher that crashed before meta.json, or one racing us: same id means
            # same tensors, but check rather than trust, and describe what is really there.
            data = self._read(tensors_path, MAX_TENSOR_BYTES)
            existing, _ = loads(data, source=self._uri(tensors_path))
            if tensors_digest(existing)[:16] != base_id:
                raise ChecksumError(f"checksum mismatch: {self._uri(tensors_path)} does not hold base {base_id}")
        record = self._meta_record(meta, data, base_id=base_id)
        try:
            write_exclusive(self.fs, join(directory, META), record)
        except AlreadyExists:
            log.info("base %s published concurrently in %s", base_id, self.uri)
        else:
            log.info("published base %s to %s", base_id, self.uri)
        return base_id

    def load_base(self, base_id: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The base's tensors (checksum verified) and its meta."""
        self._check_base_id(base_id)
        directory = self._base_dir(base_id)
        try:
            meta = self._read_meta(join(directory, META), base_id=base_id)
        except ObjectNotFound as exc:
            raise BaseNotFound(f"base {base_id} not found in store {self.uri}") from exc
        path = join(directory, BASE_TENSORS)
        tensors = self._load_tensors(path, meta)
        digest = tensors_digest(tensors)[:16]
        if digest != base_id:
            raise ChecksumError(
                f"base {base_id} in store {self.uri}: the tensors of {self._uri(path)} have the digest {digest}, "
                f"not the base's id; refusing to use it"
            )
        return tensors, meta

    def base_uri(self, base_id: str) -> str:
        """The folder of one base, as the user would write it (for messages)."""
        self._check_base_id(base_id)
        return self._uri(self._base_dir(base_id))

    # ---- styles -------------------------------------------------------------------------
    def publish_style(
        self, name: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any], *, base_id: str
    ) -> StyleRef:
        """Store a new immutable version of ``name`` trained on ``base_id``; returns it.

        The next free version is claimed by exclusively creating its tensor file; losing a race
        to a concurrent publisher just moves on to the following number."""
        validate_name(name)
        self._check_meta(meta, f"style {name!r}")
        if not self.has_base(base_id):
            raise BaseNotFound(f"cannot publish style {name!r}: base {base_id} not found in store {self.uri}")
        data = dumps(tensors)
        for _ in range(_MAX_PUBLISH_ATTEMPTS):
            numbers = [n for n in map(_version_number, self._version_dirs(name)) if n]
            version = f"v{max(numbers, default=0) + 1}"
            directory = self._style_dir(name, version)
            try:
                write_exclusive(self.fs, join(directory, STYLE_TENSORS), data)
            except AlreadyExists:
                log.debug("style %s@%s taken by a concurrent publisher; retrying", name, version)
                continue
            record = self._meta_record(meta, data, name=name, version=version, base_id=base_id)
            write_exclusive(self.fs, join(directory, META), record)
            log.info("published style %s@%s on base %s to %s", name, version, base_id, self.uri)
            return StyleRef(name, version, base_id)
        raise CatalogError(
            f"could not claim a version of style {name!r} in {self.uri} after "
            f"{_MAX_PUBLISH_ATTEMPTS} attempts: too many concurrent publishers"
        )

    def resolve(self, spec: str) -> StyleRef:
        """``name`` (the latest complete version) or ``name@v3`` (that version) to a StyleRef."""
        name, version = parse_spec(spec)
        if version is None:
            versions = self._complete_versions(name)
            if not versions:
                raise StyleNotFound(f"style {name!r} not found in store {self.uri}")
            version = versions[-1]
        try:
            meta = self._style_record(name, version)
        except ObjectNotFound as exc:
            known = ", ".join(self._complete_versions(name)) or "none"
            raise StyleNotFound(
                f"style {name}@{version} not found in store {self.uri} (versions: {known})"
            ) from exc
        return StyleRef(name, version, meta["base_id"])

    def style_meta(self, ref: StyleRef) -> dict[str, Any]:
        """The ``meta.json`` of one style version, its catalog fields checked."""
        return self._style_record(ref.name, ref.version)

    def _style_record(self, name: str, version: str) -> dict[str, Any]:
        return self._read_meta(join(self._style_dir(name, version), META), style=(name, version))

    def load_style(self, ref: StyleRef) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The style's norm tensors (checksum verified) and its meta."""
        directory = self._style_dir(ref.name, ref.version)
        try:
            meta = self.style_meta(ref)
        except ObjectNotFound as exc:
            raise StyleNotFound(f"style {ref.spec} not found in store {self.uri}") from exc
        return self._load_tensors(join(directory, STYLE_TENSORS), meta), meta

    def list_styles(self) -> list[StyleInfo]:
        """The latest complete version of every style, by name. A version whose ``meta.json``
        cannot be read is listed with its ``error``, so one bad entry hides no good one."""
        styles_dir = join(self.root, STYLES)
        self.fs.invalidate_cache(styles_dir)
        latest: dict[str, int] = {}
        for path in self.fs.find(styles_dir):
            parts = path[len(styles_dir) :].strip("/").split("/")
            if len(parts) != 3 or parts[2] != META or not is_valid_name(parts[0]):
                continue
            number = _version_number(parts[1])
            if number and number > latest.get(parts[0], 0):
                latest[parts[0]] = number
        infos = []
        for name, number in sorted(latest.items()):
            version = f"v{number}"
            try:
                meta = self._style_record(name, version)
            except (CatalogError, ObjectNotFound) as exc:
                infos.append(StyleInfo(name, version, None, None, None, error=str(exc)))
                continue
            infos.append(StyleInfo(name, version, meta["base_id"], meta["created"], meta["size"]))
        return infos

    # ---- internals ----------------------------------------------------------------------
    def _version_dirs(self, name: str) -> list[str]:
        """Every version directory of ``name``, complete or not (fresh listing: other processes
        publish too)."""
        directory = self._style_dir(name)
        self.fs.invalidate_cache(directory)
        try:
            entries = self.fs.ls(directory, detail=False)
        except FileNotFoundError:
            return []
        return [e.rstrip("/").rsplit("/", 1)[-1] for e in entries]

    def _complete_versions(self, name: str) -> list[str]:
        """Versions of ``name`` that have their ``meta.json``, oldest first (numerically)."""
        directory = self._style_dir(name)
        self.fs.invalidate_cache(directory)
        numbers = set()
        for path in self.fs.find(directory):
            parts = path[len(directory) :].strip("/").split("/")
            if len(parts) == 2 and parts[1] == META and (n := _version_number(parts[0])):
                numbers.add(n)
        return [f"v{n}" for n in sorted(numbers)]

    def _check_base_id(self, base_id: str) -> None:
        if not isinstance(base_id, str) or not _BASE_ID_RE.fullmatch(base_id):
            raise InvalidName(f"invalid base id {base_id!r}: expected 16 lower-case hex digits")

    @staticmethod
    def _check_meta(meta: dict[str, Any], what: str) -> None:
        """Refuse caller meta that could not be recorded faithfully, before anything is written."""
        clash = sorted(_RESERVED & meta.keys())
        if clash:
            raise CatalogError(f"meta for {what}: keys {clash} are written by the catalog; do not pass them")
        try:
            json.dumps(meta)
        except (TypeError, ValueError) as exc:
            raise CatalogError(f"meta for {what} is not JSON-serialisable: {exc}") from exc

    @staticmethod
    def _meta_record(meta: dict[str, Any], data: bytes, **identity: str) -> bytes:
        record = {
            **meta,
            **identity,
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "package_version": _package_version("photostyle"),
        }
        return json.dumps(record, indent=2, sort_keys=True).encode()

    def _read(self, path: str, limit: int) -> bytes:
        """The object at ``path``, refused if it is over ``limit`` bytes (at most ``limit`` + 1
        are ever read)."""
        try:
            data = self.fs.cat_file(path, start=0, end=limit + 1)
        except FileNotFoundError as exc:
            raise ObjectNotFound(f"{self._uri(path)}: no such object") from exc
        if len(data) > limit:
            raise CatalogError(f"{self._uri(path)}: over {limit:,} bytes, larger than any object the catalog writes")
        return data

    def _read_meta(
        self, path: str, *, base_id: str | None = None, style: tuple[str, str] | None = None
    ) -> dict[str, Any]:
        """A ``meta.json``, refused (naming it and the field) unless every field the catalog
        writes is there, well-formed, and agrees with where the file is."""
        uri = self._uri(path)
        data = self._read(path, MAX_META_BYTES)
        try:
            meta = json.loads(data)
        except (ValueError, RecursionError) as exc:  # RecursionError: absurdly nested JSON
            raise CatalogError(f"{uri}: not valid JSON ({exc})") from exc
        if not isinstance(meta, dict):
            raise CatalogError(f"{uri}: not a catalog meta.json (a JSON {type(meta).__name__}, not an object)")
        expected = {"base_id": base_id} if style is None else {"name": style[0], "version": style[1]}
        for field, check in _RECORD_FIELDS.items():
            if field in ("name", "version") and style is None:
                continue
            if field not in meta:
                raise CatalogError(f"{uri}: field {field!r} is missing")
            problem = check(meta[field])
            if problem:
                raise CatalogError(f"{uri}: field {field!r}: {problem}, got {_shown(meta[field])}")
            if expected.get(field) and meta[field] != expected[field]:
                raise CatalogError(f"{uri}: field {field!r} is {meta[field]!r}, but the file is that of {expected[field]!r}")
        return meta

    def _load_tensors(self, path: str, meta: dict[str, Any]) -> dict[str, torch.Tensor]:
        data = self._read(path, MAX_TENSOR_BYTES)
        actual = hashlib.sha256(data).hexdigest()
        if actual != meta["sha256"]:
            raise ChecksumError(
                f"checksum mismatch for {self._uri(path)}: sha256 is {actual}, "
                f"meta.json records {meta['sha256']}; refusing to load"
            )
        tensors, _ = loads(data, source=self._uri(path))
        return tensors


def _pattern(regex: re.Pattern[str], what: str) -> Callable[[Any], str | None]:
    return lambda v: None if isinstance(v, str) and regex.fullmatch(v) else f"expected {what}"


def _of_type(kind: type, what: str) -> Callable[[Any], str | None]:
    return lambda v: None if isinstance(v, kind) and not isinstance(v, bool) and v != "" else f"expected {what}"


# The fields the catalog writes into every meta.json (name and version: styles only), and what
# each must look like; a record failing one is refused, naming it.
_RECORD_FIELDS: dict[str, Callable[[Any], str | None]] = {
    "base_id": _pattern(_BASE_ID_RE, "16 lower-case hex digits"),
    "sha256": _pattern(_SHA256_RE, "64 lower-case hex digits"),
    "size": lambda v: None
    if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_TENSOR_BYTES
    else f"expected a byte count up to {MAX_TENSOR_BYTES:,}",
    "created": _of_type(str, "a time stamp (string)"),
    "package_version": _of_type(str, "a version string"),
    "name": _of_type(str, "a style name (string)"),
    "version": _pattern(_VERSION_RE, "v1, v2, ..."),
}


def _shown(value: Any) -> str:
    """A value for an error message, cut short (a hostile record may hold anything)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."

"""What ``apply`` works on: every photo under a folder or bucket prefix, or the URIs that a Parquet
or CSV manifest lists in a ``uri`` column, as one Arrow array of URIs.

Listing keeps what ``photostyle.imageio`` can decode (by extension, any case) and skips hidden
files and folders (a dot-prefixed name: editors' and sync tools' litter, and the temporary names
an interrupted local write leaves) and the output folder when it lies inside the input. For
millions of objects a manifest (e.g. made from an S3 Inventory) is faster than listing a prefix.

Reading one input (:func:`read_input`, in the workers) trusts nothing about what the name
points at: only regular files are read, never more than a size cap, and, under an input folder,
never through a symbolic link that leads outside it; a manifest's URIs are fetched only over the
schemes the job was configured with (:func:`refused_schemes`).
"""

from __future__ import annotations

import logging
import os
import re
import stat
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from fsspec.implementations.local import LocalFileSystem

from photostyle.imageio import EXTENSIONS
from pipeline.manifests import ManifestError
from pipeline.storage import BACKEND_ERRORS, ObjectNotFound, StorageError, filesystem, uri_of

__all__ = [
    "HTTP_SCHEMES",
    "MANIFEST_SUFFIXES",
    "OBJECT_STORE_SCHEMES",
    "URI_COLUMN",
    "InputRefused",
    "Inputs",
    "first_occurrences",
    "list_inputs",
    "read_input",
    "read_uri_manifest",
    "refused_schemes",
    "scheme_of",
]

log = logging.getLogger(__name__)

URI_COLUMN = "uri"
MANIFEST_SUFFIXES = (".parquet", ".csv")
_IMAGE_RE = r"\.(" + "|".join(sorted(re.escape(e.lstrip(".")) for e in EXTENSIONS)) + r")$"
_HIDDEN_RE = r"(^|/)\."
_ABSOLUTE_RE = r"^([A-Za-z][A-Za-z0-9+.-]*://|/)"
_SCHEME_RE = r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://"
HTTP_SCHEMES = frozenset({"http", "https"})
OBJECT_STORE_SCHEMES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"})  # fetched with the platform's credentials
_LOCAL_SCHEMES = {"file", "local"}
_FILE_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device", stat.S_IFDIR: "a folder", stat.S_IFSOCK: "a socket"}


class InputRefused(StorageError):
    """An input that is not read at all: not a regular file, too large, a symbolic link out of
    the input folder, or a scheme the job does not fetch. The message names it and why."""


@dataclass(frozen=True)
class Inputs:
    """Input URIs, and the folder they were listed from (``None`` for a manifest, whose URIs
    may repeat: deduplicating ten million strings costs more than doing it to the work list)."""

    uris: pa.Array | pa.ChunkedArray
    root: str | None


def list_inputs(input_uri: str, *, exclude: str | None = None) -> Inputs:
    """The photos of a folder/prefix (recursively, minus anything under ``exclude``) or of a
    ``.parquet``/``.csv`` URI manifest."""
    fs, path = filesystem(input_uri)
    fs.invalidate_cache(path)
    if path.lower().endswith(MANIFEST_SUFFIXES) and fs.isfile(path):
        return Inputs(read_uri_manifest(input_uri), None)
    if not fs.isdir(path):
        if fs.exists(path):
            raise StorageError(
                f"{input_uri}: a file, not a folder, a prefix or a manifest ({', '.join(MANIFEST_SUFFIXES)} "
                f"with a {URI_COLUMN!r} column)"
            )
        raise ObjectNotFound(f"{input_uri}: no such folder, prefix or manifest")
    root = uri_of(fs, path)
    found = pa.array(fs.find(path), pa.string())
    rel = pc.utf8_slice_codeunits(found, len(path) + 1)
    keep = pc.and_(
        pc.match_substring_regex(rel, _IMAGE_RE, ignore_case=True),
        pc.invert(pc.match_substring_regex(rel, _HIDDEN_RE)),
    )
    if exclude is not None and exclude.startswith(root + "/"):
        inside = exclude[len(root) + 1 :] + "/"
        keep = pc.and_(keep, pc.invert(pc.starts_with(rel, inside)))
    uris = pc.binary_join_element_wise(root, pc.filter(rel, keep), "/")
    log.info("found %d photos among %d objects under %s", len(uris), len(found), root)
    return Inputs(uris, root)


def read_uri_manifest(uri: str) -> pa.Array | pa.ChunkedArray:
    """The URIs of a Parquet or CSV file's ``uri`` column, as listed.

    Refused, naming the file (and the row, counted from 1): no such column, non-string values,
    empty values, and relative paths (a URI must say where it is: ``scheme://`` or ``/``)."""
    fs, path = filesystem(uri)
    where = f"input manifest {uri}"
    try:
        if path.lower().endswith(".csv"):
            with fs.open(path, "rb") as f:
                header = pacsv.open_csv(f).schema.names
                if URI_COLUMN not in header:
                    raise ManifestError(f"{where}: no {URI_COLUMN!r} column (found: {', '.join(header) or 'none'})")
            with fs.open(path, "rb") as f:
                options = pacsv.ConvertOptions(include_columns=[URI_COLUMN], column_types={URI_COLUMN: pa.string()})
                column = pacsv.read_csv(f, convert_options=options)[URI_COLUMN]
        else:
            with fs.open(path, "rb") as f:
                names = pq.ParquetFile(f).schema_arrow.names
            if URI_COLUMN not in names:
                raise ManifestError(f"{where}: no {URI_COLUMN!r} column (found: {', '.join(names) or 'none'})")
            # no pre-buffering: 10 M URIs then peak ~100 MB lower, as fast
            column = pq.read_table(path, filesystem=fs, columns=[URI_COLUMN], pre_buffer=False)[URI_COLUMN]
    except FileNotFoundError as exc:
        raise ManifestError(f"{where}: no such file") from exc
    except (pa.ArrowException, OSError) as exc:
        raise ManifestError(f"{where}: not a readable {path.rsplit('.', 1)[-1].upper()} file ({exc})") from exc

    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise ManifestError(f"{where}: column {URI_COLUMN!r} must hold strings, not {column.type}")
    empty = pc.fill_null(pc.equal(pc.utf8_length(column), 0), True)
    first = pc.index(empty, True).as_py()
    if first >= 0:
        raise ManifestError(f"{where}: row {first + 1}: empty {URI_COLUMN!r}")
    first = pc.index(pc.match_substring_regex(column, _ABSOLUTE_RE), False).as_py()
    if first >= 0:
        raise ManifestError(
            f"{where}: row {first + 1}: {column[first].as_py()!r} is not absolute (use scheme:// or a path from /)"
        )
    return column


def first_occurrences(uris: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """``uris`` without repeats, keeping each one's first place (a manifest may list a URI twice).

    By sorting rather than hashing: at 5 M URIs Arrow's hash-based ``unique`` peaks near 1 GB,
    a stable sort and a neighbour comparison at about 0.25 GB, in under a second."""
    if len(uris) < 2:
        return uris
    order = pc.sort_indices(uris)  # stable: the first occurrence of a URI comes first
    ordered = uris.take(order)
    repeats = pc.filter(order[1:], pc.equal(ordered[1:], ordered[:-1]))
    del ordered
    if not len(repeats):
        return uris
    keep = np.ones(len(uris), dtype=bool)
    keep[repeats.to_numpy()] = False
    return uris.filter(pa.array(keep))


def scheme_of(uri: str) -> str:
    """The scheme of a URI, ``file`` for a plain path (and for ``local://``)."""
    found = re.match(_SCHEME_RE, uri)
    scheme = found.group("scheme").lower() if found else "file"
    return "file" if scheme in _LOCAL_SCHEMES else scheme


def refused_schemes(uris: pa.Array | pa.ChunkedArray, allowed: set[str]) -> pa.Table:
    """``input_uri, error`` of the URIs whose scheme (:func:`scheme_of`) is not in ``allowed``:
    a manifest may list anything, and workers must not fetch, say, internal ``http://``
    addresses because a manifest says so.

    One boolean pass over all URIs; schemes are only extracted from the refused ones."""
    prefixes = [f"{re.escape(s)}://" for s in sorted(allowed | (_LOCAL_SCHEMES if "file" in allowed else set()))]
    fetched = "^(" + "|".join(prefixes) + ")" + ("|^/" if "file" in allowed else "")
    bad = pc.invert(pc.match_substring_regex(uris, fetched, ignore_case=True))
    if not pc.any(bad).as_py():
        return pa.table({"input_uri": pa.array([], pa.string()), "error": pa.array([], pa.string())})
    uris = pc.filter(uris, bad)
    schemes = pc.struct_field(pc.extract_regex(uris, r"^(?P<s>[A-Za-z][A-Za-z0-9+.-]*://)?"), [0])
    schemes = pc.utf8_lower(pc.replace_substring_regex(schemes, "://$", ""))
    schemes = pc.if_else(pc.is_in(schemes, value_set=pa.array(["", *sorted(_LOCAL_SCHEMES)])), "file", schemes)
    bad = pc.invert(pc.is_in(schemes, value_set=pa.array(sorted(allowed), pa.string())))
    refused, scheme = pc.filter(uris, bad), pc.filter(schemes, bad)
    hint = pc.if_else(
        pc.is_in(scheme, value_set=pa.array(sorted(HTTP_SCHEMES))),
        pa.scalar(" without --allow-http"),
        pa.scalar(f" (only {', '.join(sorted(allowed))})"),
    )
    error = pc.binary_join_element_wise(refused, ": scheme '", scheme, "' is not fetched", hint, "")
    return pa.table({"input_uri": refused, "error": error})


def read_input(uri: str, *, root: str | None, max_bytes: int) -> bytes:
    """The bytes of one input photo, refusing (:class:`InputRefused`, naming it) anything but a
    regular file of at most ``max_bytes``, before reading it.

    Locally the file is opened non-blocking (a FIFO named ``x.jpg`` cannot stall a worker even
    if it replaces the file after the check) and checked again on the open descriptor. Under an
    input folder ``root``, a path that resolves outside it through a symbolic link is refused; a
    manifest's paths are followed where they point (its author could list the target anyway).
    On object stores at most ``max_bytes + 1`` bytes are requested."""
    fs, path = filesystem(uri)
    if isinstance(fs, LocalFileSystem):
        return _read_local(uri, path, root, max_bytes)
    try:
        data = fs.cat_file(path, start=0, end=max_bytes + 1)
    except FileNotFoundError as exc:
        raise ObjectNotFound(f"{uri}: no such object") from exc
    except BACKEND_ERRORS as exc:
        raise StorageError(f"{uri}: cannot read ({exc})") from exc
    if len(data) > max_bytes:
        raise InputRefused(f"{uri}: larger than the input size cap of {max_bytes} bytes")
    return data


def _read_local(uri: str, path: str, root: str | None, max_bytes: int) -> bytes:
    try:
        if root is not None:
            real, inside = os.path.realpath(path), os.path.realpath(root)
            if not real.startswith(inside.rstrip("/") + "/"):
                raise InputRefused(f"{uri}: a symbolic link to {real}, outside the input folder {root}")
        _check_regular(uri, os.stat(path), max_bytes)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError as exc:
        raise ObjectNotFound(f"{uri}: no such file") from exc
    except InputRefused:
        raise
    except OSError as exc:
        raise StorageError(f"{uri}: cannot read ({exc.strerror or exc})") from exc
    with os.fdopen(fd, "rb") as f:
        _check_regular(uri, os.fstat(f.fileno()), max_bytes)  # the file opened is the file checked
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise InputRefused(f"{uri}: larger than the input size cap of {max_bytes} bytes (it grew while read)")
    return data


def _check_regular(uri: str, st: os.stat_result, max_bytes: int) -> None:
    kind = stat.S_IFMT(st.st_mode)
    if kind != stat.S_IFREG:
        raise InputRefused(f"{uri}: not a regular file ({_FILE_KINDS.get(kind, 'a special file')}); only files are read")
    if st.st_size > max_bytes:
        raise InputRefused(f"{uri}: {st.st_size} bytes, larger than the input size cap of {max_bytes} bytes")

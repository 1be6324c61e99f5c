"""The outputs manifest: ``apply``'s record of what it did, one row per input photo per attempt, in
part files under ``<output>/_manifest/``. Part files are written whole and never appended to, so
concurrent or crashed runs cannot corrupt each other; "what is done" is derived from all parts with
Arrow compute, so it scales to millions of rows.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from pipeline.manifests import STATUS_ERROR, STATUS_OK, ManifestError
from pipeline.names import InvalidName, validate_name
from pipeline.storage import AlreadyExists, filesystem, join, uri_of, write_exclusive

__all__ = [
    "MANIFEST_DIR",
    "OUTPUTS_SCHEMA",
    "QUARANTINE_DIR",
    "OutputsScan",
    "compact_run",
    "done_filter",
    "done_slices",
    "iter_outputs",
    "pending_inputs",
    "quarantine_unreadable",
    "read_outputs",
    "scan_outputs",
    "write_outputs_part",
]

log = logging.getLogger(__name__)

MANIFEST_DIR = "_manifest"
QUARANTINE_DIR = "quarantine"  # under MANIFEST_DIR: unreadable parts moved aside by status --repair

OUTPUTS_SCHEMA = pa.schema(
    [
        pa.field("input_uri", pa.string(), nullable=False),
        pa.field("output_uri", pa.string()),  # null when status is "error"
        pa.field("style", pa.string(), nullable=False),
        pa.field("style_version", pa.string(), nullable=False),
        pa.field("base_id", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),  # null when status is "ok"
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("seconds", pa.float64()),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("finished_at", pa.timestamp("us", tz="UTC"), nullable=False),
        # Where the photo was processed (null for inputs refused while planning, and in manifests
        # written before these columns existed: a part's missing columns read as nulls).
        pa.field("node_id", pa.string()),  # the Ray node (hex id, as ``ray list nodes`` shows it)
        pa.field("device", pa.string()),  # the stylise actor's torch device, e.g. "cpu", "cuda:0"
        # apply --strength (0..1) the result was made with; null in parts written before it
        # existed, which were all at full strength (see done_filter)
        pa.field("strength", pa.float64()),
    ]
)

DONE_SLICE_ROWS = 500_000  # done URIs hashed at a time when planning (memory, not correctness)

_PART_PREFIX = "part-"
_PART_SUFFIX = ".parquet"
_COMPACTED_KEY = "compacted"  # never a batch part's key (those are hex digests)


def write_outputs_part(output_uri: str, rows: pa.Table | Iterable[Mapping[str, Any]]) -> str:
    """Commit rows of one run as a part file under ``<output>/_manifest/``; returns its URI.

    The rows must share one ``run_id``. The file is created whole and exclusively, never appended
    to or replaced, and its name is derived from the run and the rows' inputs: a task that Ray
    retries after it committed (its worker died before reporting) finds its part already there
    and adds nothing, so no photo gets two rows for one attempt."""
    table = _conform_outputs(rows, output_uri)
    run_ids = pc.unique(table["run_id"]).to_pylist()
    if len(run_ids) != 1:
        raise ManifestError(f"outputs manifest {output_uri}: one part holds one run, got run ids {run_ids}")
    try:
        run_id = validate_name(run_ids[0], what="run id")
    except InvalidName as exc:
        raise ManifestError(f"outputs manifest {output_uri}: {exc}") from exc

    fs, root = filesystem(output_uri)
    path = _part_path(join(root, MANIFEST_DIR), run_id, _inputs_key(table["input_uri"]))
    try:
        _write_part(fs, path, table)
    except AlreadyExists:
        log.warning("manifest part %s was already committed (a retried task); not written again", uri_of(fs, path))
        return uri_of(fs, path)
    log.info("wrote %d manifest rows to %s", table.num_rows, uri_of(fs, path))
    return uri_of(fs, path)


def _part_path(directory: str, run_id: str, key: str) -> str:
    return join(directory, f"{_PART_PREFIX}{run_id}-{key}{_PART_SUFFIX}")


def _write_part(fs: Any, path: str, table: pa.Table) -> None:
    """Create a part file whole and exclusively (``AlreadyExists`` if it is there)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    write_exclusive(fs, path, sink.getvalue().to_pybytes())


def _inputs_key(uris: pa.ChunkedArray) -> str:
    """A name for a set of input URIs: the same set, in any order, gets the same key."""
    digest = hashlib.sha256()
    for uri in sorted(uris.to_pylist()):
        digest.update(uri.encode() + b"\0")
    return digest.hexdigest()[:32]


def _conform_outputs(rows: pa.Table | Iterable[Mapping[str, Any]], output_uri: str) -> pa.Table:
    """Rows as a table of exactly OUTPUTS_SCHEMA, refusing anything that would make the
    manifest lie (missing fields, unknown status, ok without output, error without message)."""
    where = f"outputs manifest {output_uri}"
    try:
        if isinstance(rows, pa.Table):
            extra = sorted(set(rows.column_names) - set(OUTPUTS_SCHEMA.names))
            if extra:
                raise ManifestError(f"{where}: unknown column(s) {', '.join(extra)}")
            missing = [n for n in OUTPUTS_SCHEMA.names if n not in rows.column_names]
            if missing:
                raise ManifestError(f"{where}: missing column(s) {', '.join(missing)}")
            table = rows.select(OUTPUTS_SCHEMA.names).cast(OUTPUTS_SCHEMA)
        else:
            table = pa.Table.from_pylist(list(rows), schema=OUTPUTS_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ManifestError(f"{where}: rows do not fit the outputs schema ({exc})") from exc
    if table.num_rows == 0:
        raise ManifestError(f"{where}: no rows to write")
    for field in OUTPUTS_SCHEMA:
        if not field.nullable and table[field.name].null_count:
            raise ManifestError(f"{where}: {table[field.name].null_count} row(s) without {field.name!r}")
    status = table["status"]
    if not pc.all(pc.is_in(status, value_set=pa.array([STATUS_OK, STATUS_ERROR]))).as_py():
        got = pc.unique(status).to_pylist()
        raise ManifestError(f"{where}: status must be {STATUS_OK!r} or {STATUS_ERROR!r}, got {got}")
    if pc.any(pc.and_(pc.equal(status, STATUS_OK), pc.is_null(table["output_uri"]))).as_py():
        raise ManifestError(f"{where}: a row with status {STATUS_OK!r} has no output_uri")
    if pc.any(pc.and_(pc.equal(status, STATUS_ERROR), pc.is_null(table["error"]))).as_py():
        raise ManifestError(f"{where}: a row with status {STATUS_ERROR!r} has no error message")
    return table


def read_outputs(
    output_uri: str, *, columns: list[str] | None = None, filter: pc.Expression | None = None
) -> pa.Table:
    """All readable part files' rows (only ``columns``, only rows matching ``filter``: both pushed
    down to the scan, so memory follows the result, not the manifest). Empty when nothing was
    written. Unreadable parts are skipped with a warning naming each (see :func:`scan_outputs`)."""
    return scan_outputs(output_uri, columns=columns, filter=filter).table


@dataclass(frozen=True)
class OutputsScan:
    """Rows read from an outputs manifest, and the part files that could not be read
    (``(uri, reason)``), which contributed nothing."""

    table: pa.Table
    unreadable: list[tuple[str, str]]


def scan_outputs(
    output_uri: str, *, columns: list[str] | None = None, filter: pc.Expression | None = None
) -> OutputsScan:
    """:func:`read_outputs`, also saying which part files were unreadable and skipped."""
    dataset, unreadable = _outputs_dataset(output_uri)
    if dataset is None:
        empty = OUTPUTS_SCHEMA.empty_table()
        return OutputsScan(empty.select(columns) if columns else empty, unreadable)
    try:
        return OutputsScan(dataset.to_table(columns=columns, filter=filter), unreadable)
    except (pa.ArrowException, OSError) as exc:
        raise ManifestError(f"outputs manifest {output_uri}: cannot read part files ({exc})") from exc


def iter_outputs(output_uri: str, columns: list[str], filter: pc.Expression | None = None) -> Iterator[pa.RecordBatch]:
    """The readable part files' rows, a record batch at a time, with little read-ahead (for
    scans whose memory must not follow the manifest's size)."""
    dataset, _ = _outputs_dataset(output_uri)
    if dataset is None:
        return
    try:
        yield from dataset.to_batches(columns=columns, filter=filter, batch_readahead=2, fragment_readahead=1)
    except (pa.ArrowException, OSError) as exc:
        raise ManifestError(f"outputs manifest {output_uri}: cannot read part files ({exc})") from exc


def _outputs_dataset(output_uri: str) -> tuple[ds.Dataset | None, list[tuple[str, str]]]:
    """The live, readable part files as one Arrow dataset (None when there are none), and the
    unreadable ones with the reason.

    A part whose Parquet footer cannot be read (a stray or truncated file named like a part)
    would otherwise make every later ``apply`` and ``status`` on the folder fail. It is skipped
    with a warning instead: its rows, if it had any, do not count, so at worst photos it
    recorded as done are stylised again. Each footer is read once, in threads, and kept for
    the scan."""
    fs, root = filesystem(output_uri)
    directory = join(root, MANIFEST_DIR)
    paths = _live_parts(fs, directory)
    if not paths:
        return None, []
    try:
        dataset = ds.dataset(paths, schema=OUTPUTS_SCHEMA, format="parquet", filesystem=fs)
        fragments = list(dataset.get_fragments())
    except (pa.ArrowException, OSError) as exc:
        raise ManifestError(f"outputs manifest {uri_of(fs, directory)}: cannot read part files ({exc})") from exc
    with ThreadPoolExecutor(max_workers=min(16, len(fragments))) as pool:
        problems = list(pool.map(_footer_problem, fragments))
    unreadable = [(uri_of(fs, f.path), p) for f, p in zip(fragments, problems) if p is not None]
    for uri, problem in unreadable:
        log.warning(
            "outputs manifest part %s is unreadable and was skipped (%s); its rows do not count, so photos only it "
            "recorded are stylised again. `pst-pipeline status --output %s --repair` moves it to %s/",
            uri, problem, output_uri, QUARANTINE_DIR,
        )
    readable = [f for f, p in zip(fragments, problems) if p is None]
    if not readable:
        return None, unreadable
    return ds.FileSystemDataset(readable, OUTPUTS_SCHEMA, dataset.format, dataset.filesystem), unreadable


def _footer_problem(fragment: ds.ParquetFileFragment) -> str | None:
    """Why a part file's Parquet metadata cannot be read, or None (the metadata is then cached
    in the fragment for the scan)."""
    try:
        fragment.ensure_complete_metadata()
    except (pa.ArrowException, OSError) as exc:
        return str(exc)
    return None


def quarantine_unreadable(output_uri: str) -> list[tuple[str, str]]:
    """Move the unreadable part files of an outputs manifest into ``_manifest/quarantine/``
    (where no reader looks), returning ``(new uri, reason)`` of each. Readable parts are never
    touched; a moved part is kept, not deleted, for whoever wants to look at it."""
    _, unreadable = _outputs_dataset(output_uri)
    fs, root = filesystem(output_uri)
    quarantine = join(root, MANIFEST_DIR, QUARANTINE_DIR)
    moved = []
    for uri, problem in unreadable:
        _, path = filesystem(uri)
        target = join(quarantine, path.rsplit("/", 1)[-1])
        fs.makedirs(quarantine, exist_ok=True)
        fs.mv(path, target)
        log.warning("moved unreadable manifest part %s to %s", uri, uri_of(fs, target))
        moved.append((uri_of(fs, target), problem))
    return moved


def _live_parts(fs: Any, directory: str) -> list[str]:
    """The part files that count: all of them, except the batch parts of a run whose compacted
    part exists (left behind if compaction stopped before deleting them)."""
    parts = _list_parts(fs, directory)
    compacted = {run for _, run, key in parts if key == _COMPACTED_KEY}
    return [path for path, run, key in parts if run not in compacted or key == _COMPACTED_KEY]


def _list_parts(fs: Any, directory: str) -> list[tuple[str, str, str]]:
    """``(path, run_id, key)`` of every part file directly in ``directory`` (not in a subfolder
    such as the quarantine), freshly listed, sorted."""
    fs.invalidate_cache(directory)
    try:
        found = fs.find(directory)
    except FileNotFoundError:
        return []
    return sorted(
        (path, *name)
        for path in found
        if path.rsplit("/", 1)[0].rstrip("/") == directory.rstrip("/") and (name := _part_name(path)) is not None
    )


def _part_name(path: str) -> tuple[str, str] | None:
    """``(run_id, key)`` of a part file's name ``part-<run_id>-<key>.parquet``; None for anything
    else (temporary files of an interrupted write, stray objects)."""
    name = path.rsplit("/", 1)[-1]
    if not (name.startswith(_PART_PREFIX) and name.endswith(_PART_SUFFIX)):
        return None
    run_id, _, key = name[len(_PART_PREFIX) : -len(_PART_SUFFIX)].rpartition("-")
    return (run_id, key) if run_id and key else None


def compact_run(output_uri: str, run_id: str) -> str | None:
    """Merge a finished run's batch parts into one part file; returns its URI (None when the run
    wrote fewer than two parts).

    ``apply`` commits a part per batch, which is what makes a crash lose nothing, but a million
    photos would leave tens of thousands of small files for every later run to list and read.
    Only call this once every task of the run has finished: the compacted part supersedes all
    of the run's batch parts, then they are deleted. A crash in between loses and duplicates
    nothing (readers already ignore the superseded parts), and compacting again finishes it."""
    fs, root = filesystem(output_uri)
    directory = join(root, MANIFEST_DIR)
    mine = [(path, key) for path, run, key in _list_parts(fs, directory) if run == run_id]
    if len(mine) < 2:
        return None
    batches = [path for path, key in mine if key != _COMPACTED_KEY]
    target = _part_path(directory, run_id, _COMPACTED_KEY)
    if len(batches) == len(mine):  # else an earlier compaction wrote it and stopped before deleting
        table = ds.dataset(batches, schema=OUTPUTS_SCHEMA, format="parquet", filesystem=fs).to_table()
        _write_part(fs, target, table)
        log.info("compacted %d manifest parts (%d rows) of run %s into %s", len(batches), table.num_rows, run_id, uri_of(fs, target))
    fs.rm(batches)
    return uri_of(fs, target)


def done_filter(style: str, style_version: str, since: str = "", strength: float = 1.0) -> pc.Expression:
    """The one definition of "done": an ``ok`` row for this exact style version at this strength
    (another strength is another result; rows without one were made at full strength), from run
    ``since`` on (the run that last switched the output folder to this version, see
    ``pipeline.ownership``; rows before it describe files that were overwritten since)."""
    same_strength = pc.field("strength") == strength
    if strength == 1.0:
        same_strength = same_strength | pc.field("strength").is_null()
    return (
        (pc.field("status") == STATUS_OK)
        & (pc.field("style") == style)
        & (pc.field("style_version") == style_version)
        & (pc.field("run_id") >= since)
        & same_strength
    )


def done_slices(
    output_uri: str,
    style: str,
    style_version: str,
    since: str = "",
    *,
    strength: float = 1.0,
    slice_rows: int = DONE_SLICE_ROWS,
    columns: list[str] | None = None,
) -> Iterator[pa.Array | pa.Table]:
    """The ``input_uri`` of the done rows (:func:`done_filter`, at ``strength``), in slices of about
    ``slice_rows`` (duplicates possible: a photo redone with ``--force`` has several rows);
    with ``columns``, tables of those columns instead."""
    batches: list[pa.RecordBatch] = []
    rows = 0

    def flush() -> pa.Array | pa.Table:
        table = pa.Table.from_batches(batches).combine_chunks()
        return table if columns else table["input_uri"].combine_chunks()

    for batch in iter_outputs(output_uri, columns or ["input_uri"], done_filter(style, style_version, since, strength)):
        batches.append(batch)
        rows += batch.num_rows
        if rows >= slice_rows:
            yield flush()
            batches, rows = [], 0
    if rows:
        yield flush()


def pending_inputs(
    inputs: pa.Array | pa.ChunkedArray,
    output_uri: str,
    style: str,
    style_version: str,
    since: str = "",
    *,
    strength: float = 1.0,
    slice_rows: int = DONE_SLICE_ROWS,
) -> pa.Array | pa.ChunkedArray:
    """The ``inputs`` that are not done (:func:`done_filter`), in input order.

    A hash anti-join, one slice of the done set at a time: a hash set costs about 120 bytes per
    URI in Arrow, so holding every done URI of a 10 M-photo collection at once would cost more
    than the inputs themselves. Each slice's set is dropped before the next is built, so memory
    follows the inputs, not the manifest's history."""
    done = None
    for uris in done_slices(output_uri, style, style_version, since, strength=strength, slice_rows=slice_rows):
        found = pc.is_in(inputs, value_set=uris)
        done = found if done is None else pc.or_(done, found)
    return inputs if done is None else pc.filter(inputs, pc.invert(done))

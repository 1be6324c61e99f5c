"""The per-batch work of ``apply``, run inside Ray workers: read and decode, stylise, encode,
write and commit.

Batches are Arrow tables, one row per photo. A photo that fails at any step keeps its row with
an ``error`` message (starting with its URI) and skips the remaining steps, so one bad file
never fails a batch.

Memory follows the bytes in flight, not the number of photos: a batch of 32 photos at the
120 MP limit would be 11 GB decoded. On CPU workers (``process_and_commit``) each photo is
read, decoded, stylised, encoded and written before the next one is read, so a worker holds
one photo's pixels at a time. Between the stages of the GPU layout decoded pixels travel as raw
RGB bytes with their width and height, in blocks that end at :data:`DECODED_BYTES_PER_BLOCK`
(or at the batch size), and the GPU actor takes them one photo at a time.

Commit protocol: every result is written whole (temp file + rename locally, one PUT on object
stores), *then* one manifest part records exactly this batch. A crash before the part is
written leaves results without rows: the next run redoes them and overwrites them with
identical content. A crash after leaves nothing to redo. Before writing, each batch checks that
the output folder still belongs to its style version (``pipeline.ownership``).
A batch of a run that a newer one took over (a restarted driver) writes and commits nothing:
before writing photos and again before committing, it checks that its run still holds its lease
on the output (``pipeline.leases``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import ray
from PIL import Image

from photostyle import Base, Style, Stylizer
from photostyle.imageio import DEFAULT_MAX_PIXELS, Photo, decode, encode
from photostyle.lut_render import DEFAULT_LUT_SIZE
from pipeline.inputs import read_input
from pipeline.leases import GRACE_SECONDS, LeaseLost, RunLease
from pipeline.manifests import STATUS_ERROR, STATUS_OK
from pipeline.outputs import OutputLayout
from pipeline.outputs_manifest import write_outputs_part
from pipeline.ownership import Owner, OutputTaken, check_owner
from pipeline.storage import filesystem, join, write_atomic

__all__ = [
    "DECODED_BYTES_PER_BLOCK",
    "SUMMARY_SCHEMA",
    "CommitSpec",
    "DecodeSpec",
    "StylizeActor",
    "process_and_commit",
    "read_and_decode",
    "read_photo",
    "stylize_batch",
    "write_and_commit",
]

log = logging.getLogger(__name__)

# Columns between the stages (besides input_uri and error).
DECODED_SCHEMA = pa.schema(
    [
        pa.field("input_uri", pa.string(), nullable=False),
        pa.field("pixels", pa.large_binary()),  # RGB, 8-bit, row-major; null after an error
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("icc_profile", pa.binary()),
        pa.field("exif", pa.binary()),
        pa.field("error", pa.string()),
        pa.field("model_seconds", pa.float64()),  # null until stylised
        pa.field("node_id", pa.string()),  # where it was stylised; null until then
        pa.field("device", pa.string()),
    ]
)


# What each committed batch reports to the driver.
SUMMARY_SCHEMA = pa.schema(
    [
        pa.field("ok", pa.int64()),
        pa.field("errors", pa.int64()),
        pa.field("model_seconds", pa.float64()),
        pa.field("fatal", pa.string()),
    ]
)


# The input size cap: an uncompressed 16-bit RGBA file of the pixel limit (the largest encoding
# of a photo the decoder accepts), plus room for metadata. Applied before any byte is read.
_MAX_BYTES_PER_PIXEL = 8
_METADATA_BYTES = 16 * 2**20
DECODED_BYTES_PER_BLOCK = 256 * 2**20  # GPU layout: decoded pixels per block between stages


@dataclass(frozen=True)
class DecodeSpec:
    """How inputs are read: ``max_side`` refuses photos whose long side is larger; ``input_root``
    is the input folder (None for a manifest), which symbolic links must not lead out of;
    ``block_bytes`` ends a decoded block (GPU layout)."""

    max_side: int | None = None
    input_root: str | None = None
    block_bytes: int = DECODED_BYTES_PER_BLOCK

    @property
    def max_pixels(self) -> int:
        return min(DEFAULT_MAX_PIXELS, self.max_side**2) if self.max_side else DEFAULT_MAX_PIXELS

    @property
    def max_bytes(self) -> int:
        return self.max_pixels * _MAX_BYTES_PER_PIXEL + _METADATA_BYTES


@dataclass(frozen=True)
class CommitSpec:
    """Where and how results are written, and what their manifest rows say."""

    layout: OutputLayout
    quality: int
    run_id: str
    owner: Owner
    base_id: str
    strength: float = 1.0


def _failure(uri: str, exc: Exception) -> str:
    """An error message that starts with the input's URI, whatever raised it."""
    text = str(exc)
    return text if text.startswith(uri) else f"{uri}: {type(exc).__name__}: {text}"


def read_photo(uri: str, spec: DecodeSpec) -> Photo:
    """One input, read within the size cap and decoded within the pixel limit and ``max_side``."""
    photo = decode(read_input(uri, root=spec.input_root, max_bytes=spec.max_bytes), name=uri, max_pixels=spec.max_pixels)
    width, height = photo.size
    if spec.max_side and max(width, height) > spec.max_side:
        raise ValueError(f"{uri}: image too large: {width}x{height} exceeds --max-side {spec.max_side}")
    return photo


def read_and_decode(batch: pa.Table, spec: DecodeSpec) -> Iterator[pa.Table]:
    """``input_uri`` -> upright RGB pixels plus ICC/EXIF, or an error per photo (GPU layout), in
    tables that end once they hold ``spec.block_bytes`` of pixels (a larger photo goes alone)."""
    rows: list[dict[str, Any]] = []
    held = 0
    for uri in batch["input_uri"].to_pylist():
        row: dict[str, Any] = {"input_uri": uri}
        try:
            photo = read_photo(uri, spec)
            width, height = photo.size
            row.update(pixels=photo.image.tobytes(), width=width, height=height, icc_profile=photo.icc_profile, exif=photo.exif)
            held += len(row["pixels"])
        except Exception as exc:  # any failure is this photo's, never the batch's
            row["error"] = _failure(uri, exc)
            log.debug("read/decode failed", exc_info=True)
        rows.append(row)
        if held >= spec.block_bytes:
            yield pa.Table.from_pylist(rows, schema=DECODED_SCHEMA)
            rows, held = [], 0
    if rows:
        yield pa.Table.from_pylist(rows, schema=DECODED_SCHEMA)


def stylize_batch(stylizer: Stylizer, batch: pa.Table) -> pa.Table:
    """Replace each decoded photo's pixels by the stylised ones (same size), timing the model."""
    pixels, seconds, errors = [], [], batch["error"].to_pylist()
    for i, (uri, data, width, height) in enumerate(
        zip(*(batch[c].to_pylist() for c in ("input_uri", "pixels", "width", "height")))
    ):
        if errors[i] is not None:
            pixels.append(None)
            seconds.append(None)
            continue
        try:
            out, took = _stylize_one(stylizer, Image.frombytes("RGB", (width, height), data))
            seconds.append(took)
            pixels.append(out.tobytes())
        except Exception as exc:  # e.g. out of GPU memory on one huge photo
            errors[i] = _failure(uri, exc)
            pixels.append(None)
            seconds.append(None)
            log.debug("stylise failed", exc_info=True)
    columns = {
        "pixels": pa.array(pixels, pa.large_binary()),
        "error": pa.array(errors, pa.string()),
        "model_seconds": pa.array(seconds, pa.float64()),
    }
    for name, column in columns.items():
        batch = batch.set_column(batch.schema.get_field_index(name), name, column)
    return batch


def _stylize_one(stylizer: Stylizer, image: Image.Image) -> tuple[Image.Image, float]:
    t0 = time.perf_counter()
    out = stylizer(image)
    return out, time.perf_counter() - t0


def write_and_commit(batch: pa.Table, spec: CommitSpec) -> pa.Table:
    """Encode and write every stylised photo of a decoded batch (GPU layout), then commit one
    manifest part for the whole batch (ok and error rows). Returns one :data:`SUMMARY_SCHEMA`
    row; ``fatal`` says why nothing could be committed (the job must stop)."""
    if (stopped := _cannot_write(spec)) is not None:
        return stopped
    fs, root = filesystem(spec.layout.output)
    targets = spec.layout.targets(batch["input_uri"])
    columns = (
        "input_uri", "pixels", "width", "height", "icc_profile", "exif", "error", "model_seconds", "node_id", "device",
    )  # fmt: skip
    values = zip(*(batch[c].to_pylist() for c in columns), *(targets[c].to_pylist() for c in ("path", "format")))
    rows = []
    for uri, data, width, height, icc, exif, error, seconds, node_id, device, path, fmt in values:
        if error is None:
            image = Image.frombytes("RGB", (width, height), data)
            error = _write_result(fs, root, spec, uri, path, fmt, image, icc, exif)
        rows.append(_row(spec, uri, path, error, width, height, seconds, node_id, device))
    return _commit(spec, rows, pc.sum(batch["model_seconds"]).as_py() or 0.0)


def process_and_commit(
    batch: pa.Table, stylizer: Stylizer, decode: DecodeSpec, spec: CommitSpec, *, node_id: str | None, device: str
) -> pa.Table:
    """Read, decode, stylise, encode and write each photo of a batch of ``input_uri`` in turn
    (CPU layout: one photo's pixels in memory at a time), then commit one manifest part.
    ``node_id`` (the Ray node this runs on) and ``device`` (the stylizer's) go into every row."""
    if (stopped := _cannot_write(spec)) is not None:
        return stopped
    fs, root = filesystem(spec.layout.output)
    uris = batch["input_uri"]
    targets = spec.layout.targets(uris)
    rows, model_seconds = [], 0.0
    for uri, path, fmt in zip(uris.to_pylist(), *(targets[c].to_pylist() for c in ("path", "format"))):
        width = height = seconds = error = None
        try:
            photo = read_photo(uri, decode)
            (width, height), icc, exif = photo.size, photo.icc_profile, photo.exif
            out, seconds = _stylize_one(stylizer, photo.image)
            del photo  # the input's pixels go before the result is encoded
            model_seconds += seconds
        except Exception as exc:  # this photo's failure, recorded in its row
            error = _failure(uri, exc)
            log.debug("read/decode/stylise failed", exc_info=True)
        if error is None:
            error = _write_result(fs, root, spec, uri, path, fmt, out, icc, exif)
            del out
        rows.append(_row(spec, uri, path, error, width, height, seconds, node_id, device))
    return _commit(spec, rows, model_seconds)


def _cannot_write(spec: CommitSpec) -> pa.Table | None:
    """A fatal summary when this batch must write nothing: the output folder belongs to another
    style version now (``pipeline.ownership``), or a newer run took it over (``pipeline.leases``)."""
    try:
        check_owner(spec.layout.output, spec.owner)
        RunLease(spec.layout.output, spec.run_id).check()
    except (OutputTaken, LeaseLost) as exc:
        return _fatal(str(exc))
    return None


def _write_result(
    fs: Any, root: str, spec: CommitSpec, uri: str, path: str, fmt: str, image: Image.Image, icc: bytes | None, exif: bytes | None
) -> str | None:
    """Encode and write one result; the error message, or None when it was written."""
    try:
        encoded = encode(image, format=fmt, quality=spec.quality, icc_profile=icc, exif=exif)
        write_atomic(fs, join(root, path), encoded)
    except Exception as exc:  # this photo's failure, recorded in its row
        log.debug("write failed", exc_info=True)
        return f"{uri}: cannot write {join(spec.layout.output, path)}: {exc}"
    return None


def _row(
    spec: CommitSpec,
    uri: str,
    path: str,
    error: str | None,
    width: int | None,
    height: int | None,
    seconds: float | None,
    node_id: str | None,
    device: str | None,
) -> dict[str, Any]:
    return {
        "input_uri": uri,
        "output_uri": join(spec.layout.output, path) if error is None else None,
        "style": spec.owner.style,
        "style_version": spec.owner.style_version,
        "base_id": spec.base_id,
        "status": STATUS_OK if error is None else STATUS_ERROR,
        "error": error,
        "width": width,
        "height": height,
        "seconds": seconds,
        "run_id": spec.run_id,
        "finished_at": datetime.now(timezone.utc),
        "node_id": node_id,
        "device": device,
        "strength": spec.strength,
    }


def _commit(spec: CommitSpec, rows: list[dict[str, Any]], model_seconds: float) -> pa.Table:
    """Commit one manifest part for ``rows`` while this run holds its lease; a part that may
    have landed after a newer run planned (a slow PUT) is withdrawn."""
    lease = RunLease(spec.layout.output, spec.run_id)
    try:
        lease.check()
        checked = time.monotonic()
        part = write_outputs_part(spec.layout.output, rows)
        if time.monotonic() - checked > GRACE_SECONDS / 2 and not lease.held():
            fs, _ = filesystem(spec.layout.output)
            fs.rm(filesystem(part)[1])
            lease.check()
    except Exception as exc:  # the manifest cannot be written: nothing more can be committed
        return _fatal(str(exc))
    ok = sum(r["error"] is None for r in rows)
    return pa.table({**_summary(ok, len(rows) - ok, model_seconds), "fatal": [None]}, schema=SUMMARY_SCHEMA)


def _summary(ok: int, errors: int, model_seconds: float) -> dict[str, list]:
    return {"ok": [ok], "errors": [errors], "model_seconds": [model_seconds]}


def _fatal(reason: str) -> pa.Table:
    return pa.table({**_summary(0, 0, 0.0), "fatal": [reason]}, schema=SUMMARY_SCHEMA)


class StylizeActor:
    """A Ray Data actor: builds the style's network once, then stylises batch after batch.

    The weights arrive as bytes (a few MB at most), so actors need no access to the style
    store. With ``decode`` and ``commit`` the actor does every step itself, one photo at a time
    (the layout for CPU-only clusters, see ``apply_job``)."""

    def __init__(
        self,
        base: bytes,
        style: bytes,
        *,
        device: str | None,
        render: str = "full",
        working_side: int | None = None,
        lut_size: int = DEFAULT_LUT_SIZE,
        strength: float = 1.0,
        decode: DecodeSpec | None = None,
        commit: CommitSpec | None = None,
    ) -> None:
        if (decode is None) != (commit is None):
            raise ValueError("StylizeActor: give both decode and commit, or neither")
        self.stylizer = Stylizer(
            Base.from_bytes(base, source="base"),
            Style.from_bytes(style, source="style"),
            device=device,
            render=render,
            working_side=working_side,
            lut_size=lut_size,
            strength=strength,
        )
        self.decode, self.commit = decode, commit
        # Recorded in every row it stylises; None outside Ray (a library caller), which asking
        # the runtime context would start.
        self.node_id = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
        self.device = str(self.stylizer.device)

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.decode is not None and self.commit is not None:
            return process_and_commit(batch, self.stylizer, self.decode, self.commit, node_id=self.node_id, device=self.device)
        batch = stylize_batch(self.stylizer, batch)
        for name, value in (("node_id", self.node_id), ("device", self.device)):
            column = pa.repeat(pa.scalar(value, pa.string()), batch.num_rows)
            batch = batch.set_column(batch.schema.get_field_index(name), name, column)
        return batch

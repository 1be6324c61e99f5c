"""The per-batch work of ``apply``, run inside Ray workers: read and decode, stylise, encode,
write and commit.

Batches are Arrow tables, one row per photo. A photo that fails at any step keeps its row with
an ``error`` message (starting with its URI) and skips the remaining steps, so one bad file
never fails a batch. Decoded pixels travel as raw RGB bytes with their width and height:
photos of every size share one batch, and the stylise step runs them one at a time (why: see
``apply_job``).

Commit protocol (``write_and_commit``): every result is written whole (temp file + rename
locally, one PUT on object stores), *then* one manifest part records exactly this batch. A
crash before the part is written leaves results without rows: the next run redoes them and
overwrites them with identical content. A crash after leaves nothing to redo.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from photostyle import Base, Style, Stylizer
from photostyle.imageio import DEFAULT_MAX_PIXELS, decode, encode
from photostyle.lut_render import DEFAULT_LUT_SIZE
from photostyle.stylize import DEFAULT_WORKING_SIDE
from pipeline.manifests import STATUS_ERROR, STATUS_OK, write_outputs_part
from pipeline.outputs import OutputLayout
from pipeline.storage import filesystem, join, read_bytes, write_atomic

__all__ = ["SUMMARY_SCHEMA", "CommitSpec", "DecodeSpec", "StyliseActor", "read_and_decode", "stylise", "write_and_commit"]

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


@dataclass(frozen=True)
class DecodeSpec:
    """How inputs are read: ``max_side`` refuses photos whose long side is larger."""

    max_side: int | None = None


@dataclass(frozen=True)
class CommitSpec:
    """Where and how results are written, and what their manifest rows say."""

    layout: OutputLayout
    quality: int
    run_id: str
    style: str
    style_version: str
    base_id: str
    strength: float = 1.0


def _failure(uri: str, exc: Exception) -> str:
    """An error message that starts with the input's URI, whatever raised it."""
    text = str(exc)
    return text if text.startswith(uri) else f"{uri}: {type(exc).__name__}: {text}"


def read_and_decode(batch: pa.Table, spec: DecodeSpec) -> pa.Table:
    """``input_uri`` -> upright RGB pixels plus ICC/EXIF, or an error per photo."""
    max_pixels = min(DEFAULT_MAX_PIXELS, spec.max_side**2) if spec.max_side else DEFAULT_MAX_PIXELS
    rows = []
    for uri in batch["input_uri"].to_pylist():
        row = {"input_uri": uri}
        try:
            photo = decode(read_bytes(uri), name=uri, max_pixels=max_pixels)
            width, height = photo.size
            if spec.max_side and max(width, height) > spec.max_side:
                raise ValueError(f"{uri}: image too large: {width}x{height} exceeds --max-side {spec.max_side}")
            row.update(
                pixels=photo.image.tobytes(),
                width=width,
                height=height,
                icc_profile=photo.icc_profile,
                exif=photo.exif,
            )
        except Exception as exc:  # any failure is this photo's, never the batch's
            row["error"] = _failure(uri, exc)
            log.debug("read/decode failed", exc_info=True)
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=DECODED_SCHEMA)


def stylise(stylizer: Stylizer, batch: pa.Table) -> pa.Table:
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
            image = Image.frombytes("RGB", (width, height), data)
            t0 = time.perf_counter()
            out = stylizer(image)
            seconds.append(time.perf_counter() - t0)
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


def write_and_commit(batch: pa.Table, spec: CommitSpec) -> pa.Table:
    """Encode and write every stylised photo, then commit one manifest part for the whole batch
    (ok and error rows). Returns one :data:`SUMMARY_SCHEMA` row; ``fatal`` says why the part
    could not be written (the job must stop: nothing it does can be recorded)."""
    layout = spec.layout
    fs, root = filesystem(layout.output)
    targets = layout.targets(batch["input_uri"])
    columns = ("input_uri", "pixels", "width", "height", "icc_profile", "exif", "error", "model_seconds")
    values = zip(*(batch[c].to_pylist() for c in columns), *(targets[c].to_pylist() for c in ("path", "format")))
    rows = []
    for uri, data, width, height, icc, exif, error, seconds, path, fmt in values:
        output_uri = join(layout.output, path)
        if error is None:
            try:
                image = Image.frombytes("RGB", (width, height), data)
                encoded = encode(image, format=fmt, quality=spec.quality, icc_profile=icc, exif=exif)
                write_atomic(fs, join(root, path), encoded)
            except Exception as exc:  # this photo's failure, recorded in its row
                error = f"{uri}: cannot write {output_uri}: {exc}"
                log.debug("write failed", exc_info=True)
        rows.append(
            {
                "input_uri": uri,
                "output_uri": output_uri if error is None else None,
                "style": spec.style,
                "style_version": spec.style_version,
                "base_id": spec.base_id,
                "status": STATUS_OK if error is None else STATUS_ERROR,
                "error": error,
                "width": width,
                "height": height,
                "seconds": seconds,
                "run_id": spec.run_id,
                "finished_at": datetime.now(timezone.utc),
                "strength": spec.strength,
            }
        )
    try:
        write_outputs_part(layout.output, rows)
    except Exception as exc:  # the manifest cannot be written: nothing more can be committed
        return pa.table({**_summary(0, 0, 0.0), "fatal": [str(exc)]}, schema=SUMMARY_SCHEMA)
    ok = sum(r["error"] is None for r in rows)
    model_seconds = pc.sum(batch["model_seconds"]).as_py() or 0.0
    return pa.table({**_summary(ok, len(rows) - ok, model_seconds), "fatal": [None]}, schema=SUMMARY_SCHEMA)


def _summary(ok: int, errors: int, model_seconds: float) -> dict[str, list]:
    return {"ok": [ok], "errors": [errors], "model_seconds": [model_seconds]}


class StyliseActor:
    """A Ray Data actor: builds the style's network once, then stylises batch after batch.

    The weights arrive as bytes (a few MB at most), so actors need no access to the style
    store. With ``decode``/``commit`` the actor also does those steps itself (the layout for
    CPU-only clusters, see ``apply_job``)."""

    def __init__(
        self,
        base: bytes,
        style: bytes,
        *,
        device: str | None,
        render: str = "full",
        working_side: int = DEFAULT_WORKING_SIDE,
        lut_size: int = DEFAULT_LUT_SIZE,
        strength: float = 1.0,
        decode: DecodeSpec | None = None,
        commit: CommitSpec | None = None,
    ) -> None:
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

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.decode is not None:
            batch = read_and_decode(batch, self.decode)
        batch = stylise(self.stylizer, batch)
        return write_and_commit(batch, self.commit) if self.commit is not None else batch

"""Where ``apply`` writes each result, in which format, and what an output folder holds so far.

Output paths are a pure function of the input URI and the options (never of which other files
exist), so a rerun, a resumed run and a scheduled run all write a given photo to the same place.
Everything here is Arrow compute over whole columns: the driver maps millions of URIs at once,
and each write task maps its own batch with the same code.
"""

from __future__ import annotations

import functools
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.manifests import STATUS_OK, ManifestError
from pipeline.outputs_manifest import MANIFEST_DIR, scan_outputs
from pipeline.ownership import current_filter, read_owner
from pipeline.storage import join

__all__ = ["FORMATS", "SAME_FORMAT", "OutputLayout", "new_run_id", "summarize"]

SAME_FORMAT = "same"
FORMATS = ("jpeg", "png", "webp")
# Extensions each output format may keep (lower case, first = the one given on a format change).
_FORMAT_EXTENSIONS = {"jpeg": (".jpg", ".jpeg"), "png": (".png",), "webp": (".webp",)}
_FALLBACK_FORMAT = "png"  # "same" for sources we read but do not write (TIFF, BMP): lossless
_EXTENSION_KEYS = pa.array([e for exts in _FORMAT_EXTENSIONS.values() for e in exts])
_EXTENSION_FORMATS = pa.array([f for f, exts in _FORMAT_EXTENSIONS.items() for _ in exts])
_FORMATS = pa.array(FORMATS)
_CANONICAL_EXTENSIONS = pa.array([_FORMAT_EXTENSIONS[f][0] for f in FORMATS])
_SCHEME_RE = r"^[A-Za-z][A-Za-z0-9+.-]*://"
_EXTENSION_RE = r"\.[^./]*$"
_PARENT_SEGMENT_RE = r"(^|/)\.\.(/|$)"
# Spellings of one path: "a//b" and "a/./b" are "a/b" on a local disk (and in fsspec's paths),
# while an object store keeps them apart as keys. Result paths are written in the plain spelling.
_UNNORMAL_RE = r"//|(^|/)\./"
_UNNORMAL_URI_RE = r"[^:]//|(^|/)\./"  # the same in a whole URI, its scheme's "://" aside


@dataclass(frozen=True)
class OutputLayout:
    """How input URIs map to output files: ``output`` root, the input folder they mirror
    (``None`` for a URI manifest: the path after the scheme is mirrored, bucket included), and
    the requested format (``same`` or one of :data:`FORMATS`)."""

    output: str
    input_root: str | None
    format: str

    @property
    def manifest_uri(self) -> str:
        return join(self.output, MANIFEST_DIR)

    def relative(self, uris: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
        """Each input's path below the input folder (or after its scheme), in its plain
        spelling: repeated slashes collapsed and ``.`` segments dropped (``a//./b`` is ``a/b``)."""
        if self.input_root is not None:
            rel = pc.utf8_slice_codeunits(uris, len(self.input_root) + 1)
        else:
            rel = pc.replace_substring_regex(uris, _SCHEME_RE, "")
        rel = pc.replace_substring_regex(rel, "/+", "/")
        rel = pc.replace_substring_regex(rel, r"/(\./)+", "/")
        return pc.replace_substring_regex(rel, r"^/*(\./)*/*", "")

    def targets(self, uris: pa.Array | pa.ChunkedArray) -> pa.Table:
        """``path`` (relative to ``output``) and encoder ``format`` of each input's result.

        The input's name is kept when its extension already names the output format (so
        ``.JPG`` stays ``.JPG``); otherwise the extension is replaced by the format's."""
        rel = self.relative(uris)
        fmt, keep = self._formats(uris)
        if isinstance(fmt, pa.Scalar):
            fmt = pa.repeat(fmt, len(rel))
        canonical = pc.take(_CANONICAL_EXTENSIONS, pc.index_in(fmt, value_set=_FORMATS))
        renamed = pc.binary_join_element_wise(pc.replace_substring_regex(rel, _EXTENSION_RE, ""), canonical, "")
        return pa.table({"path": pc.if_else(keep, rel, renamed), "format": fmt})

    def conflicts(self, uris: pa.Array | pa.ChunkedArray) -> pa.Table:
        """Inputs that cannot be written safely, with the reason: a path that would leave the
        output folder (``..``), a result that would overwrite an input, or a result path shared
        with another input (``a.png`` and ``a.jpg`` with ``--format jpeg``).

        Clashes are decided on the result paths as written (``a//x.jpg`` and ``a/./x.jpg`` are
        written as ``a/x.jpg``), for every kind of input. Result paths are only computed, and
        hashed, when such a clash is possible at all: some inputs lie under ``output``, some
        names change extension or spelling, or a manifest's URIs do not all share one scheme. Otherwise the checks are a few passes over the URIs (10 M
        inputs: seconds, no copy of them)."""
        checks: list[tuple[pa.Array | pa.ChunkedArray, pa.Scalar | pa.Array | pa.ChunkedArray]] = []
        if len(uris):
            escapes = pc.match_substring_regex(uris, _PARENT_SEGMENT_RE)
            checks.append((escapes, pa.scalar("'..' in its path would put the result outside the output folder")))
        under_output = pc.starts_with(uris, self.output + "/")
        overwrite = pc.any(under_output).as_py()
        if overwrite or not self._names_stay_unique(uris):
            full = pc.binary_join_element_wise(self.output, self.targets(uris)["path"], "/")
            if overwrite:
                overwrites = pc.is_in(full, value_set=pc.filter(uris, under_output))
                checks.append((overwrites, pc.binary_join_element_wise("its result ", full, " would overwrite an input", "")))
            pairs = pa.table({"path": full, "input_uri": uris})
            counts = pairs.group_by("path").aggregate([("input_uri", "count_distinct")])
            shared = pc.is_in(full, value_set=pc.filter(counts["path"], pc.greater(counts["input_uri_count_distinct"], 1)))
            checks.append((shared, pc.binary_join_element_wise("its result ", full, " would also be another input's result", "")))
        if not checks:
            return pa.table({"input_uri": pa.array([], pa.string()), "error": pa.array([], pa.string())})
        # Reasons only for the refused rows: case_when over all of them would allocate its text
        # for every input (640 MB at 10 M inputs).
        bad = functools.reduce(pc.or_, (mask for mask, _ in checks))
        masks = [pc.filter(mask, bad) for mask, _ in checks]
        texts = [text if isinstance(text, pa.Scalar) else pc.filter(text, bad) for _, text in checks]
        rejected = pc.filter(uris, bad)
        reason = pc.case_when(pc.make_struct(*masks), *texts)
        return pa.table({"input_uri": rejected, "error": pc.binary_join_element_wise(rejected, reason, ": ")})

    def _formats(self, uris: pa.Array | pa.ChunkedArray) -> tuple[pa.Scalar | pa.Array, pa.Array]:
        """The output format of each input (a scalar unless ``same``), and whether its name
        already has a matching extension."""
        ext = pc.utf8_lower(pc.struct_field(pc.extract_regex(uris, r"(?P<ext>\.[^./]*)?$"), [0]))
        source = pc.take(_EXTENSION_FORMATS, pc.index_in(ext, value_set=_EXTENSION_KEYS))
        fmt = pc.fill_null(source, _FALLBACK_FORMAT) if self.format == SAME_FORMAT else pa.scalar(self.format)
        return fmt, pc.fill_null(pc.equal(source, fmt), False)

    def _names_stay_unique(self, uris: pa.Array | pa.ChunkedArray) -> bool:
        """Whether distinct inputs are sure to get distinct result paths: no name changes its
        extension or its spelling (``a//b``, ``a/./b``), and relative paths are unique (one
        folder, or a manifest of one scheme)."""
        step = 1_000_000  # a slice at a time: the extensions of 10 M names would cost 250 MB at once
        for i in range(0, len(uris), step):
            part = uris.slice(i, step)
            if not pc.all(self._formats(part)[1]).as_py():
                return False
            if self.input_root is None:
                unnormal = pc.match_substring_regex(part, _UNNORMAL_URI_RE)
            else:
                unnormal = pc.match_substring_regex(pc.utf8_slice_codeunits(part, len(self.input_root) + 1), _UNNORMAL_RE)
            if pc.any(unnormal).as_py():
                return False
        if self.input_root is not None or not len(uris):
            return True
        scheme = re.match(_SCHEME_RE, uris[0].as_py())
        prefix = scheme.group(0) if scheme else "/"
        return pc.all(pc.starts_with(uris, prefix)).as_py() and not pc.any(pc.starts_with(uris, prefix + "/")).as_py()


def new_run_id() -> str:
    """A unique id that sorts by start time (UTC), valid as a name (it names manifest parts).
    To the microsecond: a rerun straight after a run must still sort after it (``status`` takes
    the largest id as the last run)."""
    return f"{datetime.now(timezone.utc):%Y%m%dt%H%M%S.%f}z-{uuid.uuid4().hex[:8]}"


def summarize(output_uri: str) -> dict[str, Any]:
    """What the outputs manifest under ``output_uri`` says, counted per distinct input (an input
    with any ``ok`` row is ok): totals over the rows that describe the files now (the owner's
    version since it last claimed the folder), per style version over all rows, number of runs,
    the latest run, the owner and the part files that could not be read; and per Ray node, its
    attempts (rows) ok and failed, to find where bad results came from."""
    scan = scan_outputs(output_uri, columns=["input_uri", "style", "style_version", "status", "run_id", "finished_at", "node_id"])
    table = scan.table
    if table.num_rows == 0:
        if scan.unreadable:
            raise ManifestError(
                f"outputs manifest {join(output_uri, MANIFEST_DIR)}: no readable part files "
                f"({', '.join(u for u, _ in scan.unreadable)} unreadable; status --repair moves them aside)"
            )
        raise ManifestError(f"outputs manifest {join(output_uri, MANIFEST_DIR)}: no part files (nothing applied there)")
    table = table.append_column("ok", pc.cast(pc.equal(table["status"], STATUS_OK), pa.int64()))
    owner = read_owner(output_uri)

    per_input = table.filter(current_filter(owner)).group_by("input_uri").aggregate([("ok", "max")])
    ok = pc.sum(per_input["ok_max"]).as_py() or 0  # no current rows yet: a version switch just began
    per_style_input = table.group_by(["style", "style_version", "input_uri"]).aggregate([("ok", "max")])
    per_style = per_style_input.group_by(["style", "style_version"]).aggregate([("ok_max", "sum"), ("ok_max", "count")])
    styles = sorted(
        (
            {"style": s, "style_version": v, "ok": n_ok, "error": n - n_ok}
            for s, v, n_ok, n in zip(
                *(per_style[c].to_pylist() for c in ("style", "style_version", "ok_max_sum", "ok_max_count"))
            )
        ),
        key=lambda r: (r["style"], r["style_version"]),
    )
    per_node = table.group_by("node_id").aggregate([("ok", "sum"), ("ok", "count")])
    nodes = sorted(
        (
            {"node_id": node, "ok": n_ok, "error": n - n_ok}
            for node, n_ok, n in zip(*(per_node[c].to_pylist() for c in ("node_id", "ok_sum", "ok_count")))
        ),
        key=lambda r: (r["node_id"] is None, r["node_id"] or ""),
    )
    last_id = pc.max(table["run_id"]).as_py()
    last = table.filter(pc.equal(table["run_id"], last_id))
    last_ok = pc.sum(last["ok"]).as_py()
    return {
        "ok": ok,
        "error": per_input.num_rows - ok,
        "styles": styles,
        "runs": pc.count_distinct(table["run_id"]).as_py(),
        "nodes": nodes,  # rows, not inputs: node_id null for refusals and older manifests
        "last_run": {
            "run_id": last_id,
            "finished_at": pc.max(last["finished_at"]).as_py().isoformat(),
            "ok": last_ok,
            "error": last.num_rows - last_ok,
        },
        "owner": None if owner is None else {"style": owner.style, "style_version": owner.style_version, "since": owner.since},
        "unreadable_parts": [{"uri": uri, "error": problem} for uri, problem in scan.unreadable],
    }

"""``eval``'s work: judge trained styles the way users get them, beside classical baselines.

Each pair's content photo goes through the real ``apply`` job (its outputs manifest says where
the result is), then one Ray task per pair scores the result, Reinhard colour transfer,
histogram matching and the manifest's optional ``reference`` image with the metrics of
:mod:`pipeline.quality`, and returns small thumbnails for the contact sheet. So what is judged
is exactly what production would write, and a cluster scores a large set in parallel.

With ``cross``, each style is also applied to every other pair's content photo, the product's
real job: a style is used on a collection, not on the photo it was trained on. Each of those
results is scored against the style's own style photo, beside Reinhard and histogram matching
given the same style photo and the same content photo.

Results are written losslessly (PNG), as the baselines are kept in memory, so that no column is
judged through JPEG artefacts. Every step resumes: ``train`` skips rows already trained the same
way and ``apply`` inputs already done for that style version, so rerunning an evaluation only
re-scores.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray
from PIL import Image
from ray.exceptions import RayError, RayTaskError

from photostyle.imageio import decode, encode
from pipeline import contact_sheet
from pipeline.apply_job import ApplyOptions, plan_apply, run_apply
from pipeline.baselines import BASELINES
from pipeline.catalog import Catalog, StyleNotFound, StyleRef
from pipeline.inputs import URI_COLUMN
from pipeline.manifests import STATUS_ERROR, ManifestError
from pipeline.outputs_manifest import done_filter, read_outputs
from pipeline.ownership import read_owner
from pipeline.pairs_manifest import read_pairs
from pipeline.published import load_style
from pipeline.quality import METRICS, as_rgb_array, metrics
from pipeline.ray_runtime import ensure_ray
from pipeline.storage import filesystem, join, read_bytes, uri_of, write_atomic
from pipeline.training_jobs import Row, TrainJob, extra_content_digests, load_rows, run_rows

__all__ = [
    "CROSS_SHEETS_DIR",
    "REFERENCE_COLUMN",
    "REPORT_FILES",
    "Application",
    "EvalError",
    "EvalPair",
    "PairScores",
    "build_cross_report",
    "build_report",
    "cross_applications",
    "trained_on",
    "format_scores",
    "load_pairs",
    "markdown_table",
    "published_styles",
    "score_pair",
    "score_pairs",
    "stylize_contents",
    "stylize_cross",
    "train_styles",
    "write_report",
]

log = logging.getLogger(__name__)

REFERENCE_COLUMN = "reference"  # optional pairs-manifest column: a published result to compare with
OUTPUTS_DIR = "outputs"
CROSS_DIR = "cross"  # under OUTPUTS_DIR: one folder per style applied to the other pairs' photos
REPORT_FILES = ("report.json", "report.md", "sheet.png")
# with cross applications: one sheet per style, a row per photo it was applied to (one sheet of
# every application is too tall to open: 115 000 px and 274 MB for 20 pairs)
CROSS_SHEETS_DIR = "cross-sheets"
SHEET_CELL_HEIGHT = 256
# How each metric is printed in tables and captions (the README's precision).
_DIGITS = {"structure": 3, "style_swd": 2, "affine_res": 3}


class EvalError(RuntimeError):
    """A pair that cannot be evaluated; the message names the pair and the cause."""


@dataclass(frozen=True)
class EvalPair:
    """A pairs-manifest row, URIs absolute; ``reference`` is ``None`` where the row has none."""

    name: str
    content: str
    style: str
    reference: str | None = None
    extra_content: tuple[str, ...] = ()

    @property
    def row(self) -> Row:
        """The row as ``train`` takes it."""
        return Row(self.name, self.content, self.style, self.extra_content)


@dataclass(frozen=True)
class Application:
    """One style applied to another pair's content photo."""

    style_pair: EvalPair  # whose style (and style photo) is applied
    photo_pair: EvalPair  # whose content photo it is applied to

    @property
    def name(self) -> str:
        return f"{self.style_pair.name} on {self.photo_pair.name}"

    @property
    def as_pair(self) -> EvalPair:
        """The application as a pair to score: that photo as content, the style's own style photo."""
        return EvalPair(self.name, self.photo_pair.content, self.style_pair.style)


@dataclass(frozen=True)
class PairScores:
    """One pair's metrics (ours, each baseline, the reference) and its contact-sheet row."""

    name: str
    style: str  # the evaluated style version, NAME@vN
    photos: dict[str, str | None]  # content, style, reference URIs
    output: str
    ours: dict[str, float]
    baselines: dict[str, dict[str, float]]
    reference: dict[str, float] | None
    cells: list[contact_sheet.Cell]


# ---- pairs ----------------------------------------------------------------------------------
def load_pairs(pairs_uri: str) -> list[EvalPair]:
    """The pairs manifest's rows as ``train`` validates them, with the optional ``reference``
    column (strings; null or empty: no reference for that row)."""
    rows = load_rows(pairs_uri)
    table = read_pairs(pairs_uri)
    if REFERENCE_COLUMN not in table.column_names:
        return [_pair(row, None) for row in rows]
    column = table[REFERENCE_COLUMN]
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise ManifestError(f"pairs manifest {pairs_uri}: column {REFERENCE_COLUMN!r} must hold strings, not {column.type}")
    return [_pair(row, uri or None) for row, uri in zip(rows, column.to_pylist())]


def _pair(row: Row, reference: str | None) -> EvalPair:
    # Absolute like the row's photos, so that tasks on any node read the same file.
    return EvalPair(row.name, row.content, row.style, uri_of(*filesystem(reference)) if reference else None, row.extra_content)


def train_styles(pairs: Sequence[EvalPair], job: TrainJob, *, gpus_per_task: float | None = None) -> dict[str, StyleRef]:
    """Train every pair with ``train``'s job (a row already trained the same way is skipped, so
    its published version is reused); the style version of each pair."""
    results = run_rows([pair.row for pair in pairs], job, gpus_per_task=gpus_per_task)
    failed = [r for r in results if r.status == STATUS_ERROR]
    if failed:
        detail = "; ".join(f"{r.name}: {r.error}" for r in failed)
        raise EvalError(f"training failed for {len(failed)} of {len(results)} pair(s): {detail}")
    return {r.name: r.styles[0] for r in results}


def published_styles(catalog: Catalog, pairs: Sequence[EvalPair]) -> dict[str, StyleRef]:
    """The latest published version of each pair's style (``eval --no-train``), with a warning
    where it was trained on other photos than the row's (a renamed or reused style name)."""
    refs = {}
    for pair in pairs:
        try:
            ref = catalog.resolve(pair.name)
        except StyleNotFound as exc:
            raise EvalError(f"pair {pair.name}: {exc} (train it first, or leave out --no-train)") from exc
        meta = catalog.style_meta(ref)
        for kind, uri in (("content", pair.content), ("style", pair.style)):
            if (meta.get(kind) or {}).get("sha256") != hashlib.sha256(read_bytes(uri)).hexdigest():
                log.warning("pair %s: %s was not trained on this row's %s photo %s", pair.name, ref.spec, kind, uri)
        refs[pair.name] = ref
    return refs


# ---- stylize with the real apply job --------------------------------------------------------
def stylize_contents(
    catalog: Catalog,
    pairs: Sequence[EvalPair],
    refs: Mapping[str, StyleRef],
    out_uri: str,
    *,
    render: str | None = None,
    strength: float = 1.0,
) -> dict[str, str]:
    """Run ``apply`` on each pair's content photo with its style into ``<out>/outputs/<name>/``
    (one folder per pair: two pairs may share a content photo) and return each result's URI,
    read from that folder's outputs manifest. An input already done (at this strength) is not
    stylised again."""
    options = ApplyOptions(format="png", render=render, strength=strength, batch_size=1, concurrency=1)
    outputs = {}
    with tempfile.TemporaryDirectory(prefix="pst-eval-") as tmp:
        for pair in pairs:
            ref = refs[pair.name]
            output = join(out_uri, OUTPUTS_DIR, pair.name)
            inputs = str(Path(tmp) / f"{pair.name}.parquet")
            pq.write_table(pa.table({URI_COLUMN: [pair.content]}), inputs)
            result = run_apply(plan_apply(load_style(catalog, ref.spec), inputs, output, options), options)
            log.info("%s: %s stylised (%d new, %d already done)", pair.name, ref.spec, result.processed, result.skipped)
            outputs[pair.name] = _result_of(output, pair.content, ref, strength)
    return outputs


def cross_applications(pairs: Sequence[EvalPair], trained_on: Mapping[str, frozenset[str]]) -> list[Application]:
    """Every pair's style on every other pair's content photo that it was not trained on, in
    pair order; ``trained_on``: the sha256 of each pair's style's training content photo and
    extra content photos, as its meta records them. Photos are told apart by their bytes and by
    their pixels, not their URIs: a benchmark may hold one photo under two names (dpst-dev's
    contents 3 and 4, 11 and 12) or saved twice (9 and 22, 21 and 24), and a style scored on a
    photo it was trained on would count as one it never saw."""
    uris = dict.fromkeys([*(p.content for p in pairs), *(uri for p in pairs for uri in p.extra_content)])
    digests = {uri: photo_digests(uri) for uri in uris}  # each photo read once: (bytes, pixels)
    applications = []
    for p in pairs:
        seen = {digests[uri][1] for uri in (p.content, *p.extra_content)}
        for q in pairs:
            if q is p:
                continue
            by_bytes, by_pixels = digests[q.content]
            if by_bytes in trained_on[p.name] or by_pixels in seen:
                log.info("cross: %s's content photo %s is a photo %s's style was trained on: not applied", q.name, q.content, p.name)
                continue
            applications.append(Application(p, q))
    return applications


def photo_digests(uri: str) -> tuple[str, str]:
    """sha256 of a photo's bytes (what a style's meta records), and of its size and decoded RGB
    pixels (one for the same photo saved twice, by another encoder or with other metadata)."""
    data = read_bytes(uri)
    image = decode(data, name=uri).image
    pixels = hashlib.sha256(f"{image.width}x{image.height}:".encode() + image.tobytes()).hexdigest()
    return hashlib.sha256(data).hexdigest(), pixels


def trained_on(catalog: Catalog, refs: Mapping[str, StyleRef]) -> dict[str, frozenset[str]]:
    """The sha256 of each pair's style's training content photo and extra content photos, from
    its meta."""
    photos = {}
    for name, ref in refs.items():
        meta = catalog.style_meta(ref)
        photos[name] = frozenset([meta["content"]["sha256"], *extra_content_digests(meta)]) - {None}
    return photos


def stylize_cross(
    catalog: Catalog,
    applications: Sequence[Application],
    refs: Mapping[str, StyleRef],
    out_uri: str,
    *,
    render: str | None = None,
    strength: float = 1.0,
) -> dict[str, str]:
    """Run ``apply`` once per style over the content photos it is applied to, into
    ``<out>/outputs/cross/<style pair>/``; each application's result URI, by application name."""
    options = ApplyOptions(format="png", render=render, strength=strength, batch_size=1, concurrency=1)
    by_style: dict[str, list[Application]] = {}
    for application in applications:
        by_style.setdefault(application.style_pair.name, []).append(application)
    outputs = {}
    with tempfile.TemporaryDirectory(prefix="pst-eval-") as tmp:
        for name, group in by_style.items():
            ref = refs[name]
            output = join(out_uri, OUTPUTS_DIR, CROSS_DIR, name)
            inputs = str(Path(tmp) / f"{name}.parquet")
            photos = list(dict.fromkeys(a.photo_pair.content for a in group))
            pq.write_table(pa.table({URI_COLUMN: photos}), inputs)
            result = run_apply(plan_apply(load_style(catalog, ref.spec), inputs, output, options), options)
            log.info("%s: %s on %d other photo(s) (%d new, %d already done)", name, ref.spec, len(photos), result.processed, result.skipped)
            for application in group:
                outputs[application.name] = _result_of(output, application.photo_pair.content, ref, strength)
    return outputs


def _result_of(output: str, content: str, ref: StyleRef, strength: float) -> str:
    """The latest ``ok`` result of ``content`` for this style version and strength, or an error
    saying why there is none."""
    this_input = pc.field("input_uri") == content
    columns = ["output_uri", "finished_at"]
    owner = read_owner(output)
    since = owner.since if owner is not None and owner.style_version == ref.version else ""
    done = read_outputs(output, columns=columns, filter=done_filter(ref.name, ref.version, since, strength) & this_input)
    if done.num_rows:
        return done.sort_by([("finished_at", "descending")])["output_uri"][0].as_py()
    failed = read_outputs(output, columns=["error", "finished_at"], filter=this_input & (pc.field("status") == STATUS_ERROR))
    cause = failed.sort_by([("finished_at", "descending")])["error"][0].as_py() if failed.num_rows else "no result recorded"
    raise EvalError(f"pair {ref.name}: apply {ref.spec} to {content} failed: {cause}")


# ---- scoring (one Ray task per pair) ----------------------------------------------------------
def score_pair(pair: EvalPair, style: str, output: str) -> PairScores:
    """Read the pair's photos and result, make the baselines, and score them all."""
    content, style_photo, ours = (_open(uri) for uri in (pair.content, pair.style, output))
    reference = _open(pair.reference) if pair.reference else None
    c, s = as_rgb_array(content, name=pair.content), as_rgb_array(style_photo, name=pair.style)
    baselines = {key: make(c, s) for key, make in BASELINES.items()}
    scores = {key: metrics(c, s, image) for key, image in baselines.items()}
    ours_scores = metrics(c, s, ours)
    reference_scores = metrics(c, s, reference) if reference is not None else None

    def cell(image: Image.Image, caption: str) -> contact_sheet.Cell:
        return contact_sheet.fit(image, SHEET_CELL_HEIGHT), caption

    cells = [
        cell(content, f"{pair.name}: content"),
        cell(style_photo, "style"),
        cell(ours, f"ours ({style})\n{format_scores(ours_scores)}"),
        *(cell(baselines[key], f"{key}\n{format_scores(scores[key])}") for key in BASELINES),
    ]
    if reference is not None:
        cells.append(cell(reference, f"reference\n{format_scores(reference_scores)}"))
    photos = {"content": pair.content, "style": pair.style, "reference": pair.reference}
    return PairScores(pair.name, style, photos, output, ours_scores, scores, reference_scores, cells)


def _open(uri: str) -> Image.Image:
    return decode(read_bytes(uri), name=uri).image


_score_pair_task = ray.remote(num_cpus=1, max_retries=1, retry_exceptions=False)(score_pair)


def score_pairs(
    pairs: Sequence[EvalPair], refs: Mapping[str, StyleRef], outputs: Mapping[str, str]
) -> list[PairScores]:
    """Score every pair as its own Ray task (joining or starting Ray); results in pair order.
    The first pair that fails (an unreadable reference, say) stops the evaluation: a mean with
    holes would compare different sets."""
    ensure_ray()
    pending = {_score_pair_task.remote(p, refs[p.name].spec, outputs[p.name]): p for p in pairs}
    scored: dict[str, PairScores] = {}
    waiting = list(pending)
    try:
        while waiting:
            ready, waiting = ray.wait(waiting, num_returns=1)
            pair = pending[ready[0]]
            try:
                scored[pair.name] = ray.get(ready[0])
            except RayTaskError as exc:
                cause = getattr(exc, "cause", None) or exc
                raise EvalError(f"pair {pair.name}: {cause}") from exc
            except RayError as exc:
                raise EvalError(f"pair {pair.name}: scoring task failed ({type(exc).__name__})") from exc
            log.info("[%d/%d] %s scored: %s", len(scored), len(pairs), pair.name, format_scores(scored[pair.name].ours))
    finally:
        for ref in waiting:
            ray.cancel(ref)
    return [scored[p.name] for p in pairs]


# ---- report ---------------------------------------------------------------------------------
def format_scores(scores: Mapping[str, float]) -> str:
    """``structure / style_swd / affine_res`` at the README's precision."""
    return " / ".join(f"{scores[key]:.{_DIGITS[key]}f}" for key in METRICS)


def _mean(rows: Sequence[Mapping[str, float]]) -> dict[str, float] | None:
    return {key: float(np.mean([r[key] for r in rows])) for key in METRICS} if rows else None


def build_report(scored: Sequence[PairScores]) -> dict[str, Any]:
    """The JSON report: per pair, then the means over all pairs (the reference's over the pairs
    that have one, counted in ``reference_pairs``)."""
    with_reference = [s.reference for s in scored if s.reference is not None]
    return {
        "pairs": [
            {
                "name": s.name,
                "style": s.style,
                "photos": s.photos,
                "output": s.output,
                "metrics": s.ours,
                "baselines": s.baselines,
                "reference": s.reference,
            }
            for s in scored
        ],
        "mean": _mean([s.ours for s in scored]),
        "baselines": {key: _mean([s.baselines[key] for s in scored]) for key in BASELINES},
        "reference": _mean(with_reference),
        "reference_pairs": len(with_reference),
    }


def build_cross_report(scored: Sequence[PairScores]) -> dict[str, Any]:
    """The cross applications' part of the JSON report: per application, then the means."""
    return {
        "applications": [
            {"name": s.name, "style": s.style, "photos": s.photos, "output": s.output, "metrics": s.ours, "baselines": s.baselines}
            for s in scored
        ],
        "mean": _mean([s.ours for s in scored]),
        "baselines": {key: _mean([s.baselines[key] for s in scored]) for key in BASELINES},
    }


def markdown_table(report: Mapping[str, Any]) -> str:
    """One row per pair and a mean row; each cell is ``structure / style_swd / affine_res``.
    With cross applications, a second table of those."""
    columns = ["ours", *BASELINES, "reference"]
    lines = [
        f"# Evaluation of {len(report['pairs'])} pair(s)",
        "",
        "Each cell: structure (higher is better) / style_swd (lower) / affine_res (lower);",
        "definitions in pipeline/quality.py.",
        "",
        "| pair | style | " + " | ".join(columns) + " |",
        "|" + "---|" * (len(columns) + 2),
    ]

    def cell(scores: Mapping[str, float] | None) -> str:
        return format_scores(scores) if scores is not None else "–"

    for pair in report["pairs"]:
        values = [pair["metrics"], *(pair["baselines"][key] for key in BASELINES), pair["reference"]]
        lines.append(f"| {pair['name']} | {pair['style']} | " + " | ".join(map(cell, values)) + " |")
    reference = cell(report["reference"])
    if report["reference"] is not None and report["reference_pairs"] < len(report["pairs"]):
        reference += f" ({report['reference_pairs']} of {len(report['pairs'])} pairs)"
    means = [cell(report["mean"]), *(cell(report["baselines"][key]) for key in BASELINES), reference]
    lines.append("| **mean** | | " + " | ".join(means) + " |")
    if "cross" in report:
        lines += _cross_table(report["cross"], cell)
    return "\n".join(lines) + "\n"


def _cross_table(cross: Mapping[str, Any], cell: Any) -> list[str]:
    lines = [
        "",
        f"## Each style on the other pairs' photos ({len(cross['applications'])} applications)",
        "",
        "Scored against the style's own style photo; the baselines get the same style photo.",
        "",
        "| style on photo | style | ours | " + " | ".join(BASELINES) + " |",
        "|" + "---|" * (len(BASELINES) + 3),
    ]
    for application in cross["applications"]:
        values = [application["metrics"], *(application["baselines"][key] for key in BASELINES)]
        lines.append(f"| {application['name']} | {application['style']} | " + " | ".join(map(cell, values)) + " |")
    means = [cell(cross["mean"]), *(cell(cross["baselines"][key]) for key in BASELINES)]
    lines.append("| **mean** | | " + " | ".join(means) + " |")
    return lines


def write_report(
    out_uri: str, report: Mapping[str, Any], scored: Sequence[PairScores], cross: Sequence[PairScores] = ()
) -> list[str]:
    """Write :data:`REPORT_FILES` (JSON report, Markdown table, contact sheet), and with cross
    applications one sheet per style, ``cross-sheets/NAME.png``, under ``out_uri``, each whole;
    returns their URIs."""
    fs, root = filesystem(out_uri)
    sheet = contact_sheet.render([s.cells for s in scored], cell_height=SHEET_CELL_HEIGHT)
    contents = {
        "report.json": json.dumps(report, indent=2).encode(),
        "report.md": markdown_table(report).encode(),
        "sheet.png": encode(sheet, format="png"),
    }
    by_style: dict[str, list[PairScores]] = {}
    for application in cross:
        by_style.setdefault(application.style.partition("@")[0], []).append(application)
    for name, group in by_style.items():
        sheet = contact_sheet.render([s.cells for s in group], cell_height=SHEET_CELL_HEIGHT)
        contents[f"{CROSS_SHEETS_DIR}/{name}.png"] = encode(sheet, format="png")
    written = []
    for name in contents:
        path = join(root, name)
        write_atomic(fs, path, contents[name])
        written.append(uri_of(fs, path))
    return written

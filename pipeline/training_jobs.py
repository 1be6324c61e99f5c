"""``train``'s work: one Ray task per pairs-manifest row, each publishing its own styles.

The driver only validates (the manifest, the settings, the base) and waits; every row's photos
are read, hashed, trained on and published inside its task, on whichever node runs it, so no
photo or tensor passes through the driver. A row is a unit of failure: any Python error in it
becomes that row's error (never retried, never fatal to other rows); a worker lost to a crash is
retried by Ray (on another node when its node is gone). Each style records the ``train`` run that
published it (``train_run``), so a retry of a row whose first attempt published and then lost its
node returns that publication instead of adding a second version, even with ``--force``.

The recipe (:class:`photostyle.Recipe`) is resolved once, in the driver, and every task trains
from it alone; each style's ``meta.json`` records it verbatim.

Skipping: a row whose ``NAME`` and ``NAME.reverse`` latest versions were trained from the same
photo bytes (sha256) with the same recipe is not trained again; :func:`training_change` is the
one definition of "the same". Any other difference retrains the row, and its result says why
(``retrained: recipe changed (...)``): a nightly job picks up a new algorithm version or a changed
default without a flag.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import time
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import torch
from fsspec.implementations.local import LocalFileSystem
from ray.exceptions import RayError

from photostyle import LossNetUnavailable, Recipe, TrainConfig, preset_of, train_pair, train_style
from photostyle.imageio import ImageDecodeError, decode, downscale
from photostyle.weights import WeightsError
from pipeline.catalog import Catalog, CatalogError, StyleNotFound, StyleRef
from pipeline.manifests import STATUS_ERROR, STATUS_OK, ManifestError
from pipeline.names import InvalidName, validate_name
from pipeline.outputs import new_run_id
from pipeline.pairs_manifest import extra_content, read_pairs
from pipeline.progress import ProgressView, RowProgress, RowReporter, start_board
from pipeline.published import REVERSE_SUFFIX, check_pair_names, load_base, publish_pair
from pipeline.ray_runtime import NodeLocalPath, cluster_has_gpus, ensure_ray, refuse_node_local
from pipeline.storage import BACKEND_ERRORS, ObjectNotFound, StorageError, filesystem, read_bytes, temporary_name, uri_of

__all__ = [
    "LOSS_NETS",
    "MODES",
    "STATUS_SKIPPED",
    "Row",
    "RowResult",
    "SettingsError",
    "TrainJob",
    "check_names_in_store",
    "extra_content_digests",
    "fetch_weights",
    "load_rows",
    "plan_job",
    "refuse_node_local_paths",
    "run_rows",
    "train_row",
    "training_change",
]

log = logging.getLogger(__name__)

MODES = ("pair", "style")
LOSS_NETS = ("vgg19", "vgg16", "random")  # "random": VGG19 with seeded random weights (tests only)
STATUS_SKIPPED = "skipped"
_RANDOM_ARCH = "vgg19"
# A lost worker (node died, OOM-killed) is retried this many times; Python errors never are.
_MAX_RETRIES = 3
_POLL_S = 1.0  # the driver redraws progress this often while rows train


class SettingsError(ValueError):
    """Training settings that cannot work together (a usage error: nothing was started)."""


@dataclass(frozen=True)
class Row:
    """One pairs-manifest row, photo URIs made absolute so every node reads the same files."""

    name: str
    content: str
    style: str
    extra_content: tuple[str, ...] = ()  # more photos the style is for (pairs_manifest.EXTRA_CONTENT_COLUMN)


@dataclass(frozen=True)
class TrainJob:
    """Everything a row's task needs besides the row: where to publish, what to train (the
    recipe, resolved once by :func:`plan_job`) and where its inputs besides the photos are."""

    store: str
    recipe: Recipe
    base: str | None = None  # style mode: the catalog id of the recipe's frozen base
    vgg_weights: str | None = None  # fsspec URI of the recipe's loss-network weights, when a file
    force: bool = False
    cpus_per_task: float = 1.0
    run_id: str | None = None  # this train run, recorded as each style's train_run (set by run_rows)


@dataclass(frozen=True)
class RowResult:
    """What happened to one row. ``cause`` (the exception type of a failure) is for the driver's
    summary only and is not part of the JSON result."""

    name: str
    status: str  # STATUS_OK, STATUS_ERROR or STATUS_SKIPPED
    seconds: float
    error: str | None = None
    base: str | None = None
    styles: tuple[StyleRef, ...] = ()
    note: str | None = None  # why an already trained row was trained again ("retrained: ...")
    cause: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "error": self.error,
            "base": self.base,
            "styles": [{"name": ref.name, "version": ref.version} for ref in self.styles],
            "seconds": round(self.seconds, 3),
            "note": self.note,
        }


# ---- driver: validate everything before any work ----------------------------------------
def load_rows(pairs_uri: str) -> list[Row]:
    """The pairs manifest's rows, validated whole (see :func:`pipeline.pairs_manifest.read_pairs`),
    plus what training adds: ``NAME.reverse`` must be a valid name that no other row uses, or a
    row would fail after training with half of its pair published."""
    table = read_pairs(pairs_uri)
    names = table["name"].to_pylist()
    first_row = {name: i for i, name in enumerate(names)}
    for i, name in enumerate(names):
        where = f"pairs manifest {pairs_uri}: row {i + 1} of {len(names)}"
        reverse = name + REVERSE_SUFFIX
        try:
            validate_name(reverse, what=f"reverse style name (of {name!r})")
        except InvalidName as exc:
            raise ManifestError(f"{where}: {exc}") from exc
        if reverse in first_row:
            raise ManifestError(
                f"{where}: style {name!r} publishes {reverse!r}, which is also the name of row {first_row[reverse] + 1}"
            )
    return [
        Row(name, _absolute(content), _absolute(style), tuple(_absolute(uri) for uri in extras))
        for name, content, style, extras in zip(
            names, table["content"].to_pylist(), table["style"].to_pylist(), extra_content(table)
        )
    ]


def check_names_in_store(rows: list[Row], store: str) -> None:
    """Refuse, before any training, a row whose style names belong to another pair in the
    store (:func:`pipeline.published.check_pair_names`; publishing checks again)."""
    catalog = Catalog(store)
    for row in rows:
        check_pair_names(catalog, row.name)


def plan_job(
    store: str,
    *,
    mode: str = "pair",
    base: str | None = None,
    preset: str | None = None,
    iterations: int | None = None,
    crop: int | None = None,
    seed: int = 0,
    loss_net: str = "vgg19",
    vgg_weights: str | None = None,
    force: bool = False,
    cpus_per_task: float = 1.0,
) -> TrainJob:
    """The job for ``train``'s flags, its recipe resolved here once, so every task trains and
    records exactly the same thing. Style mode loads the base here (an unknown base fails before
    anything starts); weights at a URI are fetched here to hash them (tasks fetch them once per
    node and check they are still those)."""
    if mode not in MODES:
        raise SettingsError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if loss_net not in LOSS_NETS:
        raise SettingsError(f"unknown loss network {loss_net!r}; choose one of {', '.join(LOSS_NETS)}")
    if loss_net == "random" and vgg_weights:
        raise SettingsError("--vgg-weights cannot be used with --loss-net random")
    if (mode == "style") != (base is not None):
        raise SettingsError("--base BASE_ID is required with --mode style, and only there")
    store = _absolute(store)
    frozen = None
    if base is not None:
        frozen = load_base(Catalog(store), base)  # BaseNotFound names the base and the store
        base_preset = preset_of(frozen.config)
        if base_preset is None:
            raise SettingsError(f"base {base} in {store} has an architecture that matches no preset")
        if preset is not None and preset != base_preset:
            raise SettingsError(f"base {base} has the {base_preset!r} architecture, not {preset!r}")
    vgg_weights = _absolute(vgg_weights) if vgg_weights else None
    random = loss_net == "random"
    config = TrainConfig(
        preset=preset,
        iterations=iterations,
        crop=crop,
        seed=seed,
        loss_net=_RANDOM_ARCH if random else loss_net,
        loss_weights="random" if random else str(fetch_weights(vgg_weights)) if vgg_weights else "imagenet",
    )
    try:
        recipe = config.resolve(base=frozen)
    except (ValueError, LossNetUnavailable) as exc:
        raise SettingsError(str(exc)) from exc
    return TrainJob(store, recipe, base=base, vgg_weights=vgg_weights, force=force, cpus_per_task=cpus_per_task)


def refuse_node_local_paths(rows: list[Row], job: TrainJob, *, shared_fs: bool) -> None:
    """Refuse (``SettingsError``, naming each) a local store, loss-network weights or row photo
    that the row tasks would resolve on their own node's disk (see ``refuse_node_local``)."""
    paths = {"--store": job.store}
    if job.vgg_weights:
        paths["--vgg-weights"] = job.vgg_weights
    for row in rows:
        paths.update({f"row {row.name!r} content": row.content, f"row {row.name!r} style": row.style})
    try:
        refuse_node_local(paths, shared_fs=shared_fs)
    except NodeLocalPath as exc:
        raise SettingsError(str(exc)) from exc


def _absolute(uri: str) -> str:
    """Local paths made absolute (tasks on other nodes or in other directories read the same
    file); other URIs unchanged."""
    return uri_of(*filesystem(uri))


# ---- driver: launch and collect ------------------------------------------------------------
def run_rows(rows: list[Row], job: TrainJob, *, gpus_per_task: float | None = None) -> list[RowResult]:
    """Train every row as its own Ray task (joining or starting Ray), showing each row's iterations
    while it trains and logging a line as each finishes; results in row order. ``gpus_per_task``
    None: 1 if the cluster has GPUs, else 0."""
    ensure_ray()
    job = job if job.run_id else dataclasses.replace(job, run_id=new_run_id())
    num_gpus = gpus_per_task if gpus_per_task is not None else (1.0 if cluster_has_gpus() else 0.0)
    _warn_if_unschedulable(job.cpus_per_task, num_gpus)
    task = _train_row_task.options(num_cpus=job.cpus_per_task, num_gpus=num_gpus)
    log.info(
        "training %d row(s) in %s mode (%s CPU, %s GPU per task), publishing to %s",
        len(rows),
        job.recipe.mode,
        job.cpus_per_task,
        num_gpus,
        job.store,
    )
    started = time.perf_counter()
    board = start_board()
    row_of = {task.remote(row, job, board): row for row in rows}
    results: dict[str, RowResult] = {}
    waiting = list(row_of)
    view = ProgressView()
    try:
        while waiting:
            ready, waiting = ray.wait(waiting, num_returns=1, timeout=_POLL_S)
            _collect(ready, row_of, results, started, len(rows))
            view.show(_snapshot(board), set(results))
    finally:
        view.close()
        ray.kill(board)
    return [results[row.name] for row in rows]


def _collect(ready: list[Any], row_of: dict[Any, Row], results: dict[str, RowResult], started: float, total: int) -> None:
    """Record and log the results of finished tasks."""
    for ref in ready:
        row = row_of[ref]
        try:
            result = ray.get(ref)
        except RayError as exc:  # the task died (retries exhausted), was cancelled, ...
            log.debug("row %s: task failed", row.name, exc_info=True)
            cause = type(exc).__name__
            error = f"{cause}: {_first_line(exc)}"
            result = RowResult(row.name, STATUS_ERROR, time.perf_counter() - started, error=error, cause=cause)
        results[row.name] = result
        detail = f": {result.error or result.note}" if result.error or result.note else ""
        log.info("[%d/%d] %s %s %.1f s%s", len(results), total, row.name, result.status, result.seconds, detail)


def _snapshot(board: Any) -> dict[str, RowProgress]:
    """The board's latest reports; none when it does not answer in time (progress is best effort)."""
    try:
        return ray.get(board.snapshot.remote(), timeout=_POLL_S)
    except (RayError, TimeoutError):
        log.debug("progress board did not answer", exc_info=True)
        return {}


def _warn_if_unschedulable(num_cpus: float, num_gpus: float) -> None:
    """Ray queues a task no node can run until one joins (an autoscaler may add it), which looks
    like a hang: say so up front."""
    resources = ray.cluster_resources()
    for kind, wanted in (("CPU", num_cpus), ("GPU", num_gpus)):
        if wanted > resources.get(kind, 0):
            log.warning(
                "each task asks for %s %s but the cluster has %s now: tasks wait until a node with enough %s joins",
                wanted,
                kind,
                resources.get(kind, 0),
                kind,
            )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no message"


# ---- task: one row -------------------------------------------------------------------------
def train_row(row: Row, job: TrainJob, board: Any = None) -> RowResult:
    """Read, hash, (maybe skip,) decode, train and publish one row; every error becomes the
    row's result. Publishing is the last step, so a row that fails publishes nothing. Iterations
    are reported to ``board`` (a :class:`~pipeline.progress.ProgressBoard`) when one is given."""
    start = time.perf_counter()
    torch.set_num_threads(max(1, int(job.cpus_per_task)))  # 2 tasks on 2 cores, not 2x2 threads
    try:
        catalog = Catalog(job.store)
        content_bytes, style_bytes = read_bytes(row.content), read_bytes(row.style)
        extra_bytes = [read_bytes(uri) for uri in row.extra_content]
        provenance: dict[str, Any] = {
            "pair": row.name,
            "mode": job.recipe.mode,
            "content": {"uri": row.content, "sha256": hashlib.sha256(content_bytes).hexdigest()},
            "style": {"uri": row.style, "sha256": hashlib.sha256(style_bytes).hexdigest()},
            "extra_content": [
                {"uri": uri, "sha256": hashlib.sha256(data).hexdigest()} for uri, data in zip(row.extra_content, extra_bytes)
            ],
            "train_run": job.run_id,
        }
        if job.vgg_weights:
            provenance["loss_weights_uri"] = job.vgg_weights
        latest = _latest(catalog, row.name)  # even with --force: fails fast on a bad store
        if latest is not None and job.run_id and all(meta.get("train_run") == job.run_id for _, meta in latest):
            log.info("%s: published by an earlier attempt of this run (its node was lost); not again", row.name)
            refs = tuple(ref for ref, _ in latest)
            return RowResult(row.name, STATUS_OK, time.perf_counter() - start, base=refs[0].base_id, styles=refs)
        change = _pair_change(latest, provenance, job.recipe)
        if latest is not None and change is None and not job.force:
            log.info("%s: already trained from the same photos with the same recipe; skipping", row.name)
            refs = tuple(ref for ref, _ in latest)
            return RowResult(row.name, STATUS_SKIPPED, time.perf_counter() - start, base=refs[0].base_id, styles=refs)
        note = None if latest is None else f"retrained: {change or 'forced'}"
        if note:
            log.info("%s: %s", row.name, note)
        content = decode(content_bytes, name=row.content).image
        style = decode(style_bytes, name=row.style).image
        # Training sees extra photos only at the colour side: each is shrunk as it is decoded, so a
        # row's 64 large photos are never all held at full size (the result is the same).
        side = job.recipe.schedule.colour_side
        extras = [downscale(decode(data, name=uri).image, side) for uri, data in zip(row.extra_content, extra_bytes)]
        del extra_bytes
        weights = fetch_weights(job.vgg_weights) if job.vgg_weights else None
        progress = RowReporter(board, row.name) if board is not None else None
        if job.base is None:
            pair = train_pair(content, style, job.recipe, extra_content=extras, loss_weights=weights, progress=progress)
        else:
            base = load_base(catalog, job.base)
            pair = train_style(base, content, style, job.recipe, extra_content=extras, loss_weights=weights, progress=progress)
        base_id, refs = publish_pair(catalog, row.name, pair, provenance)
        return RowResult(row.name, STATUS_OK, time.perf_counter() - start, base=base_id, styles=tuple(refs), note=note)
    except Exception as exc:  # noqa: BLE001 -- a row's failure is its result, whatever it is
        log.warning("%s failed", row.name, exc_info=True)
        error = _row_error(exc, job.store)
        return RowResult(row.name, STATUS_ERROR, time.perf_counter() - start, error=error, cause=type(exc).__name__)


_train_row_task = ray.remote(max_retries=_MAX_RETRIES, retry_exceptions=False)(train_row)


# Errors whose message already names the input and the cause.
_NAMED_ERRORS = (ImageDecodeError, StorageError, LossNetUnavailable, CatalogError, WeightsError, InvalidName)


def _row_error(exc: Exception, store: str) -> str:
    """One line for a row's failure. Our errors and the method's name their input already; a
    bare backend error may not, so it gets the store; anything else its type."""
    if isinstance(exc, _NAMED_ERRORS):
        return str(exc)
    if isinstance(exc, BACKEND_ERRORS):
        return f"{store}: {exc}"
    return f"{type(exc).__name__}: {exc}"


def training_change(meta: dict[str, Any], provenance: dict[str, Any], recipe: Recipe) -> str | None:
    """The one definition of "already trained": ``None`` when a style's ``meta`` records the
    same photo bytes and the same recipe as ``provenance`` and ``recipe``; otherwise what
    changed, for the row's result. (Photo URIs may differ: a moved photo is the same photo.)"""
    for kind in ("content", "style"):
        if (meta.get(kind) or {}).get("sha256") != provenance[kind]["sha256"]:
            return f"{kind} photo changed"
    if extra_content_digests(meta) != extra_content_digests(provenance):
        return "extra content photos changed"
    recorded = meta.get("recipe")
    if not isinstance(recorded, dict):
        return "recipe changed (none recorded)"
    differences = _differences(recorded, recipe.to_dict())
    if differences:
        shown = ", ".join(differences[:3]) + (f" and {len(differences) - 3} more" if len(differences) > 3 else "")
        return f"recipe changed ({shown})"
    return None


def extra_content_digests(meta: dict[str, Any]) -> list[str | None]:
    """The sha256 of each extra content photo a style's meta (or a row's provenance) records, in
    order; none recorded (styles from before the column): none. A malformed record gives
    ``None`` entries, which match no photo: the row is retrained, never skipped on a guess."""
    photos = meta.get("extra_content") or []
    if not isinstance(photos, list):
        return [None]
    return [photo.get("sha256") if isinstance(photo, dict) and isinstance(photo.get("sha256"), str) else None for photo in photos]


def _differences(old: Any, new: Any, path: str = "") -> list[str]:
    """``key old -> new`` for every leaf that differs between two JSON values (dotted keys)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [
            line
            for key in sorted(old.keys() | new.keys())
            for line in _differences(old.get(key), new.get(key), f"{path}.{key}" if path else key)
        ]
    return [] if old == new else [f"{path or 'recipe'} {json.dumps(old)} -> {json.dumps(new)}"]


Latest = tuple[tuple[StyleRef, dict[str, Any]], tuple[StyleRef, dict[str, Any]]]


def _latest(catalog: Catalog, name: str) -> Latest | None:
    """The latest ``name`` and ``name.reverse`` with their metas, if both exist."""
    found = []
    for style_name in (name, name + REVERSE_SUFFIX):
        try:
            ref = catalog.resolve(style_name)
        except StyleNotFound:
            return None
        found.append((ref, catalog.style_meta(ref)))
    return found[0], found[1]


def _pair_change(latest: Latest | None, provenance: dict[str, Any], recipe: Recipe) -> str | None:
    """What differs between the row's training and its latest published pair (``None``: nothing)."""
    if latest is None:
        return "not trained yet"
    (ref, meta), (reverse_ref, reverse_meta) = latest
    if ref.base_id != reverse_ref.base_id:
        return f"{ref.spec} and {reverse_ref.spec} are on different bases"
    return training_change(meta, provenance, recipe) or training_change(reverse_meta, provenance, recipe)


# ---- loss-network weights --------------------------------------------------------------------
def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "photostyle" / "vgg"


def fetch_weights(uri: str) -> Path:
    """A local path to the weights file at ``uri``. Local files are used where they are; remote
    ones are downloaded once per node into ``~/.cache/photostyle/vgg/`` (keyed by URI and the
    object's size/ETag/mtime, so a replaced object is fetched again), through a temporary file
    and a rename, so concurrent tasks on one node never read a partial file."""
    fs, path = filesystem(uri)
    if isinstance(fs, LocalFileSystem):
        return Path(path)
    try:
        fs.invalidate_cache(path)
        key = hashlib.sha256(f"{uri}\n{fs.ukey(path)}".encode()).hexdigest()[:16]
    except FileNotFoundError as exc:
        raise ObjectNotFound(f"loss-network weights {uri}: no such object") from exc
    except BACKEND_ERRORS as exc:
        raise StorageError(f"loss-network weights {uri}: cannot read ({exc})") from exc
    target = _cache_dir() / key / posixpath.basename(path)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(temporary_name())
    try:
        fs.get_file(path, str(tmp))
        os.replace(tmp, target)
    except BACKEND_ERRORS as exc:
        raise StorageError(f"loss-network weights {uri}: cannot fetch ({exc})") from exc
    finally:
        tmp.unlink(missing_ok=True)
    log.info("fetched loss-network weights %s to %s", uri, target)
    return target

"""``apply`` as a job: plan in the driver, then stream the photos through Ray Data.

**Planning** (driver, Arrow only, no per-photo Python), after the style is resolved and its
checksums verified: list the input folder or read the URI manifest; subtract the inputs that already
have an ``ok`` row for this style version (a hash anti-join); refuse, as error rows, inputs
whose result path would be unsafe (see ``OutputLayout.conflicts``).

**Streaming**: the work list becomes a dataset of URIs only (never photos), in blocks of one
batch each up to 1,000 blocks (``from_arrow`` runs a metadata task per block: 10,000 blocks took
30 s to set up). Larger runs get blocks of several batches; an actor streams through its block
batch by batch, committing each, and the cost is a tail of at most one block per actor. No
Ray Data read stage is used: on a CPU-only cluster its tasks would wait forever behind actors
that hold every CPU. Stage layout:

- cluster with GPUs: read+decode in CPU tasks -> stylise in an actor pool, ``num_gpus`` per
  actor -> encode+write+commit in CPU tasks. Codecs run beside the GPU, never in its way.
- CPU only: one actor per CPU doing all steps for its batch. Separate codec tasks would need
  logical CPUs of their own, which an actor on every core leaves none of (Ray Data then holds
  every commit until the actors finish, measured); and moving decoded pixels between processes
  only costs copies when every step competes for the same cores.

Batching: photos of any size share a batch and are stylised one at a time. Stacking equal-sized
photos into one tensor halved throughput at 512 px on CPU (6.8 vs 13.4 photos/s, 2 cores; the
activations no longer fit in cache) and only helped 64 px thumbnails.

Every batch commits its own manifest part as soon as it is written (``apply_stages``), so a job
killed at any point loses at most the batches in flight. Ray's workers outlive a killed driver
by a second or two and may still commit the batch in their hands: a rerun started inside that
window records those photos twice (the same output; "done" and ``status`` count inputs once).
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import ray
import ray.data
from ray.exceptions import RayError

from photostyle.lut_render import DEFAULT_LUT_SIZE, check_size, check_strength
from photostyle.stylize import DEFAULT_WORKING_SIDE, check_render
from pipeline.apply_stages import CommitSpec, DecodeSpec, StyliseActor, read_and_decode, write_and_commit
from pipeline.inputs import first_occurrences, list_inputs
from pipeline.manifests import OUTPUTS_SCHEMA, STATUS_ERROR, compact_run, pending_inputs, write_outputs_part
from pipeline.outputs import SAME_FORMAT, OutputLayout, new_run_id
from pipeline.published import LoadedStyle
from pipeline.ray_runtime import cluster_has_gpus, ensure_ray
from pipeline.storage import filesystem, uri_of

__all__ = ["ApplyOptions", "ApplyResult", "JobFailed", "Plan", "PlanError", "build_dataset", "plan_apply", "run_apply"]

log = logging.getLogger(__name__)

_MAX_BLOCKS = 1_000  # beyond, blocks hold several batches (see build_dataset)


class PlanError(ValueError):
    """Options or paths that make the run impossible; nothing was done."""


class JobFailed(RuntimeError):
    """The Ray job stopped (e.g. the outputs manifest could not be written); what was committed
    stays committed and a rerun resumes from there."""


@dataclass(frozen=True)
class ApplyOptions:
    """The knobs of one run (see ``pst-pipeline apply --help``)."""

    format: str = SAME_FORMAT
    quality: int = 92
    max_side: int | None = None
    render: str | None = None  # None: the style's default (photostyle.stylize.default_render)
    working_side: int = DEFAULT_WORKING_SIDE
    lut_size: int = DEFAULT_LUT_SIZE
    strength: float = 1.0  # part of what "done" means (manifests.done_filter)
    batch_size: int = 32
    concurrency: int | None = None
    gpus_per_worker: float | None = None
    force: bool = False


@dataclass(frozen=True)
class Plan:
    """What one run will do, decided before any photo is touched."""

    style: LoadedStyle
    layout: OutputLayout
    todo: pa.Array | pa.ChunkedArray  # input URIs to process
    rejected: pa.Table  # input_uri, error: pending inputs refused while planning
    skipped: int  # inputs already ok for this style version
    run_id: str
    started: float  # time.monotonic() when planning began


@dataclass(frozen=True)
class ApplyResult:
    """What ``apply --json`` prints."""

    processed: int
    skipped: int
    errors: int
    seconds: float
    model_seconds: float
    run_id: str
    style: str
    style_version: str
    manifest: str

    @property
    def error_rate(self) -> float:
        attempted = self.processed + self.errors
        return self.errors / attempted if attempted else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "processed": self.processed,
            "skipped": self.skipped,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "model_seconds": round(self.model_seconds, 3),
            "run_id": self.run_id,
            "style": self.style,
            "style_version": self.style_version,
            "manifest": self.manifest,
        }


def plan_apply(style: LoadedStyle, input_uri: str, output_uri: str, options: ApplyOptions) -> Plan:
    """List the inputs of a resolved, verified style (``published.load_style``) and subtract
    what is done."""
    started = time.monotonic()
    _check_rendering(style, options)
    fs, path = filesystem(output_uri)
    output = uri_of(fs, path)
    inputs = list_inputs(input_uri, exclude=output)
    if inputs.root is not None and (inputs.root == output or inputs.root.startswith(output + "/")):
        raise PlanError(f"--output {output_uri} must not be the input folder or contain it ({input_uri})")
    layout = OutputLayout(output, inputs.root, options.format)

    # Memory, at 10 M inputs: only the small sets (done slices, conflicts) are ever hashed
    # against the inputs, and the full list is dropped before the work list is deduplicated.
    conflicts = layout.conflicts(inputs.uris)
    listed, todo = len(inputs.uris), inputs.uris
    del inputs
    if not options.force:
        todo = pending_inputs(todo, output, style.ref.name, style.ref.version, strength=options.strength)
    skipped = listed - len(todo)
    if layout.input_root is None:
        todo = first_occurrences(todo)
    refused = pc.is_in(todo, value_set=conflicts["input_uri"])
    rejected = conflicts.filter(pc.is_in(conflicts["input_uri"], value_set=pc.filter(todo, refused)))
    if rejected.num_rows:
        todo = pc.filter(todo, pc.invert(refused))
    pa.default_memory_pool().release_unused()  # planning's scratch memory back to the OS, not kept for later
    log.info(
        "%s: %d inputs, %d already done, %d to stylise, %d refused",
        style.ref.spec, listed, skipped, len(todo), rejected.num_rows,
    )
    return Plan(style, layout, todo, rejected, skipped, new_run_id(), started)


def build_dataset(plan: Plan, options: ApplyOptions) -> ray.data.Dataset:
    """The streaming Ray Data pipeline over ``plan.todo``; each output row summarises one
    committed batch (``ok``, ``errors``, ``model_seconds``). Ray must be initialised."""
    has_gpus = cluster_has_gpus()
    gpus = options.gpus_per_worker if options.gpus_per_worker is not None else (1.0 if has_gpus else 0.0)
    if gpus and not has_gpus:
        raise PlanError(f"--gpus-per-worker {gpus:g}: the Ray cluster has no GPUs")
    resources = ray.cluster_resources()
    workers = options.concurrency or max(1, int(resources.get("GPU", 0) / gpus if gpus else resources.get("CPU", 1)))
    batch = options.batch_size
    blocks = max(1, min(_MAX_BLOCKS, math.ceil(len(plan.todo) / batch)))
    ref = plan.style.ref
    decode = DecodeSpec(options.max_side)
    commit = CommitSpec(plan.layout, options.quality, plan.run_id, ref.name, ref.version, ref.base_id, options.strength)
    model = {
        "base": plan.style.base.to_bytes(),
        "style": plan.style.style.to_bytes(),
        "render": check_render(plan.style.base.config, options.render),
        "working_side": options.working_side,
        "lut_size": options.lut_size,
        "strength": options.strength,
    }
    pool = ray.data.ActorPoolStrategy(size=min(workers, blocks))
    common = {"batch_size": batch, "batch_format": "pyarrow"}
    log.info(
        "stylising %d photos with %d %s worker(s), batches of %d",
        len(plan.todo), workers, f"GPU ({gpus:g} each)" if gpus else "CPU", batch,
    )

    ds = ray.data.from_arrow(pa.table({"input_uri": plan.todo}), override_num_blocks=blocks)
    if not gpus:
        actor_args = {**model, "device": "cpu", "decode": decode, "commit": commit}
        return ds.map_batches(StyliseActor, fn_constructor_kwargs=actor_args, compute=pool, num_cpus=1, **common)
    ds = ds.map_batches(read_and_decode, fn_kwargs={"spec": decode}, num_cpus=1, udf_modifying_row_count=False, **common)
    ds = ds.map_batches(
        StyliseActor,
        fn_constructor_kwargs={**model, "device": None},
        compute=pool,
        num_gpus=gpus,
        num_cpus=1,
        udf_modifying_row_count=False,
        **common,
    )
    return ds.map_batches(write_and_commit, fn_kwargs={"spec": commit}, num_cpus=1, **common)


def run_apply(plan: Plan, options: ApplyOptions) -> ApplyResult:
    """Record the refused inputs, stream the work list through Ray (started or joined here if
    needed) and count what this run committed."""
    errors = _record_rejected(plan, options.strength)
    processed, model_seconds = 0, 0.0
    if len(plan.todo):
        ensure_ray()
        try:
            for summary in build_dataset(plan, options).iter_batches(batch_size=None, batch_format="pyarrow"):
                fatal = pc.drop_null(summary["fatal"])
                if len(fatal):
                    raise JobFailed(_stopped(plan, processed + errors, fatal[0].as_py()))
                processed += pc.sum(summary["ok"]).as_py()
                errors += pc.sum(summary["errors"]).as_py()
                model_seconds += pc.sum(summary["model_seconds"]).as_py()
        except RayError as exc:
            raise JobFailed(_stopped(plan, processed + errors, _root_cause(exc))) from exc
    _compact(plan)
    ref = plan.style.ref
    return ApplyResult(
        processed=processed,
        skipped=plan.skipped,
        errors=errors,
        seconds=time.monotonic() - plan.started,
        model_seconds=model_seconds,
        run_id=plan.run_id,
        style=ref.name,
        style_version=ref.version,
        manifest=plan.layout.manifest_uri,
    )


def _check_rendering(style: LoadedStyle, options: ApplyOptions) -> None:
    """Refuse, before anything is done, a render the style cannot have and bad LUT sizes or
    strengths (a library caller's: the CLI refuses them first)."""
    try:
        check_render(style.base.config, options.render)
        check_size(options.lut_size)
        check_strength(options.strength)
    except ValueError as exc:
        raise PlanError(f"{style.ref.spec}: {exc}") from None


def _compact(plan: Plan) -> None:
    """Merge the finished run's manifest parts (one per batch) into one. Everything is already
    committed, so a failure here costs only tidiness: it is logged, not raised."""
    try:
        compact_run(plan.layout.output, plan.run_id)
    except (OSError, pa.ArrowException) as exc:
        log.warning("could not compact the manifest parts of run %s (the results are committed): %s", plan.run_id, exc)


def _stopped(plan: Plan, committed: int, reason: str) -> str:
    return (
        f"apply {plan.style.ref.spec} to {plan.layout.output} stopped after committing {committed} photos "
        f"(a rerun resumes from there): {reason}"
    )


def _root_cause(exc: RayError) -> str:
    """The original exception line of a Ray task failure (Ray passes it on as text only)."""
    lines = str(exc).splitlines()
    found = [line for line in lines if re.match(r"^[\w.]+(Error|Exception): ", line)]
    return found[0] if found else type(exc).__name__


def _record_rejected(plan: Plan, strength: float) -> int:
    """Commit the inputs refused while planning as error rows of this run."""
    n = plan.rejected.num_rows
    if not n:
        return 0
    ref = plan.style.ref
    constant = {
        "style": ref.name,
        "style_version": ref.version,
        "base_id": ref.base_id,
        "status": STATUS_ERROR,
        "run_id": plan.run_id,
        "strength": strength,
        "finished_at": pa.scalar(time.time_ns() // 1000, pa.int64()).cast(OUTPUTS_SCHEMA.field("finished_at").type),
    }
    columns = {
        f.name: plan.rejected[f.name]
        if f.name in plan.rejected.column_names
        else pa.repeat(pa.scalar(constant.get(f.name), f.type), n)
        for f in OUTPUTS_SCHEMA
    }
    write_outputs_part(plan.layout.output, pa.table(columns, schema=OUTPUTS_SCHEMA))
    for error in plan.rejected["error"].to_pylist()[:5]:
        log.warning("%s", error)
    return n

"""``apply`` as a job: plan in the driver, then stream the photos through Ray Data.

**Planning** (driver, Arrow only, no per-photo Python), after the style is resolved and its
checksums verified: list the input folder or read the URI manifest; claim the output folder for
the style (``pipeline.ownership``: another style's folder is refused); subtract the inputs that
are done for this style version (a hash anti-join); refuse, as error rows, inputs whose result
path would be unsafe (see ``OutputLayout.conflicts``) and a manifest's URIs of schemes the job
does not fetch (``http(s)`` unless ``--allow-http``).

**Streaming**: the work list becomes a dataset of URIs only (never photos), in blocks of one
batch each up to 1,000 blocks (``from_arrow`` runs a metadata task per block: 10,000 blocks took
30 s to set up). Larger runs get blocks of several batches; an actor streams through its block
batch by batch, committing each, and the cost is a tail of at most one block per actor. No
Ray Data read stage is used: on a CPU-only cluster its tasks would wait forever behind actors
that hold every CPU. Stage layout:

- cluster with GPUs: read+decode in CPU tasks -> stylise in an actor pool, ``num_gpus`` per
  actor -> encode+write+commit in CPU tasks. Codecs run beside the GPU, never in its way.
  Decoded blocks end at a byte budget (``apply_stages.DECODED_BYTES_PER_BLOCK``), the actor
  takes one photo at a time and the write tasks take whole blocks (one commit per block), so
  no stage gathers a batch of full-size photos.
- CPU only: one actor per CPU doing all steps for its batch. Separate codec tasks would need
  logical CPUs of their own, which an actor on every core leaves none of (Ray Data then holds
  every commit until the actors finish, measured); and moving decoded pixels between processes
  only costs copies when every step competes for the same cores.

Batching: photos of any size share a batch and are stylised one at a time. Stacking equal-sized
photos into one tensor halved throughput at 512 px on CPU (6.8 vs 13.4 photos/s, 2 cores; the
activations no longer fit in cache) and only helped 64 px thumbnails.

Every batch commits its own manifest part as soon as it is written (``apply_stages``), so a job
killed at any point loses at most the batches in flight. Ray's workers outlive a killed driver
by a second or two and may still commit the batch in their hands; a rerun started inside that
window (a restarted driver) would record those photos twice, so each run holds a lease on its
output, taken before planning, which revokes the old run's and fences its late commits
(``pipeline.leases``).

On a cluster of several nodes, local ``--input``/``--output`` paths are refused unless declared
shared (``ApplyOptions.shared_fs``): each node would write its own disk.
"""

from __future__ import annotations

import logging
import math
import queue
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import ray
import ray.data
from ray.exceptions import RayError

from photostyle.lut_render import DEFAULT_LUT_SIZE, check_size, check_strength
from photostyle.stylize import check_render
from pipeline.apply_stages import CommitSpec, DecodeSpec, StylizeActor, read_and_decode, write_and_commit
from pipeline.inputs import HTTP_SCHEMES, OBJECT_STORE_SCHEMES, first_occurrences, list_inputs, refused_schemes, scheme_of
from pipeline.leases import RunLease
from pipeline.manifests import STATUS_ERROR
from pipeline.outputs import SAME_FORMAT, OutputLayout, new_run_id
from pipeline.outputs_manifest import OUTPUTS_SCHEMA, compact_run, done_slices, pending_inputs, write_outputs_part
from pipeline.ownership import Owner, claim_output
from pipeline.published import LoadedStyle
from pipeline.ray_runtime import NodeLocalPath, cluster_has_gpus, ensure_ray, refuse_node_local
from pipeline.storage import filesystem, uri_of

__all__ = [
    "ApplyOptions",
    "ApplyResult",
    "JobFailed",
    "Plan",
    "PlanError",
    "Stalled",
    "build_dataset",
    "each_within",
    "plan_apply",
    "run_apply",
]

log = logging.getLogger(__name__)

_MAX_BLOCKS = 1_000  # beyond, blocks hold several batches (see build_dataset)
T = TypeVar("T")


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
    working_side: int | None = None  # None: the render's default (photostyle.stylize.default_working_side)
    lut_size: int = DEFAULT_LUT_SIZE
    strength: float = 1.0  # part of what "done" means (outputs_manifest.done_filter)
    batch_size: int = 32
    concurrency: int | None = None
    gpus_per_worker: float | None = None
    force: bool = False
    batch_timeout: float = 1800.0  # seconds without a committed batch before the job is stopped
    allow_http: bool = False  # fetch a manifest's http(s):// URIs
    shared_fs: bool = False  # local paths are on a file system every node mounts


@dataclass(frozen=True)
class Plan:
    """What one run will do, decided before any photo is touched."""

    style: LoadedStyle
    layout: OutputLayout
    owner: Owner  # the output folder's claim this run writes under
    todo: pa.Array | pa.ChunkedArray  # input URIs to process
    rejected: pa.Table  # input_uri, error: pending inputs refused while planning
    skipped: int  # inputs already ok for this style version
    run_id: str
    started: float  # time.monotonic() when planning began
    lease: RunLease  # held from before the done set was read; released by run_apply


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
    started, run_id = time.monotonic(), new_run_id()
    _check_rendering(style, options)
    fs, path = filesystem(output_uri)
    output = uri_of(fs, path)
    inputs = list_inputs(input_uri, exclude=output)
    if inputs.root is not None and (inputs.root == output or inputs.root.startswith(output + "/")):
        raise PlanError(f"--output {output_uri} must not be the input folder or contain it ({input_uri})")
    _refuse_node_local(input_uri, inputs.uris if inputs.root is None else None, output_uri, options)
    layout = OutputLayout(output, inputs.root, options.format)
    ref = style.ref
    owner = claim_output(output, ref.name, ref.version, run_id)

    # Memory, at 10 M inputs: only the small sets (done slices, conflicts) are ever hashed
    # against the inputs, and the full list is dropped before the work list is deduplicated.
    conflicts = layout.conflicts(inputs.uris)
    if inputs.root is None:
        conflicts = pa.concat_tables([refused_schemes(inputs.uris, _fetched_schemes(input_uri, output, options)), conflicts])
    listed, todo = len(inputs.uris), inputs.uris
    del inputs
    lease = RunLease(output, run_id)
    lease.acquire()  # before reading what is done: an old run's late commits are fenced off
    try:
        if not options.force:
            todo = pending_inputs(todo, output, owner.style, owner.style_version, owner.since, strength=options.strength)
    except BaseException:
        lease.release()
        raise
    skipped = listed - len(todo)
    if layout.input_root is None:
        todo = first_occurrences(todo)
    conflicts = pa.concat_tables([conflicts, _results_of_others(layout, todo, owner)])
    refused = pc.is_in(todo, value_set=conflicts["input_uri"])
    rejected = conflicts.filter(pc.is_in(conflicts["input_uri"], value_set=pc.filter(todo, refused)))
    if rejected.num_rows:
        todo = pc.filter(todo, pc.invert(refused))
        rejected = _first_reason(rejected)
    pa.default_memory_pool().release_unused()  # planning's scratch memory back to the OS, not kept for later
    log.info(
        "%s: %d inputs, %d already done, %d to stylise, %d refused",
        ref.spec, listed, skipped, len(todo), rejected.num_rows,
    )
    return Plan(style, layout, owner, todo, rejected, skipped, run_id, started, lease)


def _results_of_others(layout: OutputLayout, todo: pa.Array | pa.ChunkedArray, owner: Owner) -> pa.Table:
    """``input_uri, error`` of the inputs whose result path already holds another input's
    current ``ok`` result (e.g. yesterday's ``--input`` had a photo of the same name): writing
    it would make that row describe other bytes.

    One slice of the manifest's current ok rows at a time, like ``pending_inputs``; only the
    work list's result paths are computed."""
    found = [pa.table({"input_uri": pa.array([], pa.string()), "error": pa.array([], pa.string())})]
    if not len(todo):
        return found[0]
    full = None  # computed when the first slice of current results arrives (none in a fresh folder)
    for rows in done_slices(layout.output, owner.style, owner.style_version, owner.since, columns=["input_uri", "output_uri"]):
        if full is None:  # a million at a time: the transient copies of 10 M paths would cost GBs
            full = pa.chunked_array(
                [
                    pc.binary_join_element_wise(layout.output, layout.targets(todo.slice(i, 1_000_000))["path"], "/")
                    for i in range(0, len(todo), 1_000_000)
                ]
            )
        hit = pc.is_in(full, value_set=rows["output_uri"])
        if not pc.any(hit).as_py():
            continue
        mine = pa.table({"output_uri": pc.filter(full, hit), "input_uri": pc.filter(todo, hit)})
        theirs = rows.rename_columns(["holder", "output_uri"])
        clash = mine.join(theirs, "output_uri")
        clash = clash.filter(pc.not_equal(clash["input_uri"], clash["holder"]))
        if clash.num_rows:
            error = pc.binary_join_element_wise(
                clash["input_uri"], ": its result ", clash["output_uri"], " already holds the result of ", clash["holder"],
                " (one output folder mirrors one collection: use another --output)", "",
            )
            found.append(pa.table({"input_uri": clash["input_uri"], "error": error}))
    return pa.concat_tables(found)


def _fetched_schemes(input_uri: str, output: str, options: ApplyOptions) -> set[str]:
    """The schemes a manifest's URIs may have: local files, the object stores and whatever
    --input and --output use; ``http(s)`` only with ``--allow-http`` (a manifest must not make
    workers request arbitrary addresses, e.g. a cloud metadata endpoint)."""
    schemes = (OBJECT_STORE_SCHEMES | {"file", scheme_of(input_uri), scheme_of(output)}) - HTTP_SCHEMES
    return schemes | HTTP_SCHEMES if options.allow_http else schemes


def _first_reason(rejected: pa.Table) -> pa.Table:
    """One row per refused input (a URI refused for two reasons keeps the first)."""
    uris = rejected["input_uri"]
    first = pc.equal(pc.index_in(uris, value_set=uris), pa.array(range(len(uris))))
    return rejected.filter(first)


def _refuse_node_local(input_uri: str, listed: pa.Array | pa.ChunkedArray | None, output_uri: str, options: ApplyOptions) -> None:
    """Refuse local input or output paths on a multi-node cluster (see ``refuse_node_local``);
    ``listed``: a URI manifest's photos, which the workers read (the manifest itself, the driver)."""
    paths = {"--output": output_uri}
    if listed is None:
        paths["--input"] = input_uri
    else:
        local = pc.filter(listed, pc.match_substring_regex(listed, r"^(/|file://)"))
        if len(local):
            paths[f"--input {input_uri} lists {len(local)} local photo(s), e.g."] = local[0].as_py()
    try:
        refuse_node_local(paths, shared_fs=options.shared_fs)
    except NodeLocalPath as exc:
        raise PlanError(str(exc)) from exc


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
    decode = DecodeSpec(options.max_side, plan.layout.input_root)
    commit = CommitSpec(plan.layout, options.quality, plan.run_id, plan.owner, ref.base_id, options.strength)
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
        return ds.map_batches(StylizeActor, fn_constructor_kwargs=actor_args, compute=pool, num_cpus=1, **common)
    # Memory follows bytes, not photo counts (apply_stages): decoded blocks end at a byte budget,
    # the GPU actor takes one photo at a time, the writer whole blocks (one commit per block).
    ds = ds.map_batches(read_and_decode, fn_kwargs={"spec": decode}, num_cpus=1, udf_modifying_row_count=False, **common)
    ds = ds.map_batches(
        StylizeActor,
        fn_constructor_kwargs={**model, "device": None},
        compute=pool,
        num_gpus=gpus,
        num_cpus=1,
        udf_modifying_row_count=False,
        batch_size=1,
        batch_format="pyarrow",
    )
    return ds.map_batches(write_and_commit, fn_kwargs={"spec": commit}, num_cpus=1, batch_size=None, batch_format="pyarrow")


def run_apply(plan: Plan, options: ApplyOptions) -> ApplyResult:
    """Record the refused inputs, stream the work list through Ray (started or joined here if
    needed) and count what this run committed."""
    try:
        errors = _record_rejected(plan, options.strength)
        processed, model_seconds = 0, 0.0
        if len(plan.todo):
            ensure_ray()
            try:
                summaries = build_dataset(plan, options).iter_batches(batch_size=None, batch_format="pyarrow")
                for summary in each_within(summaries, options.batch_timeout):
                    fatal = pc.drop_null(summary["fatal"])
                    if len(fatal):
                        raise JobFailed(_stopped(plan, processed + errors, fatal[0].as_py()))
                    processed += pc.sum(summary["ok"]).as_py()
                    errors += pc.sum(summary["errors"]).as_py()
                    model_seconds += pc.sum(summary["model_seconds"]).as_py()
            except RayError as exc:
                raise JobFailed(_stopped(plan, processed + errors, _root_cause(exc))) from exc
            except Stalled as exc:
                raise JobFailed(_stopped(plan, processed + errors, str(exc))) from exc
        _compact(plan)
    finally:
        plan.lease.release()
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


class Stalled(Exception):
    """No item came from an iterator within its deadline."""


def each_within(items: Iterator[T], seconds: float) -> Iterator[T]:
    """``items``, raising :class:`Stalled` when the next one takes more than ``seconds``.

    The deadline behind apply's per-call timeouts: whatever else stops every batch (a worker
    stuck in native code, a node that never comes, a store call that no timeout covers), the
    job fails with a clear error instead of waiting forever. ``items`` is drained in a daemon
    thread, which stops (and closes ``items``) at its next item once the consumer is gone; one
    that never yields again is abandoned (the command then exits, and Ray with it)."""
    handoff: queue.Queue[tuple[str, Any]] = queue.Queue()  # unbounded: items are batch summaries
    consumer_gone = threading.Event()

    def drain() -> None:
        try:
            for item in items:
                if consumer_gone.is_set():
                    break
                handoff.put(("item", item))
        except BaseException as exc:  # noqa: BLE001 -- handed to the consumer, raised there
            handoff.put(("raised", exc))
        else:
            handoff.put(("done", None))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    threading.Thread(target=drain, name="apply-results", daemon=True).start()
    try:
        while True:
            try:
                kind, value = handoff.get(timeout=seconds)
            except queue.Empty:
                raise Stalled(f"no batch was committed for {seconds:g} s (--batch-timeout)") from None
            if kind == "done":
                return
            if kind == "raised":
                raise value
            yield value
    finally:
        consumer_gone.set()


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

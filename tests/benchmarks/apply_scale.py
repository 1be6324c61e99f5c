"""How ``apply`` plans at scale: time and peak driver memory from a URI manifest of N inputs, half
of them already done in the outputs manifest, to the first committed batch.

Measured in a fresh process per size (its own local Ray), after the data was written by
another: ``plan_apply`` (read the input manifest, the done set, the anti-join, the output-path
conflict checks), ``build_dataset`` (the URI dataset in blocks), and the first batch through the
real pipeline. The inputs do not exist, so that batch becomes error rows, committed like any
other; the job is stopped there.

    python tests/benchmarks/apply_scale.py --rows 1000000 10000000
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import resource
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from manifest_scale import STYLE, VERSION, input_uris, make_part

from pipeline.outputs_manifest import write_outputs_part

log = logging.getLogger("apply_scale")

COLUMNS = [  # header, result key, format
    ("inputs", "rows", "{:,}"),
    ("plan s", "plan_s", "{:.2f}"),
    ("dataset s", "dataset_s", "{:.2f}"),
    ("1st batch s", "first_batch_s", "{:.2f}"),
    ("total s", "total_s", "{:.2f}"),
    ("arrow peak MiB", "arrow_peak_mib", "{:.0f}"),
    ("RSS peak MiB", "rss_peak_mib", "{:.0f}"),
    ("RSS delta MiB", "rss_peak_delta_mib", "{:.0f}"),
]

# manifest_scale's URIs, moved to a local path that does not exist: reading one fails at once.
NOWHERE = "/nonexistent/"


def local(uris: pa.Array) -> pa.Array:
    return pc.replace_substring(uris, "s3://", NOWHERE)


def generate(workdir: Path, rows: int, part_rows: int) -> None:
    """The input manifest (``uri``), an outputs manifest with every even input ok, and a style
    named like the one the outputs manifest records."""
    import torch

    from photostyle import TrainConfig, train_pair
    from photostyle.imageio import to_image
    from pipeline.catalog import Catalog
    from pipeline.published import publish_pair

    pq.write_table(pa.table({"uri": local(input_uris(0, rows))}), workdir / "inputs.parquet")
    for i, start in enumerate(range(0, rows, part_rows)):
        part = make_part(start, min(start + part_rows, rows), f"run-{i}")
        write_outputs_part(str(workdir / "out"), part.set_column(0, "input_uri", local(part["input_uri"])))
    photo = to_image(torch.rand(3, 48, 48, generator=torch.Generator().manual_seed(0)))
    pair = train_pair(photo, photo, TrainConfig(iterations=1, crop=32, loss_net="vgg16", loss_weights="random"))
    publish_pair(Catalog(str(workdir / "store")), STYLE, pair, {})


def measure(workdir: Path, rows: int, batch_size: int) -> dict[str, float]:
    import ray

    from pipeline.apply_job import ApplyOptions, build_dataset, plan_apply
    from pipeline.catalog import Catalog
    from pipeline.published import load_style

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    style = load_style(Catalog(str(workdir / "store")), f"{STYLE}@{VERSION}")
    options = ApplyOptions(batch_size=batch_size)
    pool = pa.default_memory_pool()
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    t0 = time.perf_counter()
    plan = plan_apply(style, str(workdir / "inputs.parquet"), str(workdir / "out"), options)
    t1 = time.perf_counter()
    dataset = build_dataset(plan, options)
    t2 = time.perf_counter()
    first = next(iter(dataset.iter_batches(batch_size=None, batch_format="pyarrow")))
    t3 = time.perf_counter()

    assert len(plan.todo) == rows // 2 and plan.skipped == (rows + 1) // 2, (len(plan.todo), plan.skipped)
    assert first["errors"][0].as_py() > 0 and first["ok"][0].as_py() == 0
    result = {
        "plan_s": t1 - t0,
        "dataset_s": t2 - t1,
        "first_batch_s": t3 - t2,
        "total_s": t3 - t0,
        "arrow_peak_mib": pool.max_memory() / 2**20,
        "rss_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_peak_delta_mib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024,
    }
    ray.shutdown()
    return result


def run_size(rows: int, part_rows: int, batch_size: int, workdir: Path) -> dict:
    workdir.mkdir()
    t0 = time.perf_counter()
    in_fresh_process(generate, workdir, rows, part_rows)
    log.info("wrote %d inputs and %d manifest rows in %.1f s", rows, rows, time.perf_counter() - t0)
    return {"rows": rows, **in_fresh_process(measure, workdir, rows, batch_size)}


def in_fresh_process(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a new interpreter, so that its peak memory is its own."""
    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--part-rows", type=int, default=250_000, help="outputs-manifest rows per part file")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workdir", type=Path, default=None, help="where to write (default: a temp dir)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        results = [run_size(rows, args.part_rows, args.batch_size, Path(tmp) / str(rows)) for rows in args.rows]
    table = [[header for header, _, _ in COLUMNS]]
    table += [[spec.format(r[key]) for _, key, spec in COLUMNS] for r in results]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    print("\n".join("  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in table))  # the output


if __name__ == "__main__":
    main()

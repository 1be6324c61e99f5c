"""How the outputs-manifest done-set scales: time and peak memory to read N manifest rows and
anti-join N input URIs against the done set of one style version (``pending_inputs``, which hashes
the done set a slice at a time).

Each size runs in two fresh processes: one writes the manifest (through ``write_outputs_part``,
so the real schema and validation), one measures, so the memory figures are the measurement's
own and not what generating the data cost.

    python tests/benchmarks/manifest_scale.py --rows 1000000 10000000
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.manifests import STATUS_ERROR, STATUS_OK
from pipeline.outputs_manifest import OUTPUTS_SCHEMA, pending_inputs, write_outputs_part

log = logging.getLogger("manifest_scale")

STYLE, VERSION = "monet", "v1"


def input_uris(start: int, stop: int) -> pa.Array:
    digits = pc.utf8_lpad(pc.cast(pa.array(np.arange(start, stop, dtype=np.int64)), pa.string()), 10, "0")
    return pc.binary_join_element_wise("s3://photos/in/", digits, ".jpg", "")


def make_part(start: int, stop: int, run_id: str) -> pa.Table:
    """Rows for inputs [start, stop): even ones ok, odd ones failed."""
    n = stop - start
    uris = input_uris(start, stop)
    ok = pc.equal(pc.bit_wise_and(pa.array(np.arange(start, stop, dtype=np.int64)), 1), 0)
    columns = {
        "input_uri": uris,
        "output_uri": pc.if_else(ok, pc.replace_substring(uris, "/in/", "/out/"), pa.scalar(None, pa.string())),
        "style": pa.array([STYLE] * n),
        "style_version": pa.array([VERSION] * n),
        "base_id": pa.array(["0123456789abcdef"] * n),
        "status": pc.if_else(ok, STATUS_OK, STATUS_ERROR),
        "error": pc.if_else(ok, pa.scalar(None, pa.string()), "decode failed"),
        "width": pa.array([1024] * n, pa.int32()),
        "height": pa.array([768] * n, pa.int32()),
        "seconds": pa.array([0.25] * n, pa.float64()),
        "run_id": pa.array([run_id] * n),
        "finished_at": pa.array([0] * n, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
    }
    return pa.table(columns, schema=OUTPUTS_SCHEMA)


def generate(output: str, rows: int, part_rows: int) -> None:
    for i, start in enumerate(range(0, rows, part_rows)):
        write_outputs_part(output, make_part(start, min(start + part_rows, rows), f"run-{i}"))


def measure(output: str, rows: int, queue: mp.Queue) -> None:
    inputs = input_uris(0, rows)
    pool = pa.default_memory_pool()
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    base_arrow = pool.bytes_allocated()

    t0 = time.perf_counter()
    todo = pending_inputs(inputs, output, STYLE, VERSION)
    t1 = time.perf_counter()

    assert len(todo) == rows // 2, len(todo)
    queue.put(
        {
            "pending_s": t1 - t0,
            "inputs_mib": inputs.nbytes / 2**20,
            "arrow_peak_mib": (pool.max_memory() - base_arrow) / 2**20,
            "rss_peak_delta_mib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024,
            "rss_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    )


def run_size(rows: int, part_rows: int, workdir: Path) -> dict:
    ctx = mp.get_context("spawn")
    output = str(workdir / f"out-{rows}")
    t0 = time.perf_counter()
    writer = ctx.Process(target=generate, args=(output, rows, part_rows))
    writer.start()
    writer.join()
    if writer.exitcode:
        raise SystemExit(f"generating {rows} rows failed (exit {writer.exitcode})")
    log.info("wrote %d rows in %.1f s", rows, time.perf_counter() - t0)
    queue = ctx.Queue()
    reader = ctx.Process(target=measure, args=(output, rows, queue))
    reader.start()
    result = queue.get()
    reader.join()
    size = sum(p.stat().st_size for p in Path(output, "_manifest").iterdir())
    return {"rows": rows, "parts": -(-rows // part_rows), "manifest_mib": size / 2**20, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--part-rows", type=int, default=250_000, help="rows per part file (one per run)")
    parser.add_argument("--workdir", type=Path, default=None, help="where to write (default: a temp dir)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        lines = [
            f"{'rows':>11} {'parts':>5} {'manifest':>9} {'pending':>8} "
            f"{'arrow peak':>10} {'RSS peak (+delta)':>18}"
        ]
        for rows in args.rows:
            r = run_size(rows, args.part_rows, Path(tmp))
            lines.append(
                f"{r['rows']:>11,} {r['parts']:>5} {r['manifest_mib']:>6.0f} MiB "
                f"{r['pending_s']:>7.2f}s {r['arrow_peak_mib']:>6.0f} MiB "
                f"{r['rss_peak_mib']:>6.0f} MiB (+{r['rss_peak_delta_mib']:.0f})"
            )
        print("\n".join(lines))  # the table is this script's output, not a log line


if __name__ == "__main__":
    main()

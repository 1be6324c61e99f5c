"""The quality protocol on the dpst-dev pairs: settings are chosen on one split, confirmed on another.

    PHOTOSTYLE_DPST_DEV=../shared/data/dpst-dev PHOTOSTYLE_LOSSNET=../shared/data/lossnet \\
        python tests/benchmarks/quality_protocol.py --split dev --out eval-dev \\
        [--extra-content 1-10] [eval flags ...]

Splits: ``dev`` is pairs 1-20 (tune here), ``confirm`` is pairs 21-30 (run once, never tune on it).
Writes the split's pairs manifest (with Deep Photo Style Transfer's published result as the
``reference`` column) to ``<out>/pairs.parquet`` and runs ``pst-pipeline eval --cross`` on it with
the trained VGG16, so the report has both the per-pair table and every style on the split's
other content photos. With ``--extra-content A-B`` every style also gets, as its
``extra_content``, the distinct content photos of dpst-dev pairs A to B (a sample of "the
collection"); ``eval --cross`` then leaves those photos out of its applications. Other flags go to
``eval`` unchanged (``--store``, ``--preset``, ...).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.evaluation import photo_digests

log = logging.getLogger("quality_protocol")

SPLITS = {"dev": range(1, 21), "confirm": range(21, 31)}
WEIGHTS = "vgg16-hed-bsds500.safetensors"


def _folder(variable: str) -> Path:
    value = os.environ.get(variable)
    if not value or not Path(value).is_dir():
        sys.exit(f"{variable} must name the dataset's folder (../shared/data/...); it is {value!r}")
    return Path(value).resolve()


def _cpu() -> str:
    """The CPU's model name (figures are only comparable on one machine)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} x {os.cpu_count()}"
    except OSError:
        pass
    return platform.machine()


def distinct_contents(dpst: Path, numbers: range) -> list[str]:
    """The content photos of those pairs, each once by its pixels (3/4 and 11/12 are one photo)."""
    photos: dict[str, str] = {}
    for n in numbers:
        path = dpst / "content" / f"{n}.png"
        photos.setdefault(photo_digests(str(path))[1], str(path))
    return list(photos.values())


def write_split(dpst: Path, split: str, path: Path, extra: list[str]) -> Path:
    numbers = SPLITS[split]
    columns = {
        "content": [str(dpst / "content" / f"{n}.png") for n in numbers],
        "style": [str(dpst / "style" / f"{n}.png") for n in numbers],
        "name": [f"dpst-{n}" for n in numbers],
        "reference": [str(dpst / "dpst_output" / f"{n}.png") for n in numbers],
    }
    if extra:
        columns["extra_content"] = [extra] * len(numbers)
    table = pa.table(columns)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", choices=sorted(SPLITS), required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--extra-content", metavar="A-B", help="every style's extra content: the content photos of pairs A to B")
    args, eval_args = parser.parse_known_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    dpst, lossnet = _folder("PHOTOSTYLE_DPST_DEV"), _folder("PHOTOSTYLE_LOSSNET")
    extra = []
    if args.extra_content:
        first, last = map(int, args.extra_content.split("-"))
        extra = distinct_contents(dpst, range(first, last + 1))
    pairs = write_split(dpst, args.split, args.out / "pairs.parquet", extra)
    log.info("machine: %s; split %s: pairs %s; extra content: %s", _cpu(), args.split, list(SPLITS[args.split]), extra)
    command = [
        "pst-pipeline", "eval", "--pairs", str(pairs), "--out", str(args.out), "--cross",
        "--loss-net", "vgg16", "--vgg-weights", str(lossnet / WEIGHTS), *eval_args,
    ]  # fmt: skip
    log.info("%s", " ".join(command))
    sys.exit(subprocess.call(command))


if __name__ == "__main__":
    main()

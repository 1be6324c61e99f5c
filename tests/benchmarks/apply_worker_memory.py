"""What one CPU ``apply`` worker holds: its resident memory, above what it held before the batch,
each time it stylises a photo of one batch of large photos (the network is replaced by the
identity, so only the photos' own memory shows).

    python tests/benchmarks/apply_worker_memory.py --photos 6 --size 5000 2800
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import skimage.data
from PIL import Image

from photostyle import TrainConfig, train_pair
from pipeline.apply_job import ApplyOptions, plan_apply
from pipeline.apply_stages import CommitSpec, DecodeSpec, StylizeActor
from pipeline.catalog import Catalog
from pipeline.published import load_style, publish_pair


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=6)
    parser.add_argument("--size", type=int, nargs=2, default=(5000, 2800), metavar=("W", "H"))
    args = parser.parse_args()
    (width, height), tmp = args.size, Path(tempfile.mkdtemp())
    sample = lambda n: Image.fromarray(getattr(skimage.data, n)()).convert("RGB").resize((96, 96))  # noqa: E731
    config = TrainConfig(iterations=2, crop=32, loss_net="vgg16", loss_weights="random")
    publish_pair(Catalog(str(tmp / "store")), "look", train_pair(sample("astronaut"), sample("coffee"), config), {})
    gradient = np.linspace(0, 255, width, dtype=np.uint8)[None, :, None]
    (tmp / "in").mkdir()
    for i in range(args.photos):
        image = np.broadcast_to(gradient, (height, width, 3)).copy()
        image[..., i % 3] = 255 - image[..., i % 3]
        Image.fromarray(image).save(tmp / "in" / f"{i}.jpg", quality=80)

    style = load_style(Catalog(str(tmp / "store")), "look")
    plan = plan_apply(style, str(tmp / "in"), str(tmp / "out"), ApplyOptions())
    actor = StylizeActor(
        style.base.to_bytes(), style.style.to_bytes(), device="cpu",
        decode=DecodeSpec(None, plan.layout.input_root),
        commit=CommitSpec(plan.layout, 80, plan.run_id, plan.owner, style.ref.base_id),
    )  # fmt: skip
    seen: list[int] = []
    actor.stylizer = lambda image: (seen.append(rss()), image)[1]
    before = rss()
    actor(pa.table({"input_uri": plan.todo}))
    print(json.dumps({
        "machine": f"{platform.processor() or platform.machine()}, {Path('/proc/cpuinfo').read_text().count('processor')} CPUs",
        "photos": args.photos,
        "decoded_MB_per_photo": round(width * height * 3 / 1e6, 1),
        "MB_above_start_at_each_stylise": [round((s - before) / 1e6) for s in seen],
    }))  # fmt: skip


if __name__ == "__main__":
    main()

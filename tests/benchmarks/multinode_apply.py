"""``apply`` on a Ray cluster of several nodes on this machine (``ray.cluster_utils.Cluster``: a
0-CPU head and 1-CPU workers), photos and store on a local S3 server (moto), the command joined
through ``$RAY_ADDRESS`` as an operator runs it. Prints, for ``--photos`` small photos:

- photos/s with one worker node, then with two (the run's own ``seconds``, planning included,
  and the command's wall time, Ray connection and process start included);
- what losing a worker node mid-run costs: a run on two workers where one is removed once the
  manifest shows its first committed part (and a fresh node is added), minus the plain run.

Every worker node is a process on this machine, so "two nodes" means two cores at most: this
measures the pipeline's scaling and recovery overhead, not a real cluster's.

    python tests/benchmarks/multinode_apply.py [--photos 160] [--side 64]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import socket
import subprocess
import sys
import time

import boto3
import numpy as np
from PIL import Image


def cpu_name() -> str:
    for line in open("/proc/cpuinfo", encoding="utf-8"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def apply(env: dict[str, str], store: str, photos: str, output: str) -> tuple[float, dict]:
    start = time.monotonic()
    process = run(env, store, photos, output)
    doc = result(process)
    return time.monotonic() - start, doc


def result(process: subprocess.Popen) -> dict:
    out, err = process.communicate(timeout=1800)
    if process.returncode:
        sys.exit(f"apply failed ({process.returncode}): {err[-3000:]}")
    return json.loads(out)


def run(env: dict[str, str], store: str, photos: str, output: str) -> subprocess.Popen:
    args = ["apply", "--json", "--style", "look@v1", "--store", store, "--input", photos, "--output", output]
    return subprocess.Popen(
        [sys.executable, "-c", "from pipeline.cli import main; main()", *args, "--batch-size", "8"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=160)
    parser.add_argument("--side", type=int, default=64, help="long side of the photos, px")
    args = parser.parse_args()

    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL_S3=f"http://127.0.0.1:{port}",
    )
    import s3fs
    from ray.cluster_utils import Cluster

    from photostyle import TrainConfig, train_pair
    from pipeline.catalog import Catalog
    from pipeline.published import publish_pair

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="bench")
    rng = np.random.default_rng(0)
    h = round(args.side * 3 / 4)
    for i in range(args.photos):
        data = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (h, args.side, 3), dtype=np.uint8)).save(data, format="PNG")
        s3.put_object(Bucket="bench", Key=f"photos/{i:04d}.png", Body=data.getvalue())
    content, style = (Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) for _ in range(2))
    pair = train_pair(content, style, TrainConfig(preset="lite", iterations=2, crop=32, loss_net="vgg16", loss_weights="random"))
    store, photos = "s3://bench/store", "s3://bench/photos"
    publish_pair(Catalog(store), "look", pair, {"content": "c.png", "style": "s.png"})

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        env = {**os.environ, "RAY_ADDRESS": cluster.address}
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        apply(env, store, photos, "s3://bench/warm-up")  # first worker start, imports cached
        one = apply(env, store, photos, "s3://bench/one")
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        two = apply(env, store, photos, "s3://bench/two")

        fs = s3fs.S3FileSystem()
        start = time.monotonic()
        process = run(env, store, photos, "s3://bench/lost")
        while fs.invalidate_cache() or not any("/part-" in p for p in fs.find("bench/lost/_manifest")):
            time.sleep(0.05)
        removed_at = time.monotonic() - start
        cluster.remove_node(sorted(cluster.worker_nodes, key=lambda n: n.node_id)[0], allow_graceful=False)
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        doc = result(process)
        lost = (time.monotonic() - start, doc)
    finally:
        cluster.shutdown()
        server.stop()

    print(f"machine: {cpu_name()}, {os.cpu_count()} logical CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"{args.photos} photos of {args.side}x{h} px, PNG on S3 (moto), batches of 8, lite style")
    for label, (wall, doc) in (("1 worker node ", one), ("2 worker nodes", two), ("2, one lost   ", lost)):
        print(
            f"{label}: run {doc['seconds']:6.1f} s = {doc['processed'] / doc['seconds']:5.1f} photos/s; "
            f"command {wall:6.1f} s; processed {doc['processed']}, errors {doc['errors']}"
        )
    print(f"speed-up, 2 nodes vs 1 (run seconds): {one[1]['seconds'] / two[1]['seconds']:.2f}x")
    print(f"node removed {removed_at:.1f} s into the run; cost of the loss: {lost[1]['seconds'] - two[1]['seconds']:+.1f} s")


if __name__ == "__main__":
    main()

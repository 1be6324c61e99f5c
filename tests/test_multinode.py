"""``apply`` and ``train`` on a Ray cluster of several nodes (``ray_cluster``: a 0-CPU head and two
1-CPU workers on this machine), joined through ``$RAY_ADDRESS`` as an operator's commands do,
with the store and the photos on the S3 server: work spreads over the nodes and each row says
where it ran; a worker node lost mid-run costs no photo and no second row or version; a driver
killed and restarted at once records nothing twice; local paths are refused. Tiny photos, a
style trained for 2 iterations and the random loss network: this tests the plumbing."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import boto3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import s3fs
from PIL import Image

from photostyle import TrainConfig, train_pair
from pipeline.catalog import Catalog
from pipeline.outputs_manifest import MANIFEST_DIR, read_outputs
from pipeline.published import publish_pair
from tests.conftest import RayCluster

PHOTOS = 40
ITERATIONS = "100"  # long enough on one core to lose its node mid-row
TIMEOUT = 240  # seconds for one command; a hang fails the test instead of the suite


@pytest.fixture(scope="module")
def bucket(s3_endpoint: str) -> str:
    name = "multinode"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="module")
def store(bucket: str) -> str:
    """A style store on S3 holding ``look`` (random weights, 2 iterations)."""
    rng = np.random.default_rng(1)
    content, style = (Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)) for _ in range(2))
    pair = train_pair(content, style, TrainConfig(iterations=2, crop=32, loss_net="vgg16", loss_weights="random"))
    uri = f"s3://{bucket}/store"
    s3fs.S3FileSystem.clear_instance_cache()
    publish_pair(Catalog(uri), "look", pair, {"content": "c.png", "style": "s.png"})
    return uri


@pytest.fixture(scope="module")
def photos(bucket: str) -> str:
    """PHOTOS small photos of a few sizes under one prefix."""
    s3 = boto3.client("s3")
    rng = np.random.default_rng(2)
    for i in range(PHOTOS):
        image = Image.fromarray(rng.integers(0, 255, (24 + i % 3 * 8, 32, 3), dtype=np.uint8))
        data = io.BytesIO()
        image.save(data, format="PNG")
        s3.put_object(Bucket=bucket, Key=f"photos/{i:03d}.png", Body=data.getvalue())
    return f"s3://{bucket}/photos"


def command(cluster: RayCluster, *args: str) -> subprocess.Popen:
    """``pst-pipeline ARGS`` in its own process, joined to the cluster through $RAY_ADDRESS."""
    return subprocess.Popen(
        [sys.executable, "-c", "from pipeline.cli import main; main()", *args],
        env=cluster.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"command hung for {TIMEOUT} s: {err[-3000:]}")
    return process.returncode, out, err


def parts(output: str) -> list[str]:
    fs = s3fs.S3FileSystem()
    fs.invalidate_cache()
    try:
        return [p for p in fs.ls(f"{output}/{MANIFEST_DIR}", detail=False) if p.rsplit("/", 1)[-1].startswith("part-")]
    except FileNotFoundError:
        return []


def wait_for_parts(output: str, process: subprocess.Popen, at_least: int) -> list[str]:
    """The manifest's part files once there are ``at_least``, while ``process`` still runs."""
    deadline = time.monotonic() + TIMEOUT
    while len(found := parts(output)) < at_least:
        if process.poll() is not None:
            pytest.fail(f"the run ended before it had committed {at_least} parts: {process.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no {at_least} committed parts after {TIMEOUT} s")
        time.sleep(0.1)
    return found


def apply_args(store: str, photos: str, output: str, *extra: str) -> list[str]:
    return ["apply", "--json", "--style", "look@v1", "--store", store, "--input", photos, "--output", output,
            "--batch-size", "2", *extra]  # fmt: skip


def assert_each_photo_once(output: str, photos: str) -> list[dict]:
    """Every photo has exactly one ok row (for look@v1), and its output decodes to the row's size."""
    s3fs.S3FileSystem.clear_instance_cache()
    rows = read_outputs(output).to_pylist()
    ok = [r for r in rows if r["status"] == "ok"]
    counts = Counter(r["input_uri"] for r in ok)
    assert sorted(counts) == [f"{photos}/{i:03d}.png" for i in range(PHOTOS)]
    assert set(counts.values()) == {1}, {uri: n for uri, n in counts.items() if n > 1}
    assert all((r["style"], r["style_version"]) == ("look", "v1") for r in ok)
    fs = s3fs.S3FileSystem()
    for row in ok:
        with Image.open(io.BytesIO(fs.cat_file(row["output_uri"]))) as image:
            image.load()
            assert image.size == (row["width"], row["height"]), row
    return ok


def test_apply_spreads_over_the_nodes_records_them_and_survives_losing_one(
    ray_cluster: RayCluster, store: str, photos: str, bucket: str
) -> None:
    output = f"s3://{bucket}/out-node-loss"
    process = command(ray_cluster, *apply_args(store, photos, output))
    first = wait_for_parts(output, process, at_least=2)
    # remove a node known to be working: the one that committed the first part
    lost = pq.read_table(s3fs.S3FileSystem().open(first[0]))["node_id"][0].as_py()
    ray_cluster.remove_worker(ray_cluster.worker(lost))
    ray_cluster.add_worker()  # a fresh node, so the pool gets back to two workers
    assert len(parts(output)) < PHOTOS / 2, "the run had finished before the node was lost: nothing was tested"

    code, out, err = finish(process)
    assert code == 0, err[-3000:]
    result = json.loads(out)
    assert (result["processed"], result["errors"]) == (PHOTOS, 0)
    ok = assert_each_photo_once(output, photos)

    # where work ran: every row names a node and a device; the lost node did some of it
    nodes = Counter(r["node_id"] for r in ok)
    assert lost in nodes and len(nodes) >= 2 and None not in nodes
    assert {r["device"] for r in ok} == {"cpu"}
    status = subprocess.run(
        [sys.executable, "-c", "from pipeline.cli import main; main()", "status", "--output", output, "--json"],
        capture_output=True, text=True, check=True, timeout=TIMEOUT,
    )  # fmt: skip
    per_node = {n["node_id"]: n for n in json.loads(status.stdout)["nodes"]}
    assert {node: n["ok"] for node, n in per_node.items()} == dict(nodes)


def test_a_driver_killed_and_restarted_at_once_records_each_photo_once(
    ray_cluster: RayCluster, store: str, photos: str, bucket: str
) -> None:
    """KubeRay restarts a failed driver pod: the new driver starts while the old run's workers
    may still be committing. The new run takes the old run's lease; what the old workers still
    commit is fenced off, so each photo ends with one ok row."""
    output = f"s3://{bucket}/out-restart"
    old = command(ray_cluster, *apply_args(store, photos, output))
    wait_for_parts(output, old, at_least=2)
    os.kill(old.pid, signal.SIGKILL)
    new = command(ray_cluster, *apply_args(store, photos, output))
    old.communicate()
    code, out, err = finish(new)
    assert code == 0, err[-3000:]
    assert_each_photo_once(output, photos)
    assert "revoked the lease of run" in err
    # the new run redid only what the old one had not committed
    rows = read_outputs(output)
    assert json.loads(out)["processed"] + json.loads(out)["skipped"] == PHOTOS
    assert len(set(rows["run_id"].to_pylist())) == 2


@pytest.fixture(scope="module")
def pairs(bucket: str) -> str:
    """A pairs manifest of one row, ``far``, its photos on S3."""
    s3 = boto3.client("s3")
    rng = np.random.default_rng(3)
    for name in ("c", "s"):
        data = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(data, format="PNG")
        s3.put_object(Bucket=bucket, Key=f"pairs/{name}.png", Body=data.getvalue())
    table = pa.table({"content": [f"s3://{bucket}/pairs/c.png"], "style": [f"s3://{bucket}/pairs/s.png"], "name": ["far"]})
    data = io.BytesIO()
    pq.write_table(table, data)
    s3.put_object(Bucket=bucket, Key="pairs/pairs.parquet", Body=data.getvalue())
    return f"s3://{bucket}/pairs/pairs.parquet"


def test_an_old_run_whose_workers_still_commit_after_a_newer_run_planned_is_fenced_off(
    ray_cluster: RayCluster, store: str, photos: str, bucket: str
) -> None:
    """The race a restarted driver meets, made certain: the old run's stylise workers are frozen
    (SIGSTOP) holding their batches while a newer run plans and commits, then resume. They must
    commit nothing: the old run stops, naming the lease it lost, and each photo has one row."""
    output = f"s3://{bucket}/out-fenced"
    old = command(ray_cluster, *apply_args(store, photos, output))
    (first, *_) = wait_for_parts(output, old, at_least=2)
    old_run = first.rsplit("/", 1)[-1][len("part-") :].rsplit("-", 1)[0]
    frozen = list(ray_cluster.processes("ray::MapWorker"))
    assert frozen, "no stylise worker found"
    try:
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        spare = ray_cluster.add_worker()  # the frozen workers hold the other CPUs
        new = command(ray_cluster, *apply_args(store, photos, output, "--concurrency", "1"))
        deadline = time.monotonic() + TIMEOUT
        while not [p for p in parts(output) if old_run not in p]:  # the new run has planned and committed
            assert new.poll() is None and time.monotonic() < deadline, "the new run never committed"
            time.sleep(0.1)
    finally:
        for pid in frozen:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
    old_code, _, old_err = finish(old)
    code, out, err = finish(new)
    assert code == 0, err[-3000:]
    assert_each_photo_once(output, photos)
    assert old_code == 1 and f"run {old_run} no longer holds its lease" in old_err, old_err[-3000:]
    ray_cluster.remove_worker(spare)


def test_train_retries_a_row_whose_node_is_lost_elsewhere_and_publishes_it_once(
    ray_cluster: RayCluster, store: str, pairs: str
) -> None:
    process = command(ray_cluster, "train", "--json", "--pairs", pairs, "--store", store, "--loss-net", "random",
                      "--iterations", ITERATIONS, "--crop", "32")  # fmt: skip
    deadline = time.monotonic() + TIMEOUT
    while (node := ray_cluster.worker_running("ray::train_row")) is None:
        assert process.poll() is None and time.monotonic() < deadline, "the row's task never started"
        time.sleep(0.1)
    time.sleep(1.0)  # into its training
    fs = s3fs.S3FileSystem()
    fs.invalidate_cache()
    assert not fs.exists(f"{store}/styles/far"), "published before the node was lost: nothing was tested"
    ray_cluster.remove_worker(node)
    ray_cluster.add_worker()

    code, out, err = finish(process)
    assert code == 0, err[-3000:]
    (row,) = json.loads(out)["results"]
    assert row["status"] == "ok", row
    assert [(s["name"], s["version"]) for s in row["styles"]] == [("far", "v1"), ("far.reverse", "v1")]
    fs.invalidate_cache()
    for name in ("far", "far.reverse"):  # one version each, not two
        assert [p.rsplit("/", 1)[-1] for p in fs.ls(f"{store}/styles/{name}", detail=False)] == ["v1"]


def test_local_paths_are_refused_by_name_on_several_nodes_unless_declared_shared(
    ray_cluster: RayCluster, store: str, photos: str, pairs: str, tmp_path
) -> None:
    local_out = str(tmp_path / "out")
    code, _, err = finish(command(ray_cluster, *apply_args(store, photos, local_out)))
    assert code == 1 and f"--output {local_out}: a local path" in err and "--shared-fs" in err, err[-2000:]
    assert not os.path.exists(local_out)  # refused before anything was written

    local_store = str(tmp_path / "store")
    code, _, err = finish(command(ray_cluster, "train", "--pairs", pairs, "--store", local_store, "--loss-net", "random"))
    assert code == 2 and f"--store {local_store}: a local path" in err and "--shared-fs" in err, err[-2000:]
    assert not os.path.exists(local_store)

    # every node of this cluster is this machine: the path is shared, and the flag says so
    code, out, err = finish(command(ray_cluster, *apply_args(store, photos, local_out, "--shared-fs")))
    assert code == 0, err[-3000:]
    assert json.loads(out)["processed"] == PHOTOS


def test_rays_own_prints_never_reach_a_commands_stdout() -> None:
    """What the driver's Ray prints about the cluster (a node's death, from a background thread;
    the repeats it held back, from the main thread at exit) goes to stderr: ``--json`` leaves
    one document on stdout. Found when a node-loss run printed a raylet's state dump there."""
    from ray._private.worker import print_worker_logs

    from pipeline.ray_runtime import _CommandStdout

    out, err = io.StringIO(), io.StringIO()
    stdout = _CommandStdout(out, err)
    print('{"processed": 1}', file=stdout)
    thread = threading.Thread(target=print, args=("from a thread",), kwargs={"file": stdout})
    thread.start()
    thread.join()
    print_worker_logs({"lines": ["The node with node id: 90 has been marked dead"], "pid": "raylet", "ip": "10.0.0.1"}, stdout)
    assert out.getvalue() == '{"processed": 1}\n'
    assert "from a thread" in err.getvalue() and "has been marked dead" in err.getvalue()
    # and the interpreter's own flush at exit, with no Python caller, is no error (exit status 120)
    script = "import sys; from pipeline.ray_runtime import _CommandStdout; sys.stdout = _CommandStdout(sys.stdout, sys.stderr); print(1)"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, "1\n", "")


def test_what_ray_prints_at_exit_after_a_json_command_goes_to_stderr() -> None:
    """Ray prints the messages it held back when it disconnects at exit, after ``--json`` has
    given stdout back: they must not follow the document there (seen in a node-loss run)."""
    script = """
import atexit
from unittest import mock
from pipeline import ray_runtime
from pipeline.commands.documents import emit, reserved_stdout
exec("def held_back():\\n    print('(raylet) Task failed [repeated 3x across cluster]')", ray_like := {"__name__": "ray._private.worker"})
atexit.register(ray_like["held_back"])  # as Ray's own exit handler: registered before the command runs
with mock.patch.object(ray_runtime.ray, "is_initialized", return_value=False), mock.patch.object(ray_runtime.ray, "init"):
    with reserved_stdout():
        ray_runtime.ensure_ray()
        emit({"processed": 1})
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"processed": 1}
    assert "(raylet) Task failed" in done.stderr


def test_each_local_path_is_named_and_remote_or_shared_ones_pass(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """The refusal itself, against a stand-in for a cluster of three nodes (the e2e test above
    runs it on a real one): every local path named, object-store paths and --shared-fs let through."""
    from pipeline.ray_runtime import NodeLocalPath, refuse_node_local
    from pipeline.training_jobs import Row, SettingsError, TrainJob, refuse_node_local_paths

    monkeypatch.setattr("pipeline.ray_runtime.ray.is_initialized", lambda: True)
    monkeypatch.setattr("pipeline.ray_runtime.ray.nodes", lambda: [{"Alive": True}] * 3 + [{"Alive": False}])
    with pytest.raises(NodeLocalPath, match=r"^--output /data/out; --input file:///data/in: a local path, but the Ray cluster has 3 nodes"):
        refuse_node_local({"--output": "/data/out", "--input": "file:///data/in", "--store": "s3://b/store"}, shared_fs=False)
    refuse_node_local({"--output": "/data/out"}, shared_fs=True)
    refuse_node_local({"--output": "s3://b/out", "--input": "memory://b/in"}, shared_fs=False)

    rows = [Row(f"a{i}", f"/photos/{i}.png", "s3://b/s.png") for i in range(3)]
    with pytest.raises(SettingsError, match=r"^--store /st; row 'a0' content /photos/0.png; .* \(and 1 more\): a local path"):
        refuse_node_local_paths(rows, TrainJob(store="/st", recipe=TrainConfig(loss_weights="random").resolve()), shared_fs=False)
    monkeypatch.setattr("pipeline.ray_runtime.ray.nodes", lambda: [{"Alive": True}])
    refuse_node_local_paths(rows, TrainJob(store="/st", recipe=TrainConfig(loss_weights="random").resolve()), shared_fs=False)  # one node: its disk is the only one

"""Shared fixtures: stores to test against, local and on a real S3 protocol server (moto), a local
Ray for the session and a multi-node Ray cluster for the tests that need one."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
import s3fs
from moto.server import ThreadedMotoServer

_S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """An S3 protocol server on a free loopback port, and the env that points s3fs/boto3 at it."""
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {**_S3_ENV, "AWS_ENDPOINT_URL_S3": endpoint}.items():
            mp.setenv(key, value)
        yield endpoint
    server.stop()


@pytest.fixture
def s3_store(s3_endpoint: str) -> Iterator[str]:
    """A store URI in a fresh bucket, with no s3fs instance or listing cache from other tests."""
    bucket = f"bucket-{uuid.uuid4().hex[:16]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    s3fs.S3FileSystem.clear_instance_cache()
    yield f"s3://{bucket}/store"
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def local_store(tmp_path: Path) -> str:
    return str(tmp_path / "store")


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest) -> str:
    """Each test using it runs against both a local directory and S3."""
    return request.getfixturevalue(f"{request.param}_store")


@pytest.fixture(scope="session")
def ray_session(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One local Ray for the whole test session (starting one takes seconds). It starts after the
    S3 server so its workers inherit the environment that points them at it; caches (the driver's
    and the workers') go to a temporary folder, not the user's home."""
    import ray

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
        # "local": a Ray of its own, never a cluster another process on this machine started
        # (ray.init() would join the newest one it finds, e.g. a multi-node test's).
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        yield
        ray.shutdown()


@dataclass(frozen=True)
class WeightsFile:
    path: Path
    sha256: str


@pytest.fixture(scope="session")
def vgg16_weights(tmp_path_factory: pytest.TempPathFactory) -> WeightsFile:
    """A seeded random VGG16 in torchvision's layout (convolutions only, as the offline trained one
    ships): for the plumbing of loading, fetching and recording weights, not for quality."""
    import hashlib

    import torch
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(0)
    features = torchvision.models.vgg16(weights=None).features
    path = tmp_path_factory.mktemp("weights") / "vgg16-random.safetensors"
    save_file({f"features.{k}": v.contiguous() for k, v in features.state_dict().items()}, str(path))
    return WeightsFile(path, hashlib.sha256(path.read_bytes()).hexdigest())


@pytest.fixture(scope="session")
def hed_pair():
    """A lite pair trained briefly with the trained offline VGG16 (PHOTOSTYLE_LOSSNET): a real (if
    young) photorealistic style, for tests where a random network would not be representative."""
    from photostyle import TrainConfig, train_pair
    from tests.photos import content, hed_vgg16, open_rgb, style

    cfg = TrainConfig(
        preset="lite", iterations=40, crop=64, train_side=128, loss_net="vgg16", loss_weights=str(hed_vgg16()), log_every=5
    )
    return train_pair(open_rgb(content(2), 256), open_rgb(style(2), 256), cfg)


class RayCluster:
    """A Ray cluster of several nodes on this machine (``ray.cluster_utils.Cluster``): a head
    with no CPUs, where drivers join, and 1-CPU worker nodes that can be removed and added
    mid-run. Commands join it as an operator's do, through ``$RAY_ADDRESS`` (:meth:`env`), in
    their own processes: a process holds one Ray connection, and the test session's may be
    ``ray_session``'s."""

    def __init__(self, workers: int) -> None:
        from ray.cluster_utils import Cluster

        self.cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
        for _ in range(workers):
            self.add_worker()

    @property
    def address(self) -> str:
        return self.cluster.address

    @property
    def workers(self) -> list:
        return sorted(self.cluster.worker_nodes, key=lambda node: node.node_id)

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "RAY_ADDRESS": self.address, **extra}

    def add_worker(self):
        node = self.cluster.add_node(num_cpus=1)
        self.cluster.wait_for_nodes()
        return node

    def remove_worker(self, node) -> None:
        """The node dies as if its machine went away (processes killed, not drained)."""
        self.cluster.remove_node(node, allow_graceful=False)

    def worker(self, node_id: str):
        (node,) = [n for n in self.cluster.worker_nodes if n.node_id == node_id]
        return node

    def processes(self, title: str) -> dict[int, object]:
        """This cluster's worker-node processes whose title starts with ``title`` (Ray names a
        task's process ``ray::<function>``, an actor's ``ray::<class>``), each with its node.
        Only descendants of this cluster's raylets: other Rays may run on the machine."""
        raylets = {n.all_processes["raylet"][0].process.pid: n for n in self.cluster.worker_nodes}
        found = {}
        for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
            try:
                if not Path(f"/proc/{pid}/cmdline").read_bytes().startswith(title.encode()):
                    continue
                ancestor = pid
                while ancestor > 1 and ancestor not in raylets:
                    ancestor = int(Path(f"/proc/{ancestor}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ancestor in raylets:
                found[pid] = raylets[ancestor]
        return found

    def worker_running(self, title: str):
        """The worker node where a process titled ``title`` runs, or None."""
        return next(iter(self.processes(title).values()), None)

    def shutdown(self) -> None:
        self.cluster.shutdown()


@pytest.fixture(scope="module")
def ray_cluster(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    """A 0-CPU head and two 1-CPU workers; nodes inherit the environment that points them at the
    S3 server. Tests that remove a worker add a fresh one."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache-cluster")))
        cluster = RayCluster(workers=2)
        try:
            yield cluster
        finally:
            cluster.shutdown()

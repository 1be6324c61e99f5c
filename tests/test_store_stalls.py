"""Nothing hangs on a stalled object store: behind a TCP proxy that accepts connections and then
forwards nothing, every S3 call fails within its timeouts, naming the object; ``apply`` turns
such photos into error rows (a rerun does them); and a job that commits no batch within
``--batch-timeout`` stops with a clear error that a rerun resumes from."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import s3fs
from click.testing import CliRunner
from PIL import Image
from skimage import data

from photostyle import TrainConfig, train_pair
from pipeline.apply_job import Stalled, each_within
from pipeline.catalog import Catalog
from pipeline.cli import main
from pipeline.published import publish_pair
from pipeline.storage import S3Timeouts, StorageError, filesystem, join, read_bytes, write_atomic, write_exclusive
from tests.stall_proxy import StallProxy

# Small enough for fast tests: one call may take about attempts * read + backoff.
FAST_TIMEOUTS = S3Timeouts(connect=1, read=1, attempts=2)
BOUND = 15  # seconds: what "fails quickly" means here, with room for a loaded machine


@pytest.fixture(scope="module")
def pair():
    photos = [Image.fromarray(image).convert("RGB").resize((64, 48)) for image in (data.chelsea(), data.coffee())]
    return train_pair(*photos, TrainConfig(iterations=2, crop=32, loss_net="vgg16", loss_weights="random"))


@pytest.fixture
def proxy(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[StallProxy]:
    """The S3 server behind a pausable proxy, and this process's S3 clients pointed at it."""
    stall = StallProxy(int(s3_endpoint.rsplit(":", 1)[1]))
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", stall.url)
    for name, value in FAST_TIMEOUTS.env().items():
        monkeypatch.setenv(name, value)
    s3fs.S3FileSystem.clear_instance_cache()
    yield stall
    stall.close()
    s3fs.S3FileSystem.clear_instance_cache()


def timed(call) -> tuple[BaseException, float]:
    start = time.monotonic()
    with pytest.raises(Exception) as info:
        call()
    return info.value, time.monotonic() - start


@pytest.mark.timeout(180)
def test_every_store_call_fails_within_its_timeouts_on_a_stalled_endpoint(s3_store: str, proxy: StallProxy) -> None:
    fs, root = filesystem(s3_store)
    write_exclusive(fs, join(root, "photo.jpg"), b"bytes")  # through the proxy, still forwarding
    assert read_bytes(f"{s3_store}/photo.jpg") == b"bytes"
    proxy.pause()
    calls = {
        "read": lambda: read_bytes(f"{s3_store}/photo.jpg"),
        "exclusive write": lambda: write_exclusive(fs, join(root, "new.jpg"), b"x" * 100_000),
        "atomic write": lambda: write_atomic(fs, join(root, "photo.jpg"), b"x"),
    }
    for what, call in calls.items():
        error, seconds = timed(call)
        assert isinstance(error, StorageError) and "photo.jpg" in str(error) or "new.jpg" in str(error), (what, error)
        assert "timeout" in str(error).lower(), (what, error)
        assert seconds < BOUND, (what, seconds)

    listing = CliRunner().invoke(main, ["styles", "list", "--store", s3_store, "--json"])
    assert listing.exit_code == 1
    assert s3_store in json.loads(listing.stdout)["error"]
    error, seconds = timed(lambda: Catalog(s3_store).resolve("look"))
    assert "timeout" in str(error).lower() and seconds < BOUND
    proxy.resume()
    assert read_bytes(f"{s3_store}/photo.jpg") == b"x"


def test_the_timeouts_come_from_flags_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in S3Timeouts.ENV.values():
        monkeypatch.setenv(name, "")  # unset, and restored after the test (the CLI sets them)
    assert S3Timeouts.from_env() == S3Timeouts()
    monkeypatch.setenv("PST_S3_READ_TIMEOUT", "2.5")
    assert S3Timeouts.from_env().read == 2.5
    monkeypatch.setenv("PST_S3_ATTEMPTS", "many")
    with pytest.raises(StorageError, match=r"\$PST_S3_ATTEMPTS: not a number: 'many'"):
        S3Timeouts.from_env()
    with pytest.raises(StorageError, match="PST_S3_CONNECT_TIMEOUT"):
        S3Timeouts(connect=0)
    monkeypatch.setenv("PST_S3_ATTEMPTS", "")
    CliRunner().invoke(main, ["styles", "list", "--s3-read-timeout", "7", "--s3-attempts", "4", "--store", "memory://x"])
    assert (os.environ["PST_S3_READ_TIMEOUT"], os.environ["PST_S3_ATTEMPTS"]) == ("7.0", "4")
    fs, _ = filesystem("s3://bucket/x")
    config = fs.config_kwargs
    assert (config["read_timeout"], config["retries"]) == (7.0, {"max_attempts": 4, "mode": "standard"})
    assert fs.retries == 1  # no s3fs retries on top of botocore's attempts


@pytest.mark.timeout(400)
def test_apply_on_a_stalled_store_records_error_rows_in_bounded_time_and_a_rerun_does_them(
    ray_session, s3_store: str, s3_endpoint: str, proxy: StallProxy, pair, tmp_path: Path
) -> None:
    bucket = s3_store.split("/")[2]
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    uris = []
    for i, image in enumerate((data.astronaut(), data.rocket())):
        path = tmp_path / f"{i}.png"
        Image.fromarray(image).convert("RGB").resize((40, 30)).save(path)
        client.upload_file(str(path), bucket, f"photos/{i}.png")
        uris.append(f"s3://{bucket}/photos/{i}.png")
    manifest = tmp_path / "uris.parquet"
    pq.write_table(pa.table({"uri": uris}), manifest)
    store, output = str(tmp_path / "store"), tmp_path / "out"
    publish_pair(Catalog(store), "look", pair, {})
    command = [
        str(Path(sys.executable).with_name("pst-pipeline")),
        "-q",
        "apply", "--style", "look", "--store", store, "--input", str(manifest), "--output", str(output),
        "--json", "--concurrency", "1",
    ]
    env = {**os.environ, "RAY_ADDRESS": ""}  # its own local Ray, whose workers see the proxy
    proxy.pause()
    start = time.monotonic()
    stalled = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    seconds = time.monotonic() - start
    assert stalled.returncode == 3, stalled.stderr[-3000:]
    document = json.loads(stalled.stdout)
    assert (document["processed"], document["errors"]) == (0, 2)
    assert seconds < 240, seconds  # Ray's start-up, then two reads of at most ~5 s each

    proxy.resume()  # the shared Ray's workers reach the S3 server directly
    rerun = CliRunner().invoke(main, command[2:])
    assert rerun.exit_code == 0, rerun.output
    assert json.loads(rerun.stdout)["processed"] == 2


def test_each_within_passes_items_and_errors_and_stops_a_stall() -> None:
    assert list(each_within(iter(range(5)), 5)) == [0, 1, 2, 3, 4]

    def failing() -> Iterator[int]:
        yield 1
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        list(each_within(failing(), 5))

    release = threading.Event()

    def stalling() -> Iterator[int]:
        yield 1
        release.wait()
        yield 2

    items = each_within(stalling(), 0.5)
    assert next(items) == 1
    start = time.monotonic()
    with pytest.raises(Stalled, match=r"no batch was committed for 0.5 s \(--batch-timeout\)"):
        next(items)
    assert time.monotonic() - start < 5
    release.set()

    closed = threading.Event()

    def endless() -> Iterator[int]:
        try:
            yield from itertools.count()
        finally:
            closed.set()

    for item in each_within(endless(), 5):
        if item == 3:
            break
    assert closed.wait(5), "the abandoned iterator was not closed"


def test_a_job_that_commits_no_batch_in_time_stops_clearly_and_a_rerun_resumes(ray_session, pair, tmp_path: Path) -> None:
    inputs, output, store = tmp_path / "in", tmp_path / "out", str(tmp_path / "store")
    inputs.mkdir()
    for i, image in enumerate((data.astronaut(), data.rocket(), data.coffee())):
        Image.fromarray(image).convert("RGB").resize((40, 30)).save(inputs / f"{i}.png")
    publish_pair(Catalog(store), "look", pair, {})
    args = ["apply", "--json", "--style", "look", "--store", store, "--input", str(inputs), "--output", str(output)]
    stopped = CliRunner().invoke(main, [*args, "--batch-timeout", "0.05"])
    assert stopped.exit_code == 1
    error = json.loads(stopped.stdout)["error"]
    assert "stopped after committing" in error and "a rerun resumes" in error
    assert "no batch was committed for 0.05 s (--batch-timeout)" in error

    deadline = time.monotonic() + 60
    while True:  # the stopped job's batch may still be committing; a rerun then skips it
        rerun = CliRunner().invoke(main, args)
        assert rerun.exit_code == 0, rerun.output
        document = json.loads(rerun.stdout)
        if document["processed"] + document["skipped"] == 3 or time.monotonic() > deadline:
            break
    assert document["processed"] + document["skipped"] == 3 and document["errors"] == 0

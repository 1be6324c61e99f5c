"""``apply`` against a hostile user and a hostile folder: styles and versions switched on one
``--output``, inputs whose result paths collide once written, FIFOs, devices, symbolic links and
oversized files among the inputs, ``http://`` URIs in a manifest, a junk manifest part, and the
memory one worker holds. Photos come from scikit-image and the loss network is random: this
tests the plumbing, not the look."""

from __future__ import annotations

import http.server
import io
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import boto3
import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import skimage.data
from click.testing import CliRunner, Result
from PIL import Image

from photostyle import TrainConfig, train_pair
from pipeline.catalog import Catalog
from pipeline.cli import main
from pipeline.manifests import STATUS_OK
from pipeline.outputs import OutputLayout
from pipeline.outputs_manifest import MANIFEST_DIR, pending_inputs, read_outputs, write_outputs_part
from pipeline.published import publish_pair

SAMPLES = ("astronaut", "chelsea", "coffee", "rocket", "camera")


def sample(name: str, size: tuple[int, int]) -> Image.Image:
    image = Image.fromarray(getattr(skimage.data, name)())
    return image.convert("RGB").resize(size)


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def pairs():
    """Two pairs trained for 2 iterations on different photos: two visibly different looks."""
    config = TrainConfig(iterations=2, crop=32, loss_net="vgg16", loss_weights="random")
    first = train_pair(sample("astronaut", (96, 96)), sample("coffee", (96, 96)), config)
    second = train_pair(sample("chelsea", (96, 96)), sample("rocket", (96, 96)), config)
    return first, second


def publish(store: str, pairs) -> str:
    """``sun@v1`` and ``sun@v2`` (and their ``sun.reverse``) in ``store``."""
    for pair in pairs:
        publish_pair(Catalog(store), "sun", pair, {})
    return store


def apply(*args: str) -> Result:
    return CliRunner().invoke(main, ["apply", "--json", *args], catch_exceptions=False)


def status(output: str, *extra: str) -> Result:
    return CliRunner().invoke(main, ["status", "--output", output, "--json", *extra], catch_exceptions=False)


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float64)


# ---- item 1: one style per output, and an ok row describes the bytes at its output ----------
@pytest.mark.timeout(600)
def test_an_output_belongs_to_one_style_and_switching_versions_restyles_it(ray_session, store: str, pairs) -> None:
    publish(store, pairs)
    fs, root = fsspec.core.url_to_fs(store)
    names = [f"p{i}.jpg" for i in range(3)]
    fs.makedirs(f"{root}/in", exist_ok=True)
    for i, name in enumerate(names):
        fs.pipe_file(f"{root}/in/{name}", jpeg(sample(SAMPLES[i], (48 + 8 * i, 40))))
    inputs, output = f"{store}/in", f"{store}/out"
    base = ["--store", store, "--input", inputs, "--output", output]

    def files() -> dict[str, bytes]:
        fs.invalidate_cache()
        return {name: fs.cat_file(f"{root}/out/{name}") for name in names}

    def run(spec: str) -> dict:
        result = apply("--style", spec, *base)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    assert run("sun@v1")["processed"] == 3
    v1 = files()

    other = CliRunner().invoke(main, ["apply", "--style", "sun.reverse", *base])
    assert other.exit_code == 1
    assert "holds the results of style 'sun', not 'sun.reverse'" in other.output and "another --output" in other.output
    assert files() == v1  # refused before any work: nothing written over
    assert {r["style"] for r in read_outputs(output).to_pylist()} == {"sun"}

    assert (run("sun@v1")["processed"], run("sun@v1")["skipped"]) == (0, 3)
    assert files() == v1

    switched = run("sun@v2")
    assert (switched["processed"], switched["skipped"]) == (3, 0)  # v1's rows describe overwritten files
    v2 = files()
    for name in names:
        assert np.abs(pixels(v2[name]) - pixels(v1[name])).mean() > 2, name  # the looks differ

    back = run("sun@v1")
    assert (back["processed"], back["skipped"]) == (3, 0)  # not "done": its files hold v2 now
    again = files()
    for name in names:
        assert np.abs(pixels(again[name]) - pixels(v1[name])).mean() < 1, name

    summary = json.loads(status(output).stdout)
    assert summary["owner"] == {"style": "sun", "style_version": "v1", "since": back["run_id"]}
    assert (summary["ok"], summary["error"]) == (3, 0)
    # every row that counts names the version whose pixels are at its output
    current = read_outputs(output).filter(pa.compute.field("run_id") >= back["run_id"])
    assert set(current["style_version"].to_pylist()) == {"v1"} and current.num_rows == 3


def test_status_right_after_a_version_switch_counts_no_photo_as_current(tmp_path: Path) -> None:
    from pipeline.ownership import claim_output

    output = str(tmp_path / "out")
    write_outputs_part(output, rows_of("20260102t000000z-a", ["a.jpg", "b.jpg"]))
    assert claim_output(output, "sun", "v1", "20260103t000000z-b").since == ""  # its own rows: all count
    claim_output(output, "sun", "v2", "20260104t000000z-c")  # a v2 run began, nothing committed yet
    summary = json.loads(status(output).stdout)
    assert (summary["ok"], summary["error"]) == (0, 0)
    assert summary["owner"] == {"style": "sun", "style_version": "v2", "since": "20260104t000000z-c"}
    assert summary["styles"] == [{"style": "sun", "style_version": "v1", "ok": 2, "error": 0}]  # the history stays


# ---- item 2: collisions decided on the result path as written -------------------------------
def test_result_paths_are_written_in_one_spelling_and_their_collisions_refused() -> None:
    manifest = OutputLayout("/out", None, "same")
    uris = pa.array(["s3://b/a//x.jpg", "s3://b/a/x.jpg", "s3://b/a/./y.jpg", "s3://b/a/y.jpg", "s3://b/./z.jpg", "s3://b//w.jpg"])
    assert manifest.targets(uris)["path"].to_pylist() == ["b/a/x.jpg", "b/a/x.jpg", "b/a/y.jpg", "b/a/y.jpg", "b/z.jpg", "b/w.jpg"]
    errors = dict(zip(*manifest.conflicts(uris).to_pydict().values()))
    assert set(errors) == set(uris.to_pylist()[:4])
    assert errors["s3://b/a//x.jpg"].endswith("its result /out/b/a/x.jpg would also be another input's result")

    folder = OutputLayout("/out", "s3://b/in", "same")
    listed = pa.array(["s3://b/in/a//x.jpg", "s3://b/in/a/x.jpg", "s3://b/in/q.jpg"])
    assert sorted(folder.conflicts(listed)["input_uri"].to_pylist()) == ["s3://b/in/a//x.jpg", "s3://b/in/a/x.jpg"]
    assert folder.conflicts(pa.array(["s3://b/in/a/x.jpg", "s3://b/in/q.jpg"])).num_rows == 0
    escapes = OutputLayout("/out", "s3://b/in", "same").conflicts(pa.array(["s3://b/in/../x.jpg"]))
    assert "'..' in its path" in escapes["error"][0].as_py()


@pytest.mark.timeout(600)
def test_two_inputs_never_get_ok_rows_for_one_file(ray_session, s3_endpoint: str, s3_store: str, pairs, tmp_path: Path) -> None:
    publish(s3_store, pairs)
    bucket = s3_store.split("/")[2]
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    for i, key in enumerate(["in/a//x.jpg", "in/a/x.jpg", "in/b.jpg"]):  # distinct objects on S3
        s3.put_object(Bucket=bucket, Key=key, Body=jpeg(sample(SAMPLES[i], (40, 32))))
    local = tmp_path / "local"
    (local / "a").mkdir(parents=True)
    sample("camera", (36, 30)).save(local / "a" / "y.jpg")
    listed = [f"s3://{bucket}/in/a//x.jpg", f"s3://{bucket}/in/a/x.jpg", f"{local}/a/./y.jpg", f"{local}/a/y.jpg"]
    one_scheme, two_schemes = tmp_path / "s3.parquet", tmp_path / "mixed.parquet"
    pq.write_table(pa.table({"uri": listed[:2] + [f"s3://{bucket}/in/b.jpg"]}), one_scheme)
    pq.write_table(pa.table({"uri": listed}), two_schemes)

    sources = {"prefix": f"s3://{bucket}/in", "one scheme": str(one_scheme), "two schemes": str(two_schemes)}
    for what, source in sources.items():
        output = tmp_path / f"out-{what.replace(' ', '-')}"
        result = apply("--style", "sun", "--store", s3_store, "--input", source, "--output", str(output), "--max-error-rate", "1")
        assert result.exit_code == 0, (what, result.output)
        rows = read_outputs(str(output)).to_pylist()
        ok = [r["output_uri"] for r in rows if r["status"] == STATUS_OK]
        assert len(ok) == len(set(ok)), (what, ok)  # never two ok rows for one file
        errors = {r["input_uri"]: r["error"] for r in rows if r["status"] != STATUS_OK}
        colliding = [u for u in listed if u in {r["input_uri"] for r in rows}][:4]
        assert colliding and all("would also be another input's result" in errors[u] for u in colliding), (what, errors)


@pytest.mark.timeout(300)
def test_another_collection_is_not_written_over_the_results_of_the_first(ray_session, local_store: str, pairs, tmp_path: Path) -> None:
    publish(local_store, pairs)
    for folder, name in (("day1", "astronaut"), ("day2", "coffee")):
        (tmp_path / folder).mkdir()
        sample(name, (40, 30)).save(tmp_path / folder / "p.jpg")  # the same name, another photo
    sample("rocket", (40, 30)).save(tmp_path / "day2" / "new.jpg")
    output = tmp_path / "out"
    base = ["--style", "sun", "--store", local_store, "--output", str(output), "--max-error-rate", "1"]
    assert apply(*base, "--input", str(tmp_path / "day1")).exit_code == 0
    first = (output / "p.jpg").read_bytes()

    second = apply(*base, "--input", str(tmp_path / "day2"))
    assert second.exit_code == 0, second.output
    doc = json.loads(second.stdout)
    assert (doc["processed"], doc["errors"]) == (1, 1)
    assert (output / "p.jpg").read_bytes() == first  # still what day1/p.jpg's ok row describes
    [error] = [r["error"] for r in read_outputs(str(output)).to_pylist() if r["error"]]
    assert error == (
        f"{tmp_path}/day2/p.jpg: its result {output}/p.jpg already holds the result of {tmp_path}/day1/p.jpg "
        "(one output folder mirrors one collection: use another --output)"
    )


# ---- item 7: regular files only, size capped, no symbolic links out of the input ------------
def _unblock_after(fifo: Path, seconds: float) -> threading.Event:
    """Open ``fifo`` for writing after ``seconds`` (and set the event) unless cancelled: a reader
    stuck in open() on it is released, so a regression fails instead of hanging the session."""
    done = threading.Event()
    fired = threading.Event()

    def release() -> None:
        if not done.wait(seconds):
            fired.set()
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass

    threading.Thread(target=release, daemon=True).start()
    done.fired = fired  # type: ignore[attr-defined]
    return done


def hostile_folder(root: Path, outside: Path, *, device: bool = True) -> dict[str, str]:
    """A folder of inputs that must each be refused, with the problem their error names, plus
    two readable photos (one through a link inside the folder). ``device``: also a link to
    /dev/zero (only where a memory limit guards against a regression that reads it)."""
    root.mkdir()
    outside.mkdir()
    sample("astronaut", (40, 30)).save(root / "good.jpg")
    (root / "real").mkdir()
    sample("coffee", (30, 40)).save(root / "real" / "photo.png")
    (root / "inner.png").symlink_to(root / "real" / "photo.png")  # inside the input: read
    os.mkfifo(root / "x.jpg")
    (root / "passwd.jpg").symlink_to("/etc/passwd")
    if device:
        (root / "zero.jpg").symlink_to("/dev/zero")
    sample("chelsea", (30, 30)).save(outside / "secret.jpg")
    (root / "linked").symlink_to(outside, target_is_directory=True)
    with open(root / "huge.jpg", "wb") as f:  # sparse: larger than the cap, costs no disk
        f.truncate(64 * 2**20)
    refused = {
        "x.jpg": "not a regular file (a FIFO)",
        "passwd.jpg": "a symbolic link to /etc/passwd, outside the input folder",
        "linked/secret.jpg": f"a symbolic link to {outside.resolve()}/secret.jpg, outside the input folder",
        "huge.jpg": "larger than the input size cap",
    }
    return {**refused, "zero.jpg": "a symbolic link to /dev/zero, outside the input folder"} if device else refused


@pytest.mark.timeout(120)
def test_reading_one_input_refuses_fifos_devices_links_out_and_oversized_files(tmp_path: Path) -> None:
    # in a child process with a memory limit and a timeout: a regression that reads /dev/zero or
    # blocks on the FIFO fails here instead of taking the machine or the session with it
    root, outside = tmp_path / "in", tmp_path / "outside"
    expected = hostile_folder(root, outside)
    script = textwrap.dedent(
        f"""
        import json, resource
        from pipeline.inputs import read_input
        with open("/proc/self/statm") as f:
            mapped = int(f.read().split()[0]) * 4096
        resource.setrlimit(resource.RLIMIT_AS, (mapped + 2**30, mapped + 2**30))  # 1 GB more, at most
        found = {{}}
        for rel in {sorted(expected) + ["good.jpg", "inner.png"]!r}:
            try:
                found[rel] = len(read_input({str(root)!r} + "/" + rel, root={str(root)!r}, max_bytes=32 * 2**20))
            except Exception as exc:
                found[rel] = type(exc).__name__ + ": " + str(exc)
        print(json.dumps(found))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    watchdog = _unblock_after(root / "x.jpg", 30)
    try:
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    finally:
        watchdog.set()
    assert not watchdog.fired.is_set(), "reading the FIFO blocked"  # type: ignore[attr-defined]
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout)
    for rel, problem in expected.items():
        assert found[rel].startswith(f"InputRefused: {root}/{rel}: ") and problem in found[rel], (rel, found[rel])
    assert found["good.jpg"] == (root / "good.jpg").stat().st_size
    assert found["inner.png"] == (root / "real" / "photo.png").stat().st_size
    # a manifest (no input folder) may point where it likes, but only at regular files
    from pipeline.inputs import InputRefused, read_input

    assert read_input(str(root / "inner.png"), root=None, max_bytes=2**20) == (root / "real" / "photo.png").read_bytes()
    with pytest.raises(InputRefused, match="not a regular file"):
        read_input(str(root / "zero.jpg"), root=None, max_bytes=2**20)


@pytest.mark.timeout(300)
def test_apply_gives_hostile_inputs_error_rows_and_never_blocks(ray_session, local_store: str, pairs, tmp_path: Path) -> None:
    publish(local_store, pairs)
    root, outside, output = tmp_path / "in", tmp_path / "outside", tmp_path / "out"
    expected = hostile_folder(root, outside, device=False)  # /dev/zero: the memory-limited test above
    watchdog = _unblock_after(root / "x.jpg", 120)
    try:
        result = apply(
            "--style", "sun", "--store", local_store, "--input", str(root), "--output", str(output),
            "--max-side", "512", "--max-error-rate", "1", "--batch-size", "2",
        )  # fmt: skip
    finally:
        watchdog.set()
    assert not watchdog.fired.is_set(), "a worker blocked on the FIFO"  # type: ignore[attr-defined]
    assert result.exit_code == 0, result.output
    rows = {r["input_uri"][len(str(root)) + 1 :]: r for r in read_outputs(str(output)).to_pylist()}
    assert {rel for rel, r in rows.items() if r["status"] == STATUS_OK} == {"good.jpg", "inner.png", "real/photo.png"}
    assert "linked/secret.jpg" not in rows  # listing does not descend into linked folders
    del expected["linked/secret.jpg"]
    for rel, problem in expected.items():
        assert rows[rel]["status"] == "error" and problem in rows[rel]["error"], (rel, rows[rel]["error"])
        assert rows[rel]["error"].startswith(f"{root}/{rel}: ")
    assert not (output / "linked").exists() and not (output / "passwd.jpg").exists()


# ---- item 9: a worker's memory follows bytes, not photo counts ------------------------------
def test_decoded_blocks_end_at_a_byte_budget(tmp_path: Path) -> None:
    from pipeline.apply_stages import DecodeSpec, read_and_decode

    sizes = [(64, 48), (64, 48), (64, 48), (200, 150), (64, 48), (64, 48)]
    uris = []
    for i, size in enumerate(sizes):
        sample(SAMPLES[i % 5], size).save(tmp_path / f"{i}.png")
        uris.append(str(tmp_path / f"{i}.png"))
    budget = 2 * 64 * 48 * 3  # two small photos
    blocks = list(read_and_decode(pa.table({"input_uri": uris}), DecodeSpec(input_root=str(tmp_path), block_bytes=budget)))
    assert [b.num_rows for b in blocks] == [2, 2, 2]  # the large photo ends its block alone
    for block in blocks:
        held = sum(len(p) for p in block["pixels"].to_pylist())
        assert held < budget + 200 * 150 * 3
    assert [u for b in blocks for u in b["input_uri"].to_pylist()] == uris


@pytest.mark.timeout(300)
def test_a_cpu_worker_holds_one_decoded_photo_at_a_time(local_store: str, pairs, tmp_path: Path) -> None:
    """Resident memory of a worker when it stylises each photo of a batch of six 14 MP photos
    (42 MB decoded each): a worker that decodes its whole batch first holds all six."""
    publish(local_store, pairs)
    width, height, count = 5000, 2800, 6
    gradient = np.linspace(0, 255, width, dtype=np.uint8)[None, :, None]
    (tmp_path / "in").mkdir()
    for i in range(count):
        image = np.broadcast_to(gradient, (height, width, 3)).copy()
        image[..., i % 3] = 255 - image[..., i % 3]
        Image.fromarray(image).save(tmp_path / "in" / f"{i}.jpg", quality=80)
    script = textwrap.dedent(
        f"""
        import json
        import pyarrow as pa
        from pipeline.apply_job import ApplyOptions, plan_apply
        from pipeline.apply_stages import CommitSpec, DecodeSpec, StylizeActor
        from pipeline.catalog import Catalog
        from pipeline.published import load_style

        def rss():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * 4096

        style = load_style(Catalog({local_store!r}), "sun")
        plan = plan_apply(style, {str(tmp_path / "in")!r}, {str(tmp_path / "out")!r}, ApplyOptions())
        actor = StylizeActor(
            style.base.to_bytes(), style.style.to_bytes(), device="cpu",
            decode=DecodeSpec(None, plan.layout.input_root),
            commit=CommitSpec(plan.layout, 80, plan.run_id, plan.owner, style.ref.base_id),
        )
        seen = []
        def probe(image):  # stands in for the network: measures what the worker holds
            seen.append(rss())
            return image
        actor.stylizer = probe
        before = rss()
        summary = actor(pa.table({{"input_uri": plan.todo}}))
        print(json.dumps({{"before": before, "seen": seen, "ok": summary["ok"][0].as_py()}}))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["ok"] == count and len(report["seen"]) == count
    photo = width * height * 3
    growth = max(report["seen"]) - report["before"]
    assert growth < 4 * photo, f"held {growth / photo:.1f} decoded photos' worth while stylising"


@pytest.mark.timeout(400)
def test_the_gpu_layout_streams_small_blocks_and_records_each_photo_once(local_store: str, pairs, tmp_path: Path) -> None:
    """The GPU layout (decode tasks -> actor -> write tasks) on a Ray of its own that declares
    one GPU (the actor runs on CPU here), with decoded blocks cut at about two photos."""
    publish(local_store, pairs)
    (tmp_path / "in").mkdir()
    sizes = {f"{i}.png": (40 + 3 * i, 30 + i) for i in range(7)}
    for i, (name, size) in enumerate(sizes.items()):
        sample(SAMPLES[i % 5], size).save(tmp_path / "in" / name)
    script = textwrap.dedent(
        f"""
        import json
        import ray
        from pipeline import apply_stages
        from pipeline.apply_job import ApplyOptions, plan_apply, run_apply
        from pipeline.catalog import Catalog
        from pipeline.published import load_style

        ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
        apply_stages.DecodeSpec.__init__.__defaults__ = (None, None, 2 * 46 * 36 * 3)  # blocks of about two photos
        options = ApplyOptions(gpus_per_worker=1.0, batch_size=4)
        plan = plan_apply(load_style(Catalog({local_store!r}), "sun"), {str(tmp_path / "in")!r}, {str(tmp_path / "out")!r}, options)
        print(json.dumps(run_apply(plan, options).to_json()))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=360, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads(done.stdout.strip().splitlines()[-1])
    assert (doc["processed"], doc["errors"]) == (7, 0)
    rows = read_outputs(str(tmp_path / "out")).to_pylist()
    assert sorted(r["input_uri"] for r in rows) == sorted(str(tmp_path / "in" / n) for n in sizes)  # once each
    for name, size in sizes.items():
        with Image.open(tmp_path / "out" / name) as im:
            assert im.size == size


# ---- item 11: a junk part in _manifest/ is named, skipped and can be quarantined ------------
def rows_of(run_id: str, names: list[str]) -> list[dict]:
    from datetime import datetime, timezone

    return [
        {
            "input_uri": f"/in/{n}", "output_uri": f"/out/{n}", "style": "sun", "style_version": "v1",
            "base_id": "0123456789abcdef", "status": "ok", "error": None, "width": 4, "height": 3, "seconds": 0.1,
            "run_id": run_id, "finished_at": datetime(2026, 1, 2, tzinfo=timezone.utc),
        }  # fmt: skip
        for n in names
    ]


def test_a_junk_manifest_part_is_reported_by_name_skipped_and_quarantined(store: str) -> None:
    output = f"{store}/out"
    write_outputs_part(output, rows_of("20260102t000000z-a", ["a.jpg", "b.jpg"]))
    write_outputs_part(output, rows_of("20260103t000000z-b", ["c.jpg"]))
    fs, root = fsspec.core.url_to_fs(output)
    fs.makedirs(f"{root}/{MANIFEST_DIR}", exist_ok=True)
    junk = f"{root}/{MANIFEST_DIR}/part-20260104t000000z-c-0123abcd.parquet"
    fs.pipe_file(junk, b"not parquet at all")
    before = sorted(p for p in fs.find(f"{root}/{MANIFEST_DIR}") if p != junk)

    result = status(output)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["ok"], summary["runs"]) == (3, 2)  # no readable part dropped
    [bad] = summary["unreadable_parts"]
    assert bad["uri"].endswith("part-20260104t000000z-c-0123abcd.parquet") and "magic bytes" in bad["error"]
    assert "part-20260104t000000z-c-0123abcd.parquet" in result.stderr and "--repair" in result.stderr
    inputs = pa.array(["/in/a.jpg", "/in/b.jpg", "/in/c.jpg", "/in/d.jpg"])
    assert pending_inputs(inputs, output, "sun", "v1").to_pylist() == ["/in/d.jpg"]

    repaired = status(output, "--repair")
    assert repaired.exit_code == 0 and json.loads(repaired.stdout)["unreadable_parts"] == []
    assert "moved unreadable manifest part" in repaired.stderr
    fs.invalidate_cache()
    after = sorted(fs.find(f"{root}/{MANIFEST_DIR}"))
    quarantined = f"{root}/{MANIFEST_DIR}/quarantine/part-20260104t000000z-c-0123abcd.parquet"
    assert after == sorted([*before, quarantined]) and fs.cat_file(quarantined) == b"not parquet at all"
    assert json.loads(status(output).stdout)["ok"] == 3


@pytest.mark.timeout(300)
def test_apply_goes_on_past_a_junk_manifest_part(ray_session, local_store: str, pairs, tmp_path: Path) -> None:
    publish(local_store, pairs)
    (tmp_path / "in").mkdir()
    sample("rocket", (40, 30)).save(tmp_path / "in" / "r.jpg")
    output = tmp_path / "out"
    args = ["--style", "sun", "--store", local_store, "--input", str(tmp_path / "in"), "--output", str(output)]
    assert apply(*args).exit_code == 0
    (output / MANIFEST_DIR / "part-20260104t000000z-c-0123abcd.parquet").write_bytes(b"junk")
    again = apply(*args)
    assert again.exit_code == 0, again.output
    assert (json.loads(again.stdout)["processed"], json.loads(again.stdout)["skipped"]) == (0, 1)


# ---- http(s) URIs in a manifest: refused unless --allow-http ---------------------------------
def test_a_manifest_is_fetched_only_over_the_schemes_the_job_uses() -> None:
    from pipeline.inputs import refused_schemes

    listed = pa.array(["/a.jpg", "file:///b.jpg", "S3://x/c.jpg", "http://169.254.169.254/latest/x.jpg", "ftp://h/y.jpg"])
    refused = dict(zip(*refused_schemes(listed, {"file", "s3"}).to_pydict().values()))
    assert refused == {
        "http://169.254.169.254/latest/x.jpg": "http://169.254.169.254/latest/x.jpg: scheme 'http' is not fetched without --allow-http",
        "ftp://h/y.jpg": "ftp://h/y.jpg: scheme 'ftp' is not fetched (only file, s3)",
    }
    assert refused_schemes(listed[:3], {"file", "s3"}).num_rows == 0


@pytest.mark.timeout(300)
def test_http_uris_in_a_manifest_are_refused_unless_allowed(ray_session, local_store: str, pairs, tmp_path: Path) -> None:
    publish(local_store, pairs)
    body = jpeg(sample("coffee", (40, 30)))
    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            requests.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_HEAD = do_GET  # noqa: N815

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/internal/x.jpg"
        sample("camera", (30, 30)).save(tmp_path / "local.jpg")
        manifest = tmp_path / "list.csv"
        manifest.write_text(f"uri\n{url}\n{tmp_path / 'local.jpg'}\n")
        args = ["--style", "sun", "--store", local_store, "--input", str(manifest), "--max-error-rate", "1"]

        refused = apply(*args, "--output", str(tmp_path / "out"))
        assert refused.exit_code == 0, refused.output
        rows = {r["input_uri"]: r for r in read_outputs(str(tmp_path / "out")).to_pylist()}
        assert rows[str(tmp_path / "local.jpg")]["status"] == STATUS_OK
        assert rows[url]["error"] == f"{url}: scheme 'http' is not fetched without --allow-http"
        time.sleep(0.2)
        assert requests == []  # not even a HEAD

        allowed = apply(*args, "--output", str(tmp_path / "out2"), "--allow-http")
        assert allowed.exit_code == 0, allowed.output
        rows = {r["input_uri"]: r for r in read_outputs(str(tmp_path / "out2")).to_pylist()}
        assert rows[url]["status"] == STATUS_OK, rows[url]["error"]
        assert requests
    finally:
        server.shutdown()

"""``pst-pipeline apply`` and ``status`` on the shared local Ray (and, for kill -9, a Ray of the
command's own): mirrored paths and sizes, formats, bad photos as error rows, reruns, resuming
after a kill, S3 in and out. Tiny photos and a lite style trained for 2 iterations: this tests
the plumbing, not the look."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result
from PIL import Image

from photostyle import TrainConfig, train_pair
from pipeline.catalog import Catalog
from pipeline.cli import main
from pipeline.inputs import first_occurrences, list_inputs
from pipeline.manifests import STATUS_OK
from pipeline.outputs import OutputLayout
from pipeline.outputs_manifest import MANIFEST_DIR, read_outputs
from pipeline.ownership import OWNER_FILE
from pipeline.published import publish_pair
from pipeline.storage import filesystem
from tests.photos import content, open_rgb, style

JSON_KEYS = ["processed", "skipped", "errors", "seconds", "model_seconds", "run_id", "style", "style_version", "manifest"]
ORIENTATION = 0x0112


@pytest.fixture(scope="module")
def pair():
    c, s = open_rgb(content(3), 96), open_rgb(style(3), 96)
    return train_pair(c, s, TrainConfig(iterations=2, crop=32, loss_net="vgg16", loss_weights="random"))


@pytest.fixture(scope="module")
def style_store(pair, tmp_path_factory: pytest.TempPathFactory) -> str:
    uri = str(tmp_path_factory.mktemp("store"))
    publish_pair(Catalog(uri), "look", pair, {"content": "c.png", "style": "s.png"})
    return uri


def photo(n: int, size: tuple[int, int]) -> Image.Image:
    return open_rgb(content(n), 160).resize(size)


def write_collection(root: Path) -> dict[str, tuple[int, int]]:
    """Photos of odd sizes in nested folders and three formats, a rotated JPEG, three bad files
    and files that must be ignored. Returns the photos' paths and their upright sizes."""
    good = {
        "a.jpg": (37, 53),
        "nested/deeper/B.JPG": (64, 41),
        "nested/c.png": (53, 37),
        "d.webp": (120, 77),
    }
    for i, (rel, size) in enumerate(good.items()):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        photo(i + 1, size).save(root / rel)
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # stored 40 x 60, shown rotated: 60 x 40
    photo(5, (40, 60)).save(root / "rotated.jpg", exif=exif.tobytes())
    good["rotated.jpg"] = (60, 40)
    jpeg = (root / "a.jpg").read_bytes()
    (root / "broken.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (root / "empty.png").write_bytes(b"")
    (root / "nested" / "notes.jpg").write_text("not a photo")
    for ignored in (".hidden.jpg", "nested/.cache/x.jpg", "readme.txt"):
        (root / ignored).parent.mkdir(parents=True, exist_ok=True)
        (root / ignored).write_bytes(jpeg)
    return good


BAD = {"broken.jpg": "truncated", "empty.png": "empty input", "nested/notes.jpg": "not an image"}


def apply(*args: str) -> Result:
    return CliRunner().invoke(main, ["apply", "--json", *args], catch_exceptions=False)


def document(result: Result) -> dict:
    """The one JSON document on stdout, after checking its exact shape."""
    doc = json.loads(result.stdout)
    assert list(doc) == JSON_KEYS
    assert doc["seconds"] > 0 and doc["model_seconds"] >= 0
    assert doc["style"] == "look" and doc["style_version"] == "v1"
    return doc


def status(output: str) -> dict:
    result = CliRunner().invoke(main, ["status", "--output", output, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_a_folder_is_stylised_mirrored_with_bad_photos_as_error_rows_and_reruns_resume(
    ray_session, style_store: str, tmp_path: Path
) -> None:
    inputs, output = tmp_path / "in", tmp_path / "out"
    good = write_collection(inputs)
    args = ["--style", "look", "--store", style_store, "--input", str(inputs), "--output", str(output), "--batch-size", "2"]

    first = apply(*args)
    assert first.exit_code == 3, first.output  # 3 of 8 failed > the default 1 %
    doc = document(first)
    assert (doc["processed"], doc["skipped"], doc["errors"]) == (5, 0, 3)
    assert doc["model_seconds"] > 0 and doc["manifest"] == f"{output}/{MANIFEST_DIR}"

    written = sorted(str(p.relative_to(output)) for p in output.rglob("*") if p.is_file() and MANIFEST_DIR not in p.parts)
    assert written == sorted(good)
    for rel, size in good.items():
        with Image.open(output / rel) as im:
            assert im.size == size, rel
            assert im.format == {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}[rel.rsplit(".", 1)[1].lower()]
            assert im.getexif().get(ORIENTATION, 1) == 1

    rows = read_outputs(str(output))
    assert rows.num_rows == 8 and set(rows["run_id"].to_pylist()) == {doc["run_id"]}
    # committed a part per batch, then merged into one when the run finished
    assert sorted(p.name for p in (output / MANIFEST_DIR).iterdir()) == [OWNER_FILE, f"part-{doc['run_id']}-compacted.parquet"]
    by_input = {r["input_uri"]: r for r in rows.to_pylist()}
    for rel, size in good.items():
        row = by_input[f"{inputs}/{rel}"]
        assert row["status"] == "ok" and row["output_uri"] == f"{output}/{rel}"
        assert (row["width"], row["height"]) == size and row["seconds"] > 0
    for rel, reason in BAD.items():
        row = by_input[f"{inputs}/{rel}"]
        assert row["status"] == "error" and row["output_uri"] is None
        assert row["error"].startswith(f"{inputs}/{rel}: ") and reason in row["error"], row["error"]

    summary = status(str(output))
    assert (summary["ok"], summary["error"], summary["runs"]) == (5, 3, 1)
    assert summary["styles"] == [{"style": "look", "style_version": "v1", "ok": 5, "error": 3}]
    assert summary["last_run"]["run_id"] == doc["run_id"] and summary["last_run"]["ok"] == 5

    again = apply(*args, "--max-error-rate", "1")
    assert again.exit_code == 0, again.output
    redo = document(again)
    assert (redo["processed"], redo["skipped"], redo["errors"]) == (0, 5, 3)  # only the failed ones retried
    assert redo["run_id"] > doc["run_id"]

    forced = document(apply(*args, "--max-error-rate", "0.5", "--force"))
    assert (forced["processed"], forced["skipped"], forced["errors"]) == (5, 0, 3)

    summary = status(str(output))
    assert (summary["ok"], summary["error"], summary["runs"]) == (5, 3, 3)
    assert summary["last_run"]["run_id"] == forced["run_id"]
    assert (summary["last_run"]["ok"], summary["last_run"]["error"]) == (5, 3)


def test_formats_guided_render_size_guard_and_name_collisions(ray_session, style_store: str, tmp_path: Path) -> None:
    inputs, output = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    exif = Image.Exif()
    exif[0x010F] = "PhotoCam"  # Make
    photo(1, (45, 31)).save(inputs / "x.png")
    photo(2, (31, 45)).save(inputs / "x.jpg")  # x.png and x.jpg both become x.jpg as JPEG
    photo(3, (90, 70)).save(inputs / "scan.tif")  # larger than --working-side: guided
    photo(4, (41, 47)).save(inputs / "keep.JPEG", exif=exif.tobytes())
    photo(5, (121, 60)).save(inputs / "huge.webp")

    result = apply(
        "--style", "look@v1", "--store", style_store, "--input", str(inputs), "--output", str(output),
        "--format", "jpeg", "--quality", "80", "--max-side", "120", "--max-error-rate", "1",
        "--render", "guided", "--working-side", "64",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (document(result)["processed"], document(result)["errors"]) == (2, 3)
    assert sorted(p.name for p in output.iterdir() if p.is_file()) == ["keep.JPEG", "scan.jpg"]
    with Image.open(output / "scan.jpg") as im:
        assert (im.format, im.size) == ("JPEG", (90, 70))
    with Image.open(output / "keep.JPEG") as im:
        assert im.size == (41, 47) and im.getexif().get(0x010F) == "PhotoCam"

    errors = {r["input_uri"].rsplit("/", 1)[1]: r["error"] for r in read_outputs(str(output)).to_pylist() if r["error"]}
    assert set(errors) == {"x.png", "x.jpg", "huge.webp"}
    assert f"{output}/x.jpg would also be another input's result" in errors["x.png"]
    assert "too large: 121x60 exceeds --max-side 120" in errors["huge.webp"]


def test_a_uri_manifest_mirrors_the_path_after_the_scheme(ray_session, style_store: str, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    (photos / "2024").mkdir(parents=True)
    photo(6, (33, 49)).save(photos / "2024" / "p.webp")
    photo(7, (49, 33)).save(photos / "q.png")
    uris = [str(photos / "2024" / "p.webp"), str(photos / "q.png"), str(photos / "q.png")]  # a duplicate
    pq.write_table(pa.table({"id": [1, 2, 3], "uri": uris}), tmp_path / "list.parquet")
    output = tmp_path / "out"

    doc = document(apply("--style", "look", "--store", style_store, "--input", str(tmp_path / "list.parquet"), "--output", str(output)))
    assert (doc["processed"], doc["errors"]) == (2, 0)
    for source in uris[:2]:
        target = output / source.lstrip("/")
        with Image.open(target) as out, Image.open(source) as src:
            assert out.size == src.size and out.format == src.format

    (tmp_path / "bad.csv").write_text("url\n/a.jpg\n")
    bad = CliRunner().invoke(main, ["apply", "--style", "look", "--store", style_store, "--input", str(tmp_path / "bad.csv"), "--output", str(output)])
    assert bad.exit_code == 1 and "bad.csv: no 'uri' column (found: url)" in bad.output
    (tmp_path / "relative.csv").write_text("uri\n/a.jpg\nphotos/b.jpg\n")
    bad = CliRunner().invoke(main, ["apply", "--style", "look", "--store", style_store, "--input", str(tmp_path / "relative.csv"), "--output", str(output)])
    assert bad.exit_code == 1 and "row 2: 'photos/b.jpg' is not absolute" in bad.output


def test_unknown_or_tampered_styles_and_missing_inputs_fail_at_once(style_store: str, pair, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    photo(1, (20, 20)).save(inputs / "a.png")

    def run(*args: str) -> Result:
        return CliRunner().invoke(main, ["apply", "--store", *args, "--output", str(tmp_path / "out")])

    unknown = run(style_store, "--style", "nope", "--input", str(inputs))
    assert unknown.exit_code == 1 and unknown.output.strip() == f"Error: style 'nope' not found in store {style_store}"

    tampered = str(tmp_path / "tampered")
    publish_pair(Catalog(tampered), "look", pair, {})
    fs, root = filesystem(tampered)
    norm = f"{root}/styles/look/v1/norm.safetensors"
    data = bytearray(fs.cat_file(norm))
    data[-1] ^= 1
    fs.pipe_file(norm, bytes(data))
    bad = run(tampered, "--style", "look", "--input", str(inputs))
    assert bad.exit_code == 1 and "checksum mismatch" in bad.output and len(bad.output.strip().splitlines()) == 1

    missing = run(style_store, "--style", "look", "--input", str(tmp_path / "nowhere"))
    assert missing.exit_code == 1 and "nowhere: no such folder, prefix or manifest" in missing.output
    inside = CliRunner().invoke(main, ["apply", "--store", style_store, "--style", "look", "--input", str(inputs), "--output", str(tmp_path)])
    assert inside.exit_code == 1 and "must not be the input folder or contain it" in inside.output
    assert not (tmp_path / "out").exists()

    no_manifest = CliRunner().invoke(main, ["status", "--output", str(tmp_path / "out")])
    assert no_manifest.exit_code == 1 and "no part files (nothing applied there)" in no_manifest.output


def test_s3_input_and_output(ray_session, s3_endpoint: str, s3_store: str, pair) -> None:
    publish_pair(Catalog(s3_store), "look", pair, {})
    bucket = s3_store.split("/")[2]
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    sizes = {"in/a.jpg": (39, 51), "in/deep/b.png": (51, 39)}
    for key, size in sizes.items():
        buffer = io.BytesIO()
        photo(2, size).save(buffer, format="JPEG" if key.endswith("jpg") else "PNG")
        s3.put_object(Bucket=bucket, Key=key, Body=buffer.getvalue())

    args = ["--style", "look", "--store", s3_store, "--input", f"s3://{bucket}/in", "--output", f"s3://{bucket}/out"]
    doc = document(apply(*args))
    assert (doc["processed"], doc["errors"]) == (2, 0) and doc["manifest"] == f"s3://{bucket}/out/{MANIFEST_DIR}"
    for key, size in sizes.items():
        body = s3.get_object(Bucket=bucket, Key=key.replace("in/", "out/", 1))["Body"].read()
        assert Image.open(io.BytesIO(body)).size == size
    summary = status(f"s3://{bucket}/out")
    assert (summary["ok"], summary["error"], summary["runs"]) == (2, 0, 1)
    again = document(apply(*args))
    assert (again["processed"], again["skipped"]) == (0, 2)


def session_processes(sid: int) -> list[int]:
    """Live processes of a session (from /proc; zombies excluded). Ray's workers put themselves
    in process groups of their own, but stay in the session of the command that started Ray."""
    alive = []
    for entry in Path("/proc").iterdir():
        try:
            state, _ppid, _pgrp, session = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:4]
        except (OSError, ValueError):
            continue
        if int(session) == sid and state != "Z":
            alive.append(int(entry.name))
    return alive


def kill_session(sid: int) -> None:
    """kill -9 every process of the session, the way a crashed node takes the job down."""
    deadline = time.monotonic() + 30
    while (alive := session_processes(sid)) and time.monotonic() < deadline:
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    assert not alive, f"processes of the killed run survived: {alive}"


def test_kill_9_mid_run_then_rerun_loses_and_duplicates_nothing(ray_session, style_store: str, tmp_path: Path) -> None:
    inputs, output = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    for i in range(40):
        photo(1 + i % 10, (200 + i, 150)).save(inputs / f"p{i:02d}.{('jpg', 'png')[i % 2]}")
    args = ["apply", "--style", "look", "--store", style_store, "--input", str(inputs), "--output", str(output)]
    cli = Path(sys.executable).with_name("pst-pipeline")
    process = subprocess.Popen(
        [str(cli), "-q", *args, "--batch-size", "2", "--concurrency", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own session: its whole Ray can be killed with it
    )
    parts = output / MANIFEST_DIR
    deadline = time.monotonic() + 120
    try:
        while not (parts.is_dir() and any(p.name.startswith("part-") for p in parts.iterdir())):
            assert process.poll() is None, "apply ended before committing anything"
            assert time.monotonic() < deadline, "no manifest part within 120 s"
            time.sleep(0.01)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        kill_session(process.pid)

    done = read_outputs(str(output), filter=pc.field("status") == STATUS_OK)
    assert 0 < done.num_rows < 40, "the kill came too late to test anything"

    result = CliRunner().invoke(main, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    doc = document(result)
    assert doc["processed"] == 40 - done.num_rows and doc["skipped"] == done.num_rows and doc["errors"] == 0

    rows = read_outputs(str(output))
    assert Counter(r["input_uri"] for r in rows.to_pylist() if r["status"] == STATUS_OK) == Counter(
        str(p) for p in inputs.iterdir()
    )  # every input exactly once
    visible = sorted(p.name for p in output.iterdir() if p.is_file() and not p.name.startswith("."))
    assert visible == sorted(p.name for p in inputs.iterdir())
    for name in visible:
        with Image.open(output / name) as out, Image.open(inputs / name) as source:
            out.load()
            assert out.size == source.size


def test_result_paths_formats_and_conflicts_without_ray() -> None:
    folder = OutputLayout("/out", "/in", "jpeg")
    uris = pa.chunked_array([["/in/a.JPG", "/in/b/c.png", "/in/d.tif", "/in/e"], ["/in/x.jpeg", "/in/b/c.jpg"]])
    assert folder.targets(uris).to_pydict() == {
        "path": ["a.JPG", "b/c.jpg", "d.jpg", "e.jpg", "x.jpeg", "b/c.jpg"],
        "format": ["jpeg"] * 6,
    }
    assert folder.conflicts(uris).to_pydict() == {
        "input_uri": ["/in/b/c.png", "/in/b/c.jpg"],
        "error": [f"{u}: its result /out/b/c.jpg would also be another input's result" for u in ("/in/b/c.png", "/in/b/c.jpg")],
    }
    same = OutputLayout("/out", "/in", "same")
    assert same.targets(uris)["format"].to_pylist() == ["jpeg", "png", "png", "png", "jpeg", "jpeg"]
    assert same.conflicts(uris).num_rows == 0

    manifest = OutputLayout("s3://b/out", None, "same")
    listed = pa.array(["s3://b/x/a.jpg", "/b/x/a.jpg", "s3://b/../a.png", "s3://b/x/z.png", "s3://b/out/b/x/z.png"])
    assert manifest.targets(listed)["path"].to_pylist() == ["b/x/a.jpg", "b/x/a.jpg", "b/../a.png", "b/x/z.png", "b/out/b/x/z.png"]
    errors = dict(zip(*manifest.conflicts(listed).to_pydict().values()))
    assert errors == {
        "s3://b/x/a.jpg": "s3://b/x/a.jpg: its result s3://b/out/b/x/a.jpg would also be another input's result",
        "/b/x/a.jpg": "/b/x/a.jpg: its result s3://b/out/b/x/a.jpg would also be another input's result",
        "s3://b/../a.png": "s3://b/../a.png: '..' in its path would put the result outside the output folder",
        "s3://b/x/z.png": "s3://b/x/z.png: its result s3://b/out/b/x/z.png would overwrite an input",
    }
    assert manifest.conflicts(pa.array(["s3://b/p.jpg", "s3://b/p.jpg", "s3://c/p.jpg"])).num_rows == 0  # repeats are one input


def test_listing_skips_hidden_files_other_formats_and_the_output_inside(tmp_path: Path) -> None:
    for rel in ("a.JPG", "b/c.webp", "b/.tmp-123-c.webp", ".git/x.png", "notes.txt", "out/a.JPG", "out/_manifest/part.parquet", "outer.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    found = list_inputs(str(tmp_path), exclude=str(tmp_path / "out"))
    assert found.root == str(tmp_path)
    assert sorted(found.uris.to_pylist()) == [str(tmp_path / r) for r in ("a.JPG", "b/c.webp", "outer.png")]


def test_first_occurrences_drops_repeats_and_keeps_input_order() -> None:
    uris = pa.chunked_array([["c", "a", "b"], ["a", "d", "c", "c"]])
    assert first_occurrences(uris).to_pylist() == ["c", "a", "b", "d"]
    unique = pa.array(["z", "y", "x"])
    assert first_occurrences(unique).to_pylist() == ["z", "y", "x"]
    assert first_occurrences(pa.array([], pa.string())).to_pylist() == []

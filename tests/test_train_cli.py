"""``pst-pipeline train`` on the shared local Ray: pair and style modes, per-row failures, skips,
S3 stores and loss-network weights fetched from S3. Tiny photos and a few iterations: this tests
the plumbing, not the look."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
from click.testing import CliRunner, Result
from PIL import Image

from photostyle import ALGORITHM_VERSION, PRESETS, Recipe, StyleNet, TrainConfig, split_net
from pipeline import training_jobs
from pipeline.catalog import Catalog
from pipeline.cli import main
from pipeline.published import load_style
from pipeline.storage import filesystem
from pipeline.training_jobs import Row, TrainJob, fetch_weights
from tests.conftest import WeightsFile
from tests.photos import content, open_rgb, style
from tests.test_published import OLD_LITE_CELLS_ARCH

FAST = ["--preset", "lite", "--iterations", "2", "--crop", "32", "--loss-net", "random"]
RESULT_KEYS = ["name", "status", "error", "base", "styles", "seconds", "note"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """96 px copies of two content/style pairs, and a truncated PNG."""
    directory = tmp_path_factory.mktemp("photos")
    paths = {}
    for n in (1, 2):
        for kind, source in (("content", content), ("style", style)):
            path = directory / f"{kind}{n}.png"
            open_rgb(source(n), 96).save(path)
            paths[f"{kind}{n}"] = str(path)
    data = Path(paths["content2"]).read_bytes()
    (directory / "broken.png").write_bytes(data[: len(data) // 2])
    paths["broken"] = str(directory / "broken.png")
    return paths


def write_pairs(uri: str, rows: list[tuple[str, str, str]]) -> str:
    """A pairs manifest of (content, style, name) rows at any fsspec URI."""
    fs, path = filesystem(uri)
    columns = dict(zip(["content", "style", "name"], map(list, zip(*rows))))
    pq.write_table(pa.table(columns), path, filesystem=fs)
    return uri


def train(*args: str) -> Result:
    return CliRunner().invoke(main, ["train", *args], catch_exceptions=False)


def results(result: Result) -> dict[str, dict[str, Any]]:
    """The rows of the one JSON document on stdout, by name, after checking its exact shape."""
    document = json.loads(result.stdout)
    assert list(document) == ["results"]
    for row in document["results"]:
        assert list(row) == RESULT_KEYS
        assert isinstance(row["seconds"], float) and row["seconds"] >= 0
        if row["status"] == "error":
            assert row["error"] and row["base"] is None and row["styles"] == [] and row["note"] is None
        else:
            assert row["status"] in ("ok", "skipped") and row["error"] is None
            assert len(row["base"]) == 16
            assert [s["name"] for s in row["styles"]] == [row["name"], row["name"] + ".reverse"]
    return {row["name"]: row for row in document["results"]}


def versions(store: str) -> dict[str, str]:
    return {info.name: info.version for info in Catalog(store).list_styles()}


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_pair_mode_publishes_and_a_broken_photo_fails_only_its_row(
    ray_session: None, tmp_path: Path, local_store: str, photos: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    pairs = write_pairs(
        str(tmp_path / "pairs.parquet"),
        [
            (photos["content1"], photos["style1"], "sunset"),
            (photos["broken"], photos["style2"], "broken"),
            (photos["content2"], photos["style2"], "lake"),
            (photos["content2"], str(tmp_path / "gone.png"), "gone"),
        ],
    )
    out = train("--pairs", pairs, "--store", local_store, *FAST, "--json")

    assert out.exit_code == 1, out.output
    rows = results(out)
    assert list(rows) == ["sunset", "broken", "lake", "gone"]
    assert rows["broken"]["error"].startswith(photos["broken"]) and "truncated" in rows["broken"]["error"]
    assert rows["gone"]["error"] == f"{tmp_path / 'gone.png'}: no such object"
    assert rows["sunset"]["status"] == rows["lake"]["status"] == "ok"
    assert rows["sunset"]["styles"] == [
        {"name": "sunset", "version": "v1"},
        {"name": "sunset.reverse", "version": "v1"},
    ]
    assert versions(local_store) == {"sunset": "v1", "sunset.reverse": "v1", "lake": "v1", "lake.reverse": "v1"}

    catalog = Catalog(local_store)
    loaded = load_style(catalog, "sunset")
    assert loaded.ref.base_id == rows["sunset"]["base"] == catalog.resolve("sunset.reverse").base_id
    meta = loaded.meta
    assert meta["mode"] == "pair" and meta["pair"] == "sunset"
    assert meta["content"] == {"uri": photos["content1"], "sha256": sha256(photos["content1"])}
    assert meta["style"] == {"uri": photos["style1"], "sha256": sha256(photos["style1"])}
    asked = TrainConfig(preset="lite", iterations=2, crop=32, loss_net="vgg19", loss_weights="random").resolve()
    assert meta["recipe"] == asked.to_dict()  # verbatim: the whole recipe, nothing else
    assert meta["recipe"]["loss_net"] == {"arch": "vgg19", "weights": "random", "seed": 0, "sha256": None}
    assert not {"settings", "hyperparameters", "loss_network", "iterations", "preset"} & meta.keys()
    base_meta = json.loads((Path(local_store) / "bases" / loaded.ref.base_id / "meta.json").read_text())
    assert base_meta["recipe"] == meta["recipe"] and "arch" not in base_meta

    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[")]
    assert sorted(line.split()[0] for line in progress) == ["[1/4]", "[2/4]", "[3/4]", "[4/4]"]
    assert any("broken error" in line and "truncated" in line for line in progress)


def test_rerun_skips_until_photos_settings_or_force_change(
    ray_session: None, tmp_path: Path, local_store: str, photos: dict[str, str]
) -> None:
    pairs = write_pairs(str(tmp_path / "pairs.parquet"), [(photos["content1"], photos["style1"], "sunset")])
    first = results(train("--pairs", pairs, "--store", local_store, *FAST, "--json"))["sunset"]
    assert first["status"] == "ok"

    assert first["note"] is None  # trained for the first time

    again = train("--pairs", pairs, "--store", local_store, *FAST)
    assert again.exit_code == 0, again.output
    assert again.stdout.splitlines()[-1] == "1 row(s): 0 trained, 1 skipped, 0 failed"
    moved = tmp_path / "moved.png"  # the same photo elsewhere is the same photo
    shutil.copy(photos["content1"], moved)
    moved_pairs = write_pairs(str(tmp_path / "moved.parquet"), [(str(moved), photos["style1"], "sunset")])
    skipped = results(train("--pairs", moved_pairs, "--store", local_store, *FAST, "--json"))["sunset"]
    assert skipped["status"] == "skipped" and skipped["note"] is None
    assert (skipped["base"], skipped["styles"]) == (first["base"], first["styles"])
    assert versions(local_store) == {"sunset": "v1", "sunset.reverse": "v1"}

    forced = results(train("--pairs", pairs, "--store", local_store, *FAST, "--json", "--force"))["sunset"]
    assert forced["status"] == "ok" and [s["version"] for s in forced["styles"]] == ["v2", "v2"]
    assert forced["note"] == "retrained: forced"
    reseeded = results(train("--pairs", pairs, "--store", local_store, *FAST, "--json", "--seed", "1"))["sunset"]
    assert reseeded["status"] == "ok" and reseeded["base"] != first["base"]
    assert reseeded["note"] == "retrained: recipe changed (seed 0 -> 1)"
    assert versions(local_store) == {"sunset": "v3", "sunset.reverse": "v3"}


def test_extra_content_photos_are_recorded_retrain_when_their_bytes_change_and_fail_their_row_by_name(
    ray_session: None, tmp_path: Path, local_store: str, photos: dict[str, str]
) -> None:
    extra = tmp_path / "extra.png"
    shutil.copy(photos["content2"], extra)
    columns = {"content": [photos["content1"]], "style": [photos["style1"]], "name": ["sunset"], "extra_content": [[str(extra)]]}
    pairs = str(tmp_path / "pairs.parquet")
    pq.write_table(pa.table(columns), pairs)
    first = results(train("--pairs", pairs, "--store", local_store, *FAST, "--json"))["sunset"]
    assert first["status"] == "ok"
    meta = load_style(Catalog(local_store), "sunset").meta
    assert meta["extra_content"] == [{"uri": str(extra), "sha256": sha256(extra)}]
    assert results(train("--pairs", pairs, "--store", local_store, *FAST, "--json"))["sunset"]["status"] == "skipped"

    shutil.copy(photos["style2"], extra)  # the same URI, other bytes
    again = results(train("--pairs", pairs, "--store", local_store, *FAST, "--json"))["sunset"]
    assert again["status"] == "ok" and again["note"] == "retrained: extra content photos changed"
    without = write_pairs(str(tmp_path / "without.parquet"), [(photos["content1"], photos["style1"], "sunset")])
    dropped = results(train("--pairs", without, "--store", local_store, *FAST, "--json"))["sunset"]
    assert dropped["note"] == "retrained: extra content photos changed"

    pq.write_table(pa.table({**columns, "extra_content": [[str(tmp_path / "gone.png")]]}), pairs)
    gone = train("--pairs", pairs, "--store", local_store, *FAST, "--json")
    assert gone.exit_code == 1
    assert results(gone)["sunset"]["error"] == f"{tmp_path / 'gone.png'}: no such object"
    assert versions(local_store) == {"sunset": "v3", "sunset.reverse": "v3"}


def test_a_malformed_extra_content_record_retrains_and_none_recorded_is_none() -> None:
    recipe = TrainConfig(preset="lite", loss_net="vgg16", loss_weights="random").resolve()
    photo = {"uri": "a.png", "sha256": "0" * 64}
    provenance = {"content": photo, "style": photo, "extra_content": []}
    meta = {"content": photo, "style": photo, "recipe": recipe.to_dict()}  # from before the column
    assert training_jobs.training_change(meta, provenance, recipe) is None
    for tampered in ("x", [7], [{"sha256": ["0" * 64]}], {"sha256": "0" * 64}):
        sample = {**provenance, "extra_content": [photo]}
        assert training_jobs.training_change({**meta, "extra_content": tampered}, sample, recipe) == "extra content photos changed"


def test_style_mode_trains_new_styles_on_a_bit_identical_base(
    ray_session: None, tmp_path: Path, local_store: str, photos: dict[str, str]
) -> None:
    pairs = write_pairs(str(tmp_path / "pairs.parquet"), [(photos["content1"], photos["style1"], "sunset")])
    base_id = results(train("--pairs", pairs, "--store", local_store, *FAST, "--json"))["sunset"]["base"]
    weights = Path(local_store) / "bases" / base_id / "weights.safetensors"
    before = weights.read_bytes()

    new = write_pairs(str(tmp_path / "new.parquet"), [(photos["content2"], photos["style2"], "dusk")])
    out = train("--pairs", new, "--store", local_store, "--mode", "style", "--base", base_id, *FAST, "--json")
    assert out.exit_code == 0, out.output
    row = results(out)["dusk"]
    assert row["status"] == "ok" and row["base"] == base_id
    assert weights.read_bytes() == before
    assert sorted(p.name for p in (Path(local_store) / "bases").iterdir()) == [base_id]
    loaded = load_style(Catalog(local_store), "dusk.reverse")
    assert loaded.ref.base_id == base_id and loaded.meta["mode"] == "style"
    recipe = Recipe.from_dict(loaded.meta["recipe"])
    assert recipe.mode == "style" and recipe.base == loaded.base.digest() and recipe.base[:16] == base_id
    assert recipe.preset == "lite" and recipe.net == loaded.base.config and recipe.schedule.iterations == 2

    mismatch = train("--pairs", new, "--store", local_store, "--mode", "style", "--base", base_id, "--preset", "paper")
    assert mismatch.exit_code == 2 and f"base {base_id} has the 'lite' architecture, not 'paper'" in mismatch.stderr


def test_a_changed_default_or_algorithm_version_retrains_and_says_why(
    ray_session: None, tmp_path: Path, local_store: str, photos: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a nightly `train` job relies on: a new method is picked up without a flag. The recipe
    is resolved in this (driver) process and the tasks train from it alone, so patching the
    registry here is what they train with."""
    pairs = write_pairs(str(tmp_path / "pairs.parquet"), [(photos["content1"], photos["style1"], "sunset")])
    assert results(train("--pairs", pairs, "--store", local_store, *FAST, "--json"))["sunset"]["status"] == "ok"
    lite = PRESETS["lite"]
    firmer = dataclasses.replace(lite, colour_weight=31.0)
    floored = dataclasses.replace(firmer, net=dataclasses.replace(lite.net, lut_entry_floor=0.3))
    changes = [  # each on top of the one before
        (firmer, None, "loss.colour_weight 30.0 -> 31.0"),
        (floored, None, "net.lut_entry_floor 0.4 -> 0.3"),
        (floored, ALGORITHM_VERSION + 1, f"algorithm_version {ALGORITHM_VERSION} -> {ALGORITHM_VERSION + 1}"),
    ]
    for version, (preset, algorithm, change) in enumerate(changes, start=2):
        monkeypatch.setitem(PRESETS, "lite", preset)
        if algorithm:
            monkeypatch.setattr("photostyle.recipe.ALGORITHM_VERSION", algorithm)
        row = results(train("--pairs", pairs, "--store", local_store, *FAST, "--json"))["sunset"]
        assert row["status"] == "ok" and row["note"] == f"retrained: recipe changed ({change})", row
        assert [s["version"] for s in row["styles"]] == [f"v{version}"] * 2
        meta = load_style(Catalog(local_store), "sunset").meta
        recorded = Recipe.from_dict(meta["recipe"])
        assert recorded.net == preset.net and recorded.loss.colour_weight == preset.colour_weight
        again = train("--pairs", pairs, "--store", local_store, *FAST)  # and then it is the same again
        assert again.stdout.splitlines()[-1] == "1 row(s): 0 trained, 1 skipped, 0 failed", again.output
    assert versions(local_store) == {"sunset": "v4", "sunset.reverse": "v4"}


def test_styles_trained_before_recipes_are_retrained_and_their_bases_keep_getting_new_styles(
    ray_session: None, tmp_path: Path, local_store: str, photos: dict[str, str]
) -> None:
    """A store written by the code before recipes: lite-cells bases with `arch` only, styles with
    7-key `settings` and `hyperparameters`."""
    catalog = Catalog(local_store)
    base, styles = split_net(StyleNet(PRESETS["lite-cells"].net, num_styles=2))
    base_id = catalog.publish_base(dict(base.tensors), {"preset": "lite-cells", "arch": OLD_LITE_CELLS_ARCH})
    old_meta = {
        "pair": "sunset",
        "mode": "pair",
        "content": {"uri": photos["content1"], "sha256": sha256(photos["content1"])},
        "style": {"uri": photos["style1"], "sha256": sha256(photos["style1"])},
        "settings": {"preset": "lite", "iterations": 2, "crop": 32, "seed": 0, "loss_net": "vgg19", "loss_weights": "random", "base": None},
        "hyperparameters": {"preset": "lite", "iterations": 2},
    }
    for name, style in (("sunset", styles[0]), ("sunset.reverse", styles[1])):
        catalog.publish_style(name, dict(style.tensors), old_meta, base_id=base_id)
    pairs = write_pairs(str(tmp_path / "pairs.parquet"), [(photos["content1"], photos["style1"], "sunset")])
    row = results(train("--pairs", pairs, "--store", local_store, *FAST, "--json"))["sunset"]
    assert row["status"] == "ok" and row["note"] == "retrained: recipe changed (none recorded)"
    assert versions(local_store) == {"sunset": "v2", "sunset.reverse": "v2"}

    new = write_pairs(str(tmp_path / "new.parquet"), [(photos["content2"], photos["style2"], "dusk")])
    out = train("--pairs", new, "--store", local_store, "--mode", "style", "--base", base_id, *FAST[2:], "--json")
    assert out.exit_code == 0, out.output
    assert results(out)["dusk"]["base"] == base_id
    recipe = Recipe.from_dict(load_style(catalog, "dusk").meta["recipe"])
    assert recipe.preset == "lite-cells" and recipe.net == PRESETS["lite-cells"].net and recipe.base == base.digest()


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the command gets as far as launching tasks."""

    def launched(*args: object, **kwargs: object) -> None:
        raise AssertionError("tasks were launched")

    monkeypatch.setattr("pipeline.commands.train.run_rows", launched)


def test_bad_input_is_one_line_before_any_work(
    no_work: None, tmp_path: Path, local_store: str, photos: dict[str, str]
) -> None:
    good = write_pairs(str(tmp_path / "pairs.parquet"), [(photos["content1"], photos["style1"], "sunset")])
    pq.write_table(pa.table({"content": ["a.png"], "photo": ["b.png"]}), tmp_path / "columns.parquet")
    clash = write_pairs(
        str(tmp_path / "clash.parquet"),
        [(photos["content1"], photos["style1"], "sun"), (photos["content2"], photos["style2"], "sun.reverse")],
    )
    too_long = write_pairs(str(tmp_path / "long.parquet"), [(photos["content1"], photos["style1"], "a" * 60)])
    missing = str(tmp_path / "missing.parquet")
    unknown_base = f"base 0123456789abcdef not found in store {local_store}"
    cases = [
        (["--pairs", missing], 1, f"pairs manifest {missing}: no such file"),
        (["--pairs", str(tmp_path / "columns.parquet")], 1, "missing column(s) style, name"),
        (["--pairs", clash], 1, "row 1 of 2: style 'sun' publishes 'sun.reverse', which is also the name of row 2"),
        (["--pairs", too_long], 1, f"invalid reverse style name (of '{'a' * 60}')"),
        (["--pairs", good, "--mode", "style", "--base", "0123456789abcdef"], 1, unknown_base),
        (["--pairs", good, "--mode", "style", "--base", "../etc"], 1, "invalid base id '../etc'"),
        (["--pairs", good, "--mode", "style"], 2, "--base BASE_ID is required with --mode style"),
        (["--pairs", good, "--base", "0123456789abcdef"], 2, "required with --mode style, and only there"),
        (["--pairs", good, "--preset", "huge"], 2, "Invalid value for '--preset'"),
        (["--pairs", good, "--crop", "8"], 2, "crop must be >= 16 pixels, got 8"),
        (["--pairs", good, "--iterations", "0"], 2, "iterations must be >= 1, got 0"),
        (["--pairs", good, "--cpus-per-task", "1.5"], 2, "neither a fraction below 1 nor a whole number"),
        (["--pairs", good, "--loss-net", "random", "--vgg-weights", "w.pth"], 2, "--vgg-weights cannot be used with"),
        (["--pairs", good, "--vgg-weights", str(tmp_path / "none.pth")], 2, f"{str(tmp_path / 'none.pth')!r}: no such file"),
    ]
    for args, code, message in cases:
        out = train(*args, "--store", local_store)
        assert out.exit_code == code and message in out.stderr, (args, out.output)
        assert out.stdout == "" and "Traceback" not in out.output
    assert not Path(local_store).exists()


def test_every_row_failing_on_the_loss_network_says_so(
    ray_session: None,
    tmp_path: Path,
    local_store: str,
    photos: dict[str, str],
    vgg16_weights: WeightsFile,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pairs = write_pairs(
        str(tmp_path / "pairs.parquet"),
        [(photos["content1"], photos["style1"], "sunset"), (photos["content2"], photos["style2"], "lake")],
    )
    # VGG16 weights for a VGG19: no row can build its loss network.
    args = ["--pairs", pairs, "--store", local_store, "--iterations", "2", "--crop", "32", "--loss-net", "vgg19"]
    out = train(*args, "--vgg-weights", str(vgg16_weights.path), "--json")
    assert out.exit_code == 1
    rows = results(out).values()
    assert all(r["status"] == "error" and f"weights {str(vgg16_weights.path)!r} do not fit vgg19" in r["error"] for r in rows)
    assert any(r.getMessage().startswith("every row failed: the loss network's weights") for r in caplog.records)
    assert not Path(local_store).exists()


def test_s3_store_photos_manifest_and_loss_network_weights(
    ray_session: None, s3_endpoint: str, s3_store: str, photos: dict[str, str], vgg16_weights: WeightsFile
) -> None:
    bucket = s3_store.removeprefix("s3://").split("/")[0]
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    for key in ("content1", "style1"):
        s3.upload_file(photos[key], bucket, f"photos/{key}.png")
    s3.upload_file(str(vgg16_weights.path), bucket, "weights/vgg16.safetensors")
    pairs = write_pairs(
        f"s3://{bucket}/pairs.parquet",
        [(f"s3://{bucket}/photos/content1.png", f"s3://{bucket}/photos/style1.png", "harbour")],
    )
    weights_uri = f"s3://{bucket}/weights/vgg16.safetensors"
    # The workers' environment is this process's, so is their weights cache: remove what the
    # test fetches into it.
    cache = training_jobs._cache_dir()
    cached_before = set(cache.iterdir()) if cache.exists() else set()
    try:
        args = ["--pairs", pairs, "--store", s3_store, "--iterations", "1", "--crop", "32", "--loss-net", "vgg16"]
        out = train(*args, "--vgg-weights", weights_uri, "--json")
        assert out.exit_code == 0, out.output
        assert results(out)["harbour"]["status"] == "ok"
        fetched = [f for d in set(cache.iterdir()) - cached_before for f in d.iterdir()]
        assert [f.name for f in fetched] == ["vgg16.safetensors"] and sha256(fetched[0]) == vgg16_weights.sha256
    finally:
        for directory in set(cache.iterdir()) - cached_before if cache.exists() else ():
            shutil.rmtree(directory)
    meta = load_style(Catalog(s3_store), "harbour").meta
    assert meta["recipe"]["loss_net"] == {"arch": "vgg16", "weights": "file", "sha256": vgg16_weights.sha256, "seed": None}
    assert meta["loss_weights_uri"] == weights_uri
    assert meta["content"]["uri"] == f"s3://{bucket}/photos/content1.png"


def test_remote_weights_are_fetched_once_and_again_when_replaced(
    s3_endpoint: str, s3_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    bucket = s3_store.removeprefix("s3://").split("/")[0]
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    uri = f"s3://{bucket}/w/vgg.pth"
    s3.put_object(Bucket=bucket, Key="w/vgg.pth", Body=b"first")
    path = fetch_weights(uri)
    assert path.read_bytes() == b"first" and path.name == "vgg.pth"
    assert path.is_relative_to(tmp_path / "cache" / "photostyle" / "vgg")
    mtime = path.stat().st_mtime_ns
    assert fetch_weights(uri) == path and path.stat().st_mtime_ns == mtime
    s3.put_object(Bucket=bucket, Key="w/vgg.pth", Body=b"second!")
    assert fetch_weights(uri).read_bytes() == b"second!"
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.name.startswith(".tmp-")]

    local = tmp_path / "local.pth"
    local.write_bytes(b"here")
    assert fetch_weights(str(local)) == local
    with pytest.raises(FileNotFoundError, match=f"loss-network weights s3://{bucket}/w/none.pth: no such object"):
        fetch_weights(f"s3://{bucket}/w/none.pth")


def test_a_request_no_node_can_run_is_announced(ray_session: None, caplog: pytest.LogCaptureFixture) -> None:
    training_jobs._warn_if_unschedulable(num_cpus=1, num_gpus=1)
    assert any("1 GPU but the cluster has 0" in r.getMessage() for r in caplog.records)
    assert not any("CPU but the cluster" in r.getMessage() for r in caplog.records)


def test_a_lost_worker_is_retried_then_becomes_its_rows_error(
    ray_session: None, tmp_path: Path, local_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts = tmp_path / "attempts"

    def crash(row: Row, job: TrainJob, board: object) -> None:  # a local function: Ray ships it by value
        with attempts.open("a") as f:
            f.write(row.name)
        os._exit(1)

    monkeypatch.setattr(training_jobs, "_train_row_task", ray.remote(max_retries=1, retry_exceptions=False)(crash))
    job = TrainJob(store=local_store, recipe=TrainConfig(loss_weights="random").resolve())
    [result] = training_jobs.run_rows([Row("lost", "c.png", "s.png")], job)
    assert attempts.read_text() == "lostlost"
    assert result.status == "error" and result.error.startswith("WorkerCrashedError: ")
    assert result.to_json()["base"] is None and result.to_json()["styles"] == []


def test_a_row_whose_node_dies_after_publishing_is_retried_without_a_second_version(
    ray_session: None, tmp_path: Path, local_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker publishes, then dies before its result reaches the driver (its node is lost):
    Ray retries the row, which must find this run's publication, even with --force, and report
    it as trained, not publish ``v2`` of both styles."""
    rng = np.random.default_rng(0)
    paths = []
    for name in ("c", "s"):
        paths.append(str(tmp_path / f"{name}.png"))
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(paths[-1])
    died = tmp_path / "died"

    def publish_then_die(row: Row, job: TrainJob, board: object) -> training_jobs.RowResult:
        result = training_jobs.train_row(row, job, board)
        if not died.exists():
            died.write_text(result.status)
            os._exit(1)
        return result

    monkeypatch.setattr(training_jobs, "_train_row_task", ray.remote(max_retries=1, retry_exceptions=False)(publish_then_die))
    job = training_jobs.plan_job(local_store, iterations=2, crop=32, loss_net="random", force=True)
    [result] = training_jobs.run_rows([Row("once", *paths)], job)
    assert died.read_text() == "ok"  # the first attempt published
    assert result.status == "ok" and [ref.spec for ref in result.styles] == ["once@v1", "once.reverse@v1"]
    assert versions(local_store) == {"once": "v1", "once.reverse": "v1"}

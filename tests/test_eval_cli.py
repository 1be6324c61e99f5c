"""``pst-pipeline eval`` on the shared local Ray: train, stylise through apply, score ours, the
baselines and a reference; the files it writes; reuse with --no-train; errors. Tiny photos and
2 iterations with a random loss network: this tests the plumbing, not the look."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result
from PIL import Image

from pipeline.baselines import histogram_match, reinhard
from pipeline.catalog import Catalog
from pipeline.cli import main
from pipeline.outputs_manifest import MANIFEST_DIR
from pipeline.quality import METRICS, metrics
from pipeline.storage import read_bytes
from tests.photos import content, open_rgb, style

FAST = ["--iterations", "2", "--crop", "32", "--loss-net", "random"]
PAIR_KEYS = ["name", "style", "photos", "output", "metrics", "baselines", "reference"]
REPORT_KEYS = ["pairs", "mean", "baselines", "reference", "reference_pairs"]


def evaluate(*args: str) -> Result:
    return CliRunner().invoke(main, ["eval", *args], catch_exceptions=False)


def write_pairs(path: Path, columns: dict[str, list[Any]]) -> str:
    pq.write_table(pa.table(columns), path)
    return str(path)


def versions(store: str) -> dict[str, str]:
    return {info.name: info.version for info in Catalog(store).list_styles()}


def image(uri: str) -> Image.Image:
    return Image.open(io.BytesIO(read_bytes(uri))).convert("RGB")


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Two ~96 px pairs, and a reference result for the first (any photo will do for the
    plumbing), at another size than the content (the metrics resize it)."""
    directory = tmp_path_factory.mktemp("eval-photos")
    sources = {
        "content1": (content(1), 96),
        "style1": (style(1), 96),
        "content2": (content(2), 96),
        "style2": (style(2), 96),
        "reference1": (style(2), 120),
    }
    paths = {key: str(directory / f"{key}.png") for key in sources}
    for key, (source, side) in sources.items():
        open_rgb(source, side).save(paths[key])
    return paths


@pytest.fixture(scope="module")
def pairs(photos: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_pairs(
        tmp_path_factory.mktemp("eval-pairs") / "pairs.parquet",
        {
            "content": [photos["content1"], photos["content2"]],
            "style": [photos["style1"], photos["style2"]],
            "name": ["harbour", "dusk"],
            "reference": [photos["reference1"], None],
        },
    )


@pytest.fixture(scope="module")
def evaluated(ray_session: None, pairs: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One training evaluation shared by the tests that read its results."""
    root = tmp_path_factory.mktemp("eval")
    store, out = str(root / "store"), str(root / "out")
    result = evaluate("--pairs", pairs, "--store", store, "--out", out, *FAST, "--json")
    assert result.exit_code == 0, result.output
    return {"store": store, "out": out, "report": json.loads(result.stdout)}


def test_report_has_every_pair_its_scores_and_the_means(evaluated: dict[str, Any], photos: dict[str, str]) -> None:
    report = evaluated["report"]
    assert list(report) == REPORT_KEYS
    assert [p["name"] for p in report["pairs"]] == ["harbour", "dusk"]
    for pair in report["pairs"]:
        assert list(pair) == PAIR_KEYS
        assert pair["style"] == f"{pair['name']}@v1"
        assert list(pair["metrics"]) == list(METRICS)
        assert list(pair["baselines"]) == ["reinhard", "histmatch"]
        # Stylised by apply, into this pair's folder, losslessly, at the content's size.
        assert pair["output"].startswith(f"{evaluated['out']}/outputs/{pair['name']}/") and pair["output"].endswith(".png")
        assert image(pair["output"]).size == Image.open(pair["photos"]["content"]).size
    harbour, dusk = report["pairs"]
    assert harbour["photos"] == {"content": photos["content1"], "style": photos["style1"], "reference": photos["reference1"]}
    assert list(harbour["reference"]) == list(METRICS) and dusk["reference"] is None
    for key in METRICS:
        assert report["mean"][key] == pytest.approx(np.mean([p["metrics"][key] for p in report["pairs"]]))
        for name in ("reinhard", "histmatch"):
            want = np.mean([p["baselines"][name][key] for p in report["pairs"]])
            assert report["baselines"][name][key] == pytest.approx(want)
    assert report["reference"] == harbour["reference"] and report["reference_pairs"] == 1
    assert versions(evaluated["store"]) == {"harbour": "v1", "harbour.reverse": "v1", "dusk": "v1", "dusk.reverse": "v1"}


def test_scores_equal_the_quality_and_baseline_modules_called_directly(evaluated: dict[str, Any]) -> None:
    for pair in evaluated["report"]["pairs"]:
        c, s = (Image.open(pair["photos"][kind]) for kind in ("content", "style"))
        assert pair["metrics"] == pytest.approx(metrics(c, s, image(pair["output"])), rel=1e-9)
        assert pair["baselines"]["reinhard"] == pytest.approx(metrics(c, s, reinhard(c, s)), rel=1e-9)
        assert pair["baselines"]["histmatch"] == pytest.approx(metrics(c, s, histogram_match(c, s)), rel=1e-9)
        if pair["reference"] is not None:
            reference = Image.open(pair["photos"]["reference"])
            assert reference.size != c.size
            assert pair["reference"] == pytest.approx(metrics(c, s, reference), rel=1e-9)


def test_out_holds_the_json_report_a_markdown_table_and_a_contact_sheet(evaluated: dict[str, Any]) -> None:
    out = Path(evaluated["out"])
    assert json.loads((out / "report.json").read_text()) == evaluated["report"]
    table = (out / "report.md").read_text().splitlines()
    rows = [line for line in table if line.startswith("| ")]
    assert rows[0] == "| pair | style | ours | reinhard | histmatch | reference |"
    harbour = evaluated["report"]["pairs"][0]
    ours = harbour["metrics"]
    assert rows[1].startswith("| harbour | harbour@v1 | ")
    assert f"{ours['structure']:.3f} / {ours['style_swd']:.2f} / {ours['affine_res']:.3f}" in rows[1]
    assert rows[2].startswith("| dusk | dusk@v1 | ") and rows[2].endswith(" | – |")
    assert rows[3].startswith("| **mean** | | ") and rows[3].endswith("(1 of 2 pairs) |")
    sheet = Image.open(out / "sheet.png")
    # Two rows of 256 px cells (plus captions); the first has six cells, the second five.
    assert sheet.mode == "RGB" and 2 * 256 < sheet.height < 2 * 256 + 200
    assert sheet.width > 6 * 256


def test_no_train_reuses_the_published_styles_and_the_stylised_photos(evaluated: dict[str, Any], pairs: str) -> None:
    out = Path(evaluated["out"])
    parts = {p.name for p in out.glob(f"outputs/*/{MANIFEST_DIR}/*.parquet")}
    before = versions(evaluated["store"])
    result = evaluate("--pairs", pairs, "--store", evaluated["store"], "--out", str(out), "--no-train", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert versions(evaluated["store"]) == before  # nothing trained
    assert {p.name for p in out.glob(f"outputs/*/{MANIFEST_DIR}/*.parquet")} == parts  # nothing stylised again
    assert report == evaluated["report"]


def test_no_train_warns_when_a_style_was_trained_on_other_photos(
    evaluated: dict[str, Any], photos: dict[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pairs = write_pairs(
        tmp_path / "pairs.parquet",
        {"content": [photos["content1"]], "style": [photos["style2"]], "name": ["harbour"]},
    )
    result = evaluate("--pairs", pairs, "--store", evaluated["store"], "--out", evaluated["out"], "--no-train", "--json")
    assert result.exit_code == 0, result.output
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [f"pair harbour: harbour@v1 was not trained on this row's style photo {photos['style2']}"]
    # Still scored, against the row's style photo.
    assert json.loads(result.stdout)["pairs"][0]["photos"]["style"] == photos["style2"]


def test_no_train_refuses_training_flags(pairs: str, tmp_path: Path) -> None:
    result = evaluate("--pairs", pairs, "--store", str(tmp_path), "--out", str(tmp_path / "o"), "--no-train", "--iterations", "3")
    assert result.exit_code == 2
    assert "--iterations: training settings have no effect with --no-train" in result.output


def test_no_train_without_a_published_style_names_the_pair(pairs: str, tmp_path: Path) -> None:
    store = str(tmp_path / "empty-store")
    result = evaluate("--pairs", pairs, "--store", store, "--out", str(tmp_path / "o"), "--no-train")
    assert result.exit_code == 1
    assert f"Error: pair harbour: style 'harbour' not found in store {store}" in result.output
    assert "leave out --no-train" in result.output and "Traceback" not in result.output


def test_unreadable_reference_fails_naming_the_pair_and_the_file(
    evaluated: dict[str, Any], photos: dict[str, str], tmp_path: Path
) -> None:
    gone = str(tmp_path / "gone.png")
    pairs = write_pairs(
        tmp_path / "pairs.parquet",
        {"content": [photos["content1"]], "style": [photos["style1"]], "name": ["harbour"], "reference": [gone]},
    )
    result = evaluate("--pairs", pairs, "--store", evaluated["store"], "--out", evaluated["out"], "--no-train")
    assert result.exit_code == 1
    assert f"Error: pair harbour: {gone}: no such object" in result.output


def test_reference_column_of_the_wrong_type_is_refused(photos: dict[str, str], tmp_path: Path) -> None:
    pairs = write_pairs(
        tmp_path / "pairs.parquet",
        {"content": [photos["content1"]], "style": [photos["style1"]], "name": ["harbour"], "reference": [3]},
    )
    result = evaluate("--pairs", pairs, "--store", str(tmp_path), "--out", str(tmp_path / "o"), "--no-train")
    assert result.exit_code == 1
    assert f"Error: pairs manifest {pairs}: column 'reference' must hold strings, not int64" in result.output


def test_a_pair_that_cannot_be_trained_fails_the_evaluation(
    ray_session: None, photos: dict[str, str], tmp_path: Path
) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(Path(photos["content1"]).read_bytes()[:100])
    pairs = write_pairs(
        tmp_path / "pairs.parquet",
        {"content": [str(broken)], "style": [photos["style1"]], "name": ["broken"]},
    )
    out = tmp_path / "out"
    result = evaluate("--pairs", pairs, "--store", str(tmp_path / "store"), "--out", str(out), *FAST)
    assert result.exit_code == 1
    assert f"Error: training failed for 1 of 1 pair(s): broken: {broken}" in result.output
    assert not out.exists()  # no report for a partial evaluation


def test_results_and_report_on_s3(
    evaluated: dict[str, Any], pairs: str, s3_endpoint: str, s3_store: str
) -> None:
    out = s3_store.replace("/store", "/eval")
    result = evaluate("--pairs", pairs, "--store", evaluated["store"], "--out", out, "--no-train", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [p["output"].startswith(f"{out}/outputs/{p['name']}/") for p in report["pairs"]] == [True, True]
    # Same styles, same photos: the same scores as the local run.
    for got, want in zip(report["pairs"], evaluated["report"]["pairs"]):
        assert got["metrics"] == want["metrics"]
    bucket = out.split("/")[2]
    keys = {o["Key"] for o in boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(Bucket=bucket)["Contents"]}
    assert {"eval/report.json", "eval/report.md", "eval/sheet.png"} <= keys
    assert json.loads(read_bytes(f"{out}/report.json")) == report


@pytest.fixture(scope="module")
def cross_evaluated(evaluated: dict[str, Any], pairs: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = str(tmp_path_factory.mktemp("eval-cross") / "out")
    result = evaluate("--pairs", pairs, "--store", evaluated["store"], "--out", out, "--no-train", "--cross", "--json")
    assert result.exit_code == 0, result.output
    return {"out": out, "report": json.loads(result.stdout)}


def test_cross_applies_each_style_to_the_other_pairs_photos_scored_against_its_own_style_photo(
    cross_evaluated: dict[str, Any], evaluated: dict[str, Any], photos: dict[str, str]
) -> None:
    report = cross_evaluated["report"]
    assert list(report) == [*REPORT_KEYS, "cross"] and report["pairs"] == [
        {**p, "output": p["output"].replace(evaluated["out"], cross_evaluated["out"])} for p in evaluated["report"]["pairs"]
    ]
    cross = report["cross"]
    assert [(a["name"], a["style"]) for a in cross["applications"]] == [("harbour on dusk", "harbour@v1"), ("dusk on harbour", "dusk@v1")]
    harbour_on_dusk, dusk_on_harbour = cross["applications"]
    assert harbour_on_dusk["photos"] == {"content": photos["content2"], "style": photos["style1"], "reference": None}
    assert dusk_on_harbour["photos"] == {"content": photos["content1"], "style": photos["style2"], "reference": None}
    for application in cross["applications"]:
        assert application["output"].startswith(f"{cross_evaluated['out']}/outputs/cross/{application['style'].split('@')[0]}/")
        c, s = (Image.open(application["photos"][kind]) for kind in ("content", "style"))
        assert application["metrics"] == pytest.approx(metrics(c, s, image(application["output"])), rel=1e-9)
        assert application["baselines"]["reinhard"] == pytest.approx(metrics(c, s, reinhard(c, s)), rel=1e-9)
    for key in METRICS:
        assert cross["mean"][key] == pytest.approx(np.mean([a["metrics"][key] for a in cross["applications"]]))
    # The style was applied, not the identity: the result differs from the photo it was given.
    assert np.abs(np.asarray(image(harbour_on_dusk["output"]), float) - np.asarray(Image.open(photos["content2"]).convert("RGB"), float)).mean() > 1


def test_cross_leaves_out_a_photo_that_is_a_styles_own_training_photo_under_another_name(tmp_path: Path) -> None:
    from pipeline.evaluation import EvalPair, cross_applications

    uris = {name: str(tmp_path / f"{name}{photo.suffix}") for name, photo in (("a", content(1)), ("b", content(2)))}
    for uri, photo in zip(uris.values(), (content(1), content(2))):
        Path(uri).write_bytes(photo.read_bytes())
    (tmp_path / "a-again.png").write_bytes(content(1).read_bytes())
    pairs = [
        EvalPair("one", uris["a"], uris["b"]),
        EvalPair("two", str(tmp_path / "a-again.png"), uris["b"]),  # pair one's content photo, renamed
        EvalPair("three", uris["b"], uris["a"]),
    ]
    digest = {name: hashlib.sha256(Path(uri).read_bytes()).hexdigest() for name, uri in uris.items()}
    trained_on = {"one": frozenset([digest["a"]]), "two": frozenset([digest["a"]]), "three": frozenset([digest["b"]])}
    assert [(a.style_pair.name, a.photo_pair.name) for a in cross_applications(pairs, trained_on)] == [
        ("one", "three"), ("two", "three"), ("three", "one"), ("three", "two"),
    ]  # fmt: skip


def test_cross_tells_photos_apart_by_their_pixels_not_their_bytes(tmp_path: Path) -> None:
    """dpst-dev holds contents 21 and 24 (and 9 and 22) as one photo saved twice, with other bytes."""
    from pipeline.evaluation import EvalPair, cross_applications

    paths = {name: tmp_path / f"{name}.png" for name in ("a", "a-again", "b", "b-again", "c")}
    for name, n in (("a", 1), ("b", 2), ("c", 3)):
        Image.open(content(n)).convert("RGB").save(paths[name], compress_level=6)
    for name in ("a", "b"):
        Image.open(paths[name]).save(paths[f"{name}-again"], compress_level=1)
        assert paths[f"{name}-again"].read_bytes() != paths[name].read_bytes()
    uri = {name: str(path) for name, path in paths.items()}
    pairs = [
        EvalPair("one", uri["a"], uri["b"]),
        EvalPair("two", uri["a-again"], uri["b"]),  # pair one's photo, saved again
        EvalPair("three", uri["c"], uri["a"], extra_content=(uri["b-again"],)),  # pair four's photo, saved again
        EvalPair("four", uri["b"], uri["a"]),
    ]
    trained_on = {p.name: frozenset([hashlib.sha256(Path(p.content).read_bytes()).hexdigest()]) for p in pairs}
    assert [(a.style_pair.name, a.photo_pair.name) for a in cross_applications(pairs, trained_on)] == [
        ("one", "three"), ("one", "four"), ("two", "three"), ("two", "four"),
        ("three", "one"), ("three", "two"), ("four", "one"), ("four", "two"), ("four", "three"),
    ]  # fmt: skip


def test_cross_leaves_out_the_photos_a_style_had_as_extra_content(tmp_path: Path) -> None:
    from pipeline.evaluation import EvalPair, cross_applications, trained_on

    uris = {n: str(tmp_path / f"{n}.png") for n in (1, 2, 3)}
    for n, uri in uris.items():
        Path(uri).write_bytes(content(n).read_bytes())
    digest = {n: hashlib.sha256(Path(uri).read_bytes()).hexdigest() for n, uri in uris.items()}
    pairs = [EvalPair(f"p{n}", uris[n], uris[n]) for n in (1, 2, 3)]
    metas = {
        "p1": {"content": {"sha256": digest[1]}, "extra_content": [{"uri": uris[2], "sha256": digest[2]}]},
        "p2": {"content": {"sha256": digest[2]}},  # recorded before extra content existed
        "p3": {"content": {"sha256": digest[3]}, "extra_content": [5, {"sha256": None}, ["x"]]},  # tampered
    }
    catalog = type("Metas", (), {"style_meta": lambda self, ref: metas[ref]})()
    photos = trained_on(catalog, {name: name for name in metas})
    assert photos == {"p1": frozenset([digest[1], digest[2]]), "p2": frozenset([digest[2]]), "p3": frozenset([digest[3]])}
    assert [(a.style_pair.name, a.photo_pair.name) for a in cross_applications(pairs, photos)] == [
        ("p1", "p3"), ("p2", "p1"), ("p2", "p3"), ("p3", "p1"), ("p3", "p2"),
    ]  # fmt: skip


def test_cross_report_has_its_table_and_a_sheet_per_style(cross_evaluated: dict[str, Any]) -> None:
    out = Path(cross_evaluated["out"])
    table = (out / "report.md").read_text()
    assert "## Each style on the other pairs' photos (2 applications)" in table
    assert "| harbour on dusk | harbour@v1 | " in table and "| dusk on harbour | dusk@v1 | " in table
    sheets = sorted(p.name for p in (out / "cross-sheets").iterdir())
    assert sheets == ["dusk.png", "harbour.png"]  # one per style, a row per photo it was applied to
    for name in sheets:
        assert 256 < Image.open(out / "cross-sheets" / name).height < 256 + 120

"""A tampered, malformed or hijacked store is refused by name before any work, in ``apply``,
``styles`` and ``train``: a base's architecture must build exactly its tensors and stay within
bounds, its tensors must hash to its id, every catalog field of a ``meta.json`` must be there
and well-formed, and a pair may not publish over another pair's styles."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner, Result
from PIL import Image
from skimage import data

from photostyle import Base, TrainConfig, train_pair
from photostyle.architecture import MAX_PARAMETERS, ArchitectureError, check_style_tensors, config_from_record
from photostyle.weights import WeightsError, dumps, loads
from pipeline import apply_job, training_jobs
from pipeline.catalog import MAX_META_BYTES, Catalog, CatalogError, ChecksumError
from pipeline.cli import main
from pipeline.published import NameTaken, load_base, load_style, publish_pair
from pipeline.training_jobs import Row, plan_job, train_row

FAST = ["--preset", "lite", "--iterations", "2", "--crop", "32", "--loss-net", "random"]


def small(image: np.ndarray, side: int = 64) -> Image.Image:
    photo = Image.fromarray(image).convert("RGB")
    photo.thumbnail((side, side))
    return photo


@pytest.fixture(scope="module")
def pair():
    config = TrainConfig(iterations=2, crop=32, loss_net="vgg16", loss_weights="random")
    return train_pair(small(data.chelsea()), small(data.coffee()), config)


@pytest.fixture
def published(pair, tmp_path: Path) -> tuple[str, str]:
    """A local store holding pair ``look`` (styles look, look.reverse); its URI and base id."""
    store = str(tmp_path / "store")
    base_id, _ = publish_pair(Catalog(store), "look", pair, {"content": "c.png", "style": "s.png"})
    return store, base_id


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    small(data.astronaut(), 40).save(folder / "a.png")
    small(data.rocket(), 40).save(folder / "b.png")
    return folder


def base_meta(store: str, base_id: str) -> Path:
    return Path(store) / "bases" / base_id / "meta.json"


def edit_json(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a command gets as far as starting (or joining) Ray."""

    def refuse() -> None:
        raise AssertionError("Ray was started: the damage was not caught before any work")

    monkeypatch.setattr(apply_job, "ensure_ray", refuse)
    monkeypatch.setattr(training_jobs, "ensure_ray", refuse)


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def apply_cli(store: str, photos: Path, tmp_path: Path, style: str = "look") -> Result:
    return cli("apply", "--store", store, "--style", style, "--input", str(photos), "--output", str(tmp_path / "out"))


def one_line_error(result: Result, *fragments: str) -> str:
    """The command failed with exit 1 and one ``Error:`` line holding every fragment."""
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def pairs_manifest(path: Path, rows: list[tuple[str, str, str]]) -> str:
    pq.write_table(pa.table(dict(zip(["content", "style", "name"], map(list, zip(*rows))))), path)
    return str(path)


# ---- 3: the architecture must be within bounds and build exactly the tensors ----------------------
def test_huge_channel_counts_are_refused_by_name_before_any_worker(
    published: tuple[str, str], photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, base_id = published
    meta = base_meta(store, base_id)
    edit_json(meta, lambda m: m["recipe"]["net"].update(channels=[100_000, 200_000, 400_000]))
    no_ray(monkeypatch)
    start = time.monotonic()
    one_line_error(apply_cli(store, photos, tmp_path), str(meta), "arch.channels", "100000")
    assert time.monotonic() - start < 10
    assert not (tmp_path / "out").exists()

    pairs = pairs_manifest(tmp_path / "pairs.parquet", [(str(photos / "a.png"), str(photos / "b.png"), "new")])
    style_mode = cli("train", "--pairs", pairs, "--store", store, "--mode", "style", "--base", base_id, *FAST)
    one_line_error(style_mode, str(meta), "arch.channels")


@pytest.mark.parametrize(
    "change, fragments",
    [
        ({"residual_blocks": 4}, ["base tensors do not fit the architecture", "residuals.3"]),
        ({"head": "rgb"}, ["does not fit the architecture"]),
        ({"outer_kernel": 9}, ["conv_in.conv.conv.weight", "[16, 3, 5, 5]", "[16, 3, 9, 9]"]),
        ({"residual_blocks": 10**9}, ["arch.residual_blocks", "outside the allowed"]),
        ({"channels": [64, 128]}, ["arch.channels: expected 3 integers"]),
        ({"channels": "wide"}, ["arch.channels: expected 3 integers"]),
        ({"residual_blocks": True}, ["arch.residual_blocks: expected an integer"]),
        ({"head": "lut", "lut_levels": [64, 64, 10**6]}, ["arch.lut_levels", "outside the allowed"]),
        ({"outer_kernel": 4}, ["arch.outer_kernel", "even"]),
        ({"depth": 3}, ["arch.depth: unknown field"]),
    ],
)
def test_an_architecture_that_does_not_build_the_tensors_is_refused(
    published: tuple[str, str], change: dict[str, Any], fragments: list[str]
) -> None:
    store, base_id = published
    meta = base_meta(store, base_id)
    edit_json(meta, lambda m: m["recipe"]["net"].update(change))
    with pytest.raises(CatalogError) as info:
        load_base(Catalog(store), base_id)
    message = str(info.value)
    assert message.startswith(f"base {base_id}: {meta}: ")
    for fragment in fragments:
        assert fragment in message, message


def test_a_worker_refuses_the_same_damage_in_the_bytes_it_is_sent(pair) -> None:
    data_ = pair.base.to_bytes()
    tensors, metadata = loads(data_)
    arch = json.loads(metadata["photostyle.arch"])
    arch["channels"] = [100_000, 200_000, 400_000]
    forged = dumps(tensors, {"photostyle.arch": json.dumps(arch)})
    with pytest.raises(WeightsError, match=r"base: not a valid photostyle base \(arch.channels"):
        Base.from_bytes(forged, source="base")
    extra = {**tensors, "head.conv.conv.weight2": torch.zeros(1)}
    with pytest.raises(ArchitectureError, match="unexpected"):
        Base(pair.base.config, extra)


def test_the_parameter_bound_holds_within_the_per_field_bounds() -> None:
    widest = {"channels": [64, 128, 256], "residual_blocks": 16, "outer_kernel": 15}
    with pytest.raises(ArchitectureError, match=f"over the limit of {MAX_PARAMETERS:,}"):
        config_from_record(widest)
    assert config_from_record({"channels": [32, 64, 128]}).channels == (32, 64, 128)


def test_a_style_that_does_not_fit_its_base_is_refused(published: tuple[str, str], pair) -> None:
    store, _ = published
    catalog = Catalog(store)
    ref = catalog.resolve("look")
    norm = Path(store) / "styles" / "look" / "v1" / "norm.safetensors"
    tensors, _ = loads(norm.read_bytes())
    name = sorted(tensors)[0]
    tensors[name] = torch.ones(10_000)
    forged = dumps(tensors)
    norm.write_bytes(forged)
    edit_json(norm.with_name("meta.json"), lambda m: m.update(sha256=hashlib.sha256(forged).hexdigest(), size=len(forged)))
    with pytest.raises(CatalogError, match=rf"style {ref.spec} .* does not fit base .*{name}"):
        load_style(catalog, "look")
    with pytest.raises(ArchitectureError):
        check_style_tensors(pair.base.config, tensors)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_style_holding_nan_or_infinity_is_refused_by_name(published: tuple[str, str], pair, bad: float) -> None:
    """Its checksums recorded anew, as a forger would: only the values can tell."""
    store, _ = published
    catalog = Catalog(store)
    ref = catalog.resolve("look")
    norm = Path(store) / "styles" / "look" / "v1" / "norm.safetensors"
    tensors, _ = loads(norm.read_bytes())
    name = "head.photo_norm.gamma"
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[1] = bad
    forged = dumps(tensors)
    norm.write_bytes(forged)
    edit_json(norm.with_name("meta.json"), lambda m: m.update(sha256=hashlib.sha256(forged).hexdigest(), size=len(forged)))
    with pytest.raises(CatalogError, match=rf"style {ref.spec} .*: style tensor {name}: holds NaN or infinite values"):
        load_style(catalog, "look")


# ---- 4: the base id is the tensors' digest, checked on every load and before reuse -----------------
def forge_base(store: str, base_id: str) -> None:
    """Change one number of the base's tensors and record the new file's sha256 and size, as
    someone covering their tracks would: only the tensors' digest (the id) can tell."""
    weights = Path(store) / "bases" / base_id / "weights.safetensors"
    tensors, metadata = loads(weights.read_bytes())
    name = sorted(tensors)[0]
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] += 1
    forged = dumps(tensors, metadata or None)
    weights.write_bytes(forged)
    edit_json(base_meta(store, base_id), lambda m: m.update(sha256=hashlib.sha256(forged).hexdigest(), size=len(forged)))


def test_a_base_whose_tensors_are_not_its_id_is_refused_in_apply_and_train(
    published: tuple[str, str], photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pair
) -> None:
    store, base_id = published
    forge_base(store, base_id)
    with pytest.raises(ChecksumError, match=f"base {base_id} .* digest"):
        Catalog(store).load_base(base_id)
    no_ray(monkeypatch)
    one_line_error(apply_cli(store, photos, tmp_path), f"base {base_id}", "digest", "not the base's id")
    pairs = pairs_manifest(tmp_path / "pairs.parquet", [(str(photos / "a.png"), str(photos / "b.png"), "new")])
    style_mode = cli("train", "--pairs", pairs, "--store", store, "--mode", "style", "--base", base_id, *FAST)
    one_line_error(style_mode, f"base {base_id}", "digest")
    # train --force, or any pair that trains to these tensors again, must not publish on it
    with pytest.raises(ChecksumError, match=f"base {base_id}"):
        publish_pair(Catalog(store), "look", pair, {})
    assert Catalog(store).resolve("look").version == "v1"


def test_train_force_refuses_to_reuse_a_forged_base(tmp_path: Path, photos: Path) -> None:
    store = str(tmp_path / "store")
    row = Row("sunset", str(photos / "a.png"), str(photos / "b.png"))
    job = plan_job(store, preset="lite", iterations=2, crop=32, loss_net="random", force=True)
    first = train_row(row, job)
    assert first.status == "ok", first.error
    forge_base(store, first.base)
    forced = train_row(row, job)  # the same photos and seed train the same base again
    assert forced.status == "error" and f"base {first.base}" in forced.error and "digest" in forced.error
    assert {s.name: s.version for s in Catalog(store).list_styles()} == {"sunset": "v1", "sunset.reverse": "v1"}


# ---- 5: a malformed meta.json is refused naming the object and the field ------------------------
def drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda m: m.pop(key)


def put(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda m: m.update({key: value})


STYLE_DAMAGE = [
    (drop("created"), "field 'created' is missing"),
    (drop("base_id"), "field 'base_id' is missing"),
    (drop("sha256"), "field 'sha256' is missing"),
    (put("size", "big"), "field 'size': expected a byte count up to 67,108,864, got 'big'"),
    (put("base_id", 12), "field 'base_id': expected 16 lower-case hex digits, got 12"),
    (put("base_id", "../../../../etc/x"), "field 'base_id': expected 16 lower-case hex digits"),
    (put("created", None), "field 'created': expected a time stamp"),
    (put("version", "v2"), "field 'version' is 'v2', but the file is that of 'v1'"),
    (put("name", "other"), "field 'name' is 'other', but the file is that of 'look'"),
]
RAW_DAMAGE = [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "a JSON list, not an object"),
    (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
    (b'{"pad": "' + b" " * MAX_META_BYTES + b'"}', f"over {MAX_META_BYTES:,} bytes"),
]


def damage(path: Path, how: Callable[[dict[str, Any]], None] | bytes) -> None:
    if isinstance(how, bytes):
        path.write_bytes(how)
    else:
        edit_json(path, how)


@pytest.mark.parametrize("how, problem", STYLE_DAMAGE + RAW_DAMAGE)
def test_a_malformed_style_meta_is_refused_by_name_in_apply_styles_and_train(
    published: tuple[str, str], photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how, problem: str
) -> None:
    store, _ = published
    meta = Path(store) / "styles" / "look" / "v1" / "meta.json"
    damage(meta, how)
    no_ray(monkeypatch)
    one_line_error(apply_cli(store, photos, tmp_path), str(meta), problem)
    one_line_error(cli("styles", "show", "look", "--store", store), str(meta), problem)

    listing = cli("styles", "list", "--store", store, "--json")
    assert listing.exit_code == 1
    entries = {e["name"]: e for e in json.loads(listing.stdout)}
    assert entries["look.reverse"]["error"] is None and entries["look.reverse"]["version"] == "v1"
    assert str(meta) in entries["look"]["error"] and problem in entries["look"]["error"]
    table = cli("styles", "list", "--store", store)
    assert table.exit_code == 1 and "look.reverse" in table.stdout and "look " not in table.stdout
    assert f"error: look@v1 cannot be read: {meta}" in table.stderr

    # train: the name check (and the skip check in the task) read the damaged record
    pairs = pairs_manifest(tmp_path / "pairs.parquet", [(str(photos / "a.png"), str(photos / "b.png"), "look")])
    one_line_error(cli("train", "--pairs", pairs, "--store", store, *FAST), str(meta), problem)
    row = train_row(Row("look", str(photos / "a.png"), str(photos / "b.png")), plan_job(store, loss_net="random", iterations=2, crop=32))
    assert row.status == "error" and str(meta) in row.error and problem in row.error


@pytest.mark.parametrize(
    "how, problem",
    [(drop("recipe"), "field 'recipe' is missing"), (drop("created"), "field 'created' is missing"), (lambda m: m["recipe"].update(net=[1]), "arch: expected an object")]
    + RAW_DAMAGE,
)
def test_a_malformed_base_meta_is_refused_by_name(
    published: tuple[str, str], photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how, problem: str
) -> None:
    store, base_id = published
    meta = base_meta(store, base_id)
    damage(meta, how)
    no_ray(monkeypatch)
    one_line_error(apply_cli(store, photos, tmp_path), str(meta), problem)
    pairs = pairs_manifest(tmp_path / "pairs.parquet", [(str(photos / "a.png"), str(photos / "b.png"), "new")])
    one_line_error(cli("train", "--pairs", pairs, "--store", store, "--mode", "style", "--base", base_id, *FAST), str(meta), problem)


def test_an_oversized_tensor_file_is_refused_without_reading_it_whole(published: tuple[str, str], monkeypatch) -> None:
    store, base_id = published
    monkeypatch.setattr("pipeline.catalog.MAX_TENSOR_BYTES", 1000)
    with pytest.raises(CatalogError, match="field 'size': expected a byte count up to 1,000"):
        Catalog(store).load_base(base_id)
    edit_json(base_meta(store, base_id), put("size", 10))  # the record lies about the size
    catalog = Catalog(store)
    reads = []
    cat_file = catalog.fs.cat_file
    monkeypatch.setattr(catalog.fs, "cat_file", lambda path, start=None, end=None: reads.append(end) or cat_file(path, start=start, end=end))
    with pytest.raises(CatalogError, match="weights.safetensors: over 1,000 bytes"):
        catalog.load_base(base_id)
    assert reads == [MAX_META_BYTES + 1, 1001]


# ---- 6: a pair may not publish over another pair's styles ---------------------------------------
def test_a_row_named_x_reverse_cannot_take_over_pair_x(
    published: tuple[str, str], photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pair
) -> None:
    store, _ = published  # pair "look": look and look.reverse
    no_ray(monkeypatch)
    pairs = pairs_manifest(tmp_path / "p.parquet", [(str(photos / "a.png"), str(photos / "b.png"), "look.reverse")])
    one_line_error(
        cli("train", "--pairs", pairs, "--store", store, *FAST),
        "pair 'look.reverse' would publish style 'look.reverse'",
        "look.reverse@v1",
        "belongs to pair 'look'",
    )
    with pytest.raises(NameTaken):
        publish_pair(Catalog(store), "look.reverse", pair, {})
    assert Catalog(store).style_meta(Catalog(store).resolve("look.reverse"))["pair"] == "look"

    # and the other way round: x.reverse published first as a pair of its own
    other = str(tmp_path / "other")
    publish_pair(Catalog(other), "dusk.reverse", pair, {})
    pairs = pairs_manifest(tmp_path / "q.parquet", [(str(photos / "a.png"), str(photos / "b.png"), "dusk")])
    one_line_error(cli("train", "--pairs", pairs, "--store", other, *FAST), "belongs to pair 'dusk.reverse'")
    with pytest.raises(NameTaken, match="dusk.reverse@v1"):
        publish_pair(Catalog(other), "dusk", pair, {})
    assert {s.name: s.version for s in Catalog(other).list_styles()} == {"dusk.reverse": "v1", "dusk.reverse.reverse": "v1"}

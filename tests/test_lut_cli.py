"""``apply --render lut`` / ``--strength`` through the whole job, and ``styles export --cube``.
The style is a hand-made young colour-table style (tests/test_lut_render.py); photos are
scikit-image samples, small."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
import skimage.data
import torch
from click.testing import CliRunner, Result
from PIL import Image

from photostyle import StyleNet, Stylizer, get_preset, split_net
from photostyle import lut_render
from photostyle.cube import parse_cube
from pipeline.catalog import Catalog
from pipeline.cli import main
from pipeline.outputs_manifest import read_outputs
from tests.test_lut_render import young_style


def publish(store: str, name: str, base, style, meta: dict) -> None:
    catalog = Catalog(store)
    base_id = catalog.publish_base(dict(base.tensors), {"preset": "x", "arch": dataclasses.asdict(base.config)})
    catalog.publish_style(name, dict(style.tensors), meta, base_id=base_id)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("photos")
    paths = {}
    for name in ("astronaut", "coffee", "chelsea"):
        image = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        image.thumbnail((160, 160), Image.Resampling.BOX)
        paths[name] = root / f"{name}.png"
        image.save(paths[name])
    return paths


@pytest.fixture(scope="module")
def store(photos, tmp_path_factory: pytest.TempPathFactory) -> str:
    uri = str(tmp_path_factory.mktemp("store"))
    trained_on = photos["astronaut"]
    record = {"uri": str(trained_on), "sha256": hashlib.sha256(trained_on.read_bytes()).hexdigest()}
    publish(uri, "table", *young_style(), {"content": record, "style": {"uri": "/nowhere/s.png", "sha256": "0" * 64}})
    publish(uri, "table.reverse", *young_style(seed=2), {"content": record, "style": {"uri": "/nowhere/s.png", "sha256": "0" * 64}})
    base, (cells,) = split_net(StyleNet(get_preset("lite-cells").net, num_styles=1))
    publish(uri, "cells", base, cells, {"content": record})
    return uri


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).astype(int)


def test_apply_renders_colour_tables_as_luts_and_records_the_strength(ray_session, store, photos, tmp_path):
    inputs, output = photos["astronaut"].parent, tmp_path / "out"
    args = ["apply", "--json", "--style", "table", "--store", store, "--input", str(inputs), "--output", str(output)]
    first = cli(*args, "--working-side", "64")
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["processed"] == 3
    base, style = young_style()
    expected = Stylizer(base, style, render="lut", working_side=64)(Image.open(photos["coffee"]).convert("RGB"))
    assert np.array_equal(pixels(output / "coffee.png"), np.asarray(expected))  # the default for a colour table: lut
    rows = read_outputs(str(output))
    assert rows["strength"].to_pylist() == [1.0] * 3

    same = cli(*args, "--working-side", "64", "--strength", "1")
    assert json.loads(same.stdout)["skipped"] == 3  # done at this strength

    none = cli(*args, "--strength", "0")  # another strength is another result: redone
    assert (json.loads(none.stdout)["processed"], json.loads(none.stdout)["skipped"]) == (3, 0)
    assert np.array_equal(pixels(output / "coffee.png"), pixels(photos["coffee"]))
    rows = read_outputs(str(output), filter=pc.field("strength") == 0.0)
    assert rows.num_rows == 3 and set(rows["status"].to_pylist()) == {"ok"}
    assert json.loads(cli(*args, "--strength", "0").stdout)["skipped"] == 3

    half = cli(*args, "--strength", "0.5", "--render", "full")
    assert json.loads(half.stdout)["processed"] == 3
    full = np.asarray(Stylizer(base, style)(Image.open(photos["coffee"]).convert("RGB"))).astype(int)
    halfway = (full + pixels(photos["coffee"])) / 2
    assert np.abs(pixels(output / "coffee.png") - halfway).max() <= 1


@pytest.mark.parametrize("bad", ["1.5", "-0.1", "nan", "half"])
def test_bad_strengths_are_refused_by_name(store, photos, tmp_path, bad):
    out = cli("apply", "--style", "table", "--store", store, "--input", str(photos["coffee"].parent), "--output", str(tmp_path), "--strength", bad)
    assert out.exit_code == 2 and "'--strength'" in out.output, out.output
    assert not any(tmp_path.iterdir())


def test_lut_render_is_refused_for_other_heads_before_any_work(store, photos, tmp_path):
    out = cli("apply", "--style", "cells", "--store", store, "--input", str(photos["coffee"].parent), "--output", str(tmp_path / "o"), "--render", "lut")
    assert out.exit_code == 1, out.output
    assert "cells@v1: render 'lut' needs a colour-table style" in out.output and "'affine' head" in out.output
    assert not (tmp_path / "o").exists()


def test_export_fits_the_training_photo_by_default(store, photos, tmp_path):
    cube = tmp_path / "table.cube"
    out = cli("styles", "export", "table", "--store", store, "--cube", str(cube), "--size", "17", "--working-side", "64")
    assert out.exit_code == 0, out.output
    parsed = parse_cube(cube.read_text(), name=str(cube))
    assert parsed.title == "table@v1" and parsed.size == 17
    base, style = young_style()
    stylizer = Stylizer(base, style, render="lut", lut_size=17, working_side=64)
    own = stylizer.colour_table(Image.open(photos["astronaut"]).convert("RGB")).clamp(0, 1)
    assert torch.allclose(parsed.table, own, atol=1e-5)  # one photo: its own table


def test_export_fits_one_table_over_calibration_photos(store, photos, tmp_path):
    cube = tmp_path / "table.cube"
    args = ["styles", "export", "table", "--store", store, "--cube", str(cube), "--size", "9", "--working-side", "64"]
    out = cli(*args, "--calibrate", str(photos["coffee"]), "--calibrate", str(photos["chelsea"]))
    assert out.exit_code == 0, out.output
    fitted = parse_cube(cube.read_text()).table
    base, style = young_style()
    stylizer = Stylizer(base, style, render="lut", lut_size=9, working_side=64)
    tables = {n: stylizer.colour_table(Image.open(photos[n]).convert("RGB")).clamp(0, 1) for n in ("coffee", "chelsea")}
    assert not torch.allclose(tables["coffee"], tables["chelsea"], atol=1e-3)
    # Between the two photos' own tables everywhere (a weighted mean), equal to neither
    low, high = torch.minimum(*tables.values()), torch.maximum(*tables.values())
    assert bool(((fitted >= low - 1e-5) & (fitted <= high + 1e-5)).all())
    assert not torch.allclose(fitted, tables["coffee"], atol=1e-3) and not torch.allclose(fitted, tables["chelsea"], atol=1e-3)


def test_export_needs_calibration_photos_when_the_training_photo_is_gone(store, tmp_path):
    out = cli("styles", "export", "table.reverse", "--store", store, "--cube", str(tmp_path / "r.cube"))
    assert out.exit_code == 1
    assert "table.reverse@v1: its training photo /nowhere/s.png cannot be read" in out.output
    assert "give --calibrate PHOTO" in out.output and not (tmp_path / "r.cube").exists()
    cells = cli("styles", "export", "cells", "--store", store, "--cube", str(tmp_path / "c.cube"))
    assert cells.exit_code == 1 and "cells@v1: cannot be a .cube: render 'lut' needs a colour-table style" in cells.output


def test_export_refuses_a_training_photo_that_changed(store, photos, tmp_path):
    moved = tmp_path / "astronaut.png"
    moved.write_bytes(photos["astronaut"].read_bytes())
    catalog = Catalog(store)
    ref = catalog.resolve("table")
    base, style = young_style()
    publish(store, "edited", base, style, {"content": {"uri": str(moved), "sha256": "1" * 64}})
    out = cli("styles", "export", "edited", "--store", store, "--cube", str(tmp_path / "e.cube"))
    assert out.exit_code == 1 and f"its training photo {moved} has changed since training" in out.output


@pytest.mark.skipif(importlib.util.find_spec("colour") is None, reason="colour-science is not installed (the independent .cube reader)")
def test_an_exported_style_applied_by_colour_science_matches_our_lut(store, photos, tmp_path):
    import colour

    cube = tmp_path / "table.cube"
    assert cli("styles", "export", "table", "--store", store, "--cube", str(cube), "--working-side", "64").exit_code == 0
    image = Image.open(photos["coffee"]).convert("RGB")
    ours = np.asarray(lut_render.apply_table(image, parse_cube(cube.read_text()).table)).astype(float)
    theirs = colour.read_LUT(str(cube)).apply(np.asarray(image) / 255.0, interpolator=colour.algebra.table_interpolation_trilinear)
    assert np.abs(ours - theirs * 255).max() <= 1.0
    assert np.abs(ours - np.asarray(image)).mean() > 10

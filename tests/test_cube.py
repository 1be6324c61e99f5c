"""``.cube`` files: our writer and reader agree, the order is red fastest, bad files are refused by
line, and an independent reader (colour-science) applies our file as we do."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from photostyle import lut_render
from photostyle.cube import CubeError, format_cube, parse_cube


def asymmetric_table(size: int) -> torch.Tensor:
    """out = (b, r ** 2, 1 - g): every channel and every axis distinguishable."""
    rgb = lut_render.identity_table(size)
    return torch.stack([rgb[:, 2], rgb[:, 0] ** 2, 1 - rgb[:, 1]], dim=1)


def test_round_trip_and_red_fastest_order():
    table = asymmetric_table(5)
    text = format_cube(table, "look@v3")
    lines = text.splitlines()
    assert lines[:4] == ['TITLE "look@v3"', "LUT_3D_SIZE 5", "DOMAIN_MIN 0.0 0.0 0.0", "DOMAIN_MAX 1.0 1.0 1.0"]
    data = lines[4:]
    assert len(data) == 125
    # Entry 1 is red = 1/4 (red fastest): out = (b, r^2, 1 - g) = (0, 1/16, 1); entry 5: green = 1/4.
    assert data[1] == "0.000000 0.062500 1.000000" and data[5] == "0.000000 0.000000 0.750000"
    assert data[25] == "0.250000 0.000000 1.000000"  # blue = 1/4
    cube = parse_cube(text, name="look.cube")
    assert cube.title == "look@v3" and cube.size == 5
    assert torch.allclose(cube.table, table, atol=1e-6)


def test_a_hand_written_cube_is_read_in_its_order():
    text = "# two levels\nLUT_3D_SIZE 2\n\n" + "\n".join(
        f"{r} {g} {b}" for b in (0, 1) for g in (0, 1) for r in (0, 1)  # the identity, red fastest
    )
    table = parse_cube(text).table
    assert torch.equal(table, lut_render.identity_table(2))
    image = Image.fromarray(np.array([[[255, 0, 0], [10, 200, 30]]], dtype=np.uint8))
    assert np.array_equal(np.asarray(lut_render.apply_table(image, table)), np.asarray(image))


@pytest.mark.parametrize(
    "text, message",
    [
        ("0 0 0\n", "line 1: table data before LUT_3D_SIZE"),
        ("LUT_3D_SIZE 2\n0 0 0\n", "LUT_3D_SIZE 2 needs 8 table lines, found 1"),
        ("LUT_1D_SIZE 2\n", "line 1: a 1-D LUT"),
        ("LUT_3D_SIZE 99\n", "line 1: bad LUT_3D_SIZE '99'"),
        ("LUT_3D_SIZE 2\n0 0 x\n", "line 2: expected three numbers, got '0 0 x'"),
        ("LUT_3D_SIZE 2\n0 0 nan\n", "line 2: expected three numbers"),
        ("LUT_3D_SIZE 2\nDOMAIN_MAX 2 2 2\n" + "0 0 0\n" * 8, "only the domain"),
        ("LUT_3D_SIZE 2\nLUT_3D_INPUT_RANGE 0 1\n", "line 2: unknown keyword 'LUT_3D_INPUT_RANGE'"),
        ("TITLE \"x\"\n", "no LUT_3D_SIZE line"),
    ],
)
def test_bad_cubes_are_refused_by_line(text, message):
    with pytest.raises(CubeError, match=f"^bad.cube: .*{message}" if "line" in message else f"^bad.cube: {message}"):
        parse_cube(text, name="bad.cube")


@pytest.mark.skipif(
    importlib.util.find_spec("colour") is None,
    reason="colour-science is not installed (the independent .cube reader; pip install colour-science)",
)
def test_an_independent_reader_applies_our_cube_as_we_do(tmp_path):
    import colour

    table = asymmetric_table(17) * 0.8 + 0.1
    path = tmp_path / "look.cube"
    path.write_text(format_cube(table, "look"))
    image = Image.fromarray(skimage.data.coffee()).resize((200, 150))
    ours = np.asarray(lut_render.apply_table(image, table)).astype(float)
    lut = colour.read_LUT(str(path))
    assert lut.size == 17
    theirs = lut.apply(np.asarray(image) / 255.0, interpolator=colour.algebra.table_interpolation_trilinear) * 255
    assert np.abs(ours - theirs).max() <= 1.0, np.abs(ours - theirs).max()
    assert np.abs(ours - np.asarray(image)).mean() > 20  # a real look, not the identity

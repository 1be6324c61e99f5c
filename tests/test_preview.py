"""``pst-pipeline preview`` on a real ``apply`` run (shared local Ray, a lite style trained for 2
iterations, 96 px photos), and the contact-sheet renderer it draws with."""

from __future__ import annotations

import logging
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pytest
from click.testing import CliRunner, Result
from PIL import Image

from photostyle import TrainConfig, train_pair
from photostyle.imageio import decode
from pipeline import contact_sheet
from pipeline.catalog import Catalog
from pipeline.cli import main
from pipeline.commands.preview import latest_results
from pipeline.manifests import STATUS_ERROR, STATUS_OK
from pipeline.outputs_manifest import MANIFEST_DIR, read_outputs, write_outputs_part
from pipeline.published import publish_pair
from pipeline.storage import filesystem, join, read_bytes
from tests.photos import content, open_rgb, style

HEIGHT = 64


@pytest.fixture(scope="module")
def applied(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Three photos stylised by ``apply``, then one of them again by a second, forced run: its
    latest result is the newest of all, and it has two 'ok' rows."""
    pair = train_pair(
        open_rgb(content(1), 96),
        open_rgb(style(1), 96),
        TrainConfig(iterations=2, crop=32, loss_net="vgg16", loss_weights="random"),
    )
    root = tmp_path_factory.mktemp("preview")
    store = str(root / "store")
    publish_pair(Catalog(store), "look", pair, {"content": "c.png", "style": "s.png"})
    photos = root / "photos"
    (photos / "sub").mkdir(parents=True)
    for n, rel in ((2, "photo2.jpg"), (5, "sub/photo5.png"), (7, "photo7.jpg")):
        open_rgb(content(n), 96).save(photos / rel)
    output = str(root / "out")
    common = ["apply", "--style", "look", "--output", output, "--store", store, "--concurrency", "1"]
    for args in (["--input", str(photos)], ["--input", str(photos / "sub"), "--force"]):
        result = CliRunner().invoke(main, [*common, *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
    return {"output": output, "photos": str(photos), "newest": str(photos / "sub" / "photo5.png")}


def preview(*args: str) -> Result:
    return CliRunner().invoke(main, ["preview", *args], catch_exceptions=False)


def expected_sheet(results: list[dict[str, Any]], height: int = HEIGHT) -> Image.Image:
    """The sheet for these manifest rows, built from the files themselves: input | output."""
    rows = [
        [
            (decode(read_bytes(r["input_uri"])).image, Path(r["input_uri"]).name),
            (decode(read_bytes(r["output_uri"])).image, f"{r['style']}@{r['style_version']}"),
        ]
        for r in results
    ]
    return contact_sheet.render(rows, cell_height=height)


def same_pixels(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and np.array_equal(np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB")))


# ---- preview on a real run ----------------------------------------------------------------
def test_sheet_shows_each_inputs_latest_result_newest_first(applied: dict[str, str], tmp_path: Path) -> None:
    sheet_path = tmp_path / "sheets" / "sheet.png"
    result = preview("--output", applied["output"], "--to", str(sheet_path), "--height", str(HEIGHT))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{sheet_path}: 3 photo(s) from {applied['output']}\n"

    ok = read_outputs(applied["output"], filter=pc.field("status") == STATUS_OK)
    assert ok.num_rows == 4  # the newest photo was done twice
    results = latest_results(applied["output"], 12).to_pylist()
    assert [r["input_uri"] for r in results][0] == applied["newest"]
    assert sorted(r["input_uri"] for r in results) == sorted(set(ok["input_uri"].to_pylist()))
    newest_rows = [r for r in ok.to_pylist() if r["input_uri"] == applied["newest"]]
    assert results[0]["finished_at"] == max(r["finished_at"] for r in newest_rows)
    assert results[0]["output_uri"] == join(applied["output"], "photo5.png")  # the second run's result

    with Image.open(sheet_path) as sheet:
        assert sheet.format == "PNG"
        assert same_pixels(sheet, expected_sheet(results))


def test_one_row_is_the_input_then_its_stylised_result(applied: dict[str, str], tmp_path: Path) -> None:
    """Without rebuilding the sheet: with --n 1, the left cell holds the newest input and the
    right cell its result (and a result that differs visibly from its input)."""
    sheet_path = tmp_path / "one.png"
    assert preview("--output", applied["output"], "--n", "1", "--to", str(sheet_path), "--height", "96").exit_code == 0
    (newest,) = latest_results(applied["output"], 1).to_pylist()
    source, output = (
        np.asarray(contact_sheet.fit(decode(read_bytes(newest[k])).image, 96), dtype=np.float64)
        for k in ("input_uri", "output_uri")
    )
    gap, (h, w) = 8, source.shape[:2]  # render's default gap
    with Image.open(sheet_path) as sheet:
        cells = np.asarray(sheet.convert("RGB"), dtype=np.float64)
    left, right = cells[gap : gap + h, gap : gap + w], cells[gap : gap + h, 2 * gap + w : 2 * gap + 2 * w]
    assert np.abs(left - source).mean() < 1 and np.abs(right - output).mean() < 1
    assert np.abs(right - source).mean() > 5


def test_sheet_from_an_s3_manifest_to_s3(applied: dict[str, str], s3_store: str) -> None:
    local_fs, manifest = filesystem(join(applied["output"], MANIFEST_DIR))
    s3, out = filesystem(join(s3_store, "out"))
    for part in local_fs.find(manifest):
        s3.pipe_file(join(out, MANIFEST_DIR, Path(part).name), local_fs.cat_file(part))
    sheet_uri = join(s3_store, "sheets", "look.jpg")

    result = preview("--output", join(s3_store, "out"), "--to", sheet_uri, "--height", str(HEIGHT))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{sheet_uri}: 3 photo(s)")
    sheet = decode(read_bytes(sheet_uri))
    assert sheet.format == "JPEG"
    assert sheet.size == expected_sheet(latest_results(applied["output"], 12).to_pylist()).size


def manifest_row(input_uri: str, output_uri: str | None, status: str = STATUS_OK) -> dict[str, Any]:
    return {
        "input_uri": input_uri,
        "output_uri": output_uri,
        "style": "look",
        "style_version": "v1",
        "base_id": "0" * 16,
        "status": status,
        "error": None if status == STATUS_OK else "decode failed",
        "run_id": "run1",
        "finished_at": datetime(2026, 1, 1, tzinfo=timezone.utc),
    }


def test_unreadable_photos_are_left_out_with_a_warning(
    applied: dict[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (good,) = latest_results(applied["output"], 1).to_pylist()
    output = str(tmp_path / "out")
    (tmp_path / "notes.jpg").write_text("not a photo")
    shutil.copy(good["input_uri"], tmp_path / "in.jpg")
    write_outputs_part(
        output,
        [
            manifest_row(good["input_uri"], good["output_uri"]),
            manifest_row(str(tmp_path / "gone.jpg"), str(tmp_path / "gone-out.jpg")),  # input deleted
            manifest_row(str(tmp_path / "in.jpg"), str(tmp_path / "notes.jpg")),  # output not an image
        ],
    )
    sheet_path = tmp_path / "sheet.webp"
    with caplog.at_level(logging.WARNING, logger="pipeline.commands.preview"):
        result = preview("--output", output, "--to", str(sheet_path), "--height", str(HEIGHT))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{sheet_path}: 1 photo(s) from {output}, 2 left out (unreadable)\n"
    warnings = "\n".join(r.getMessage() for r in caplog.records)
    assert "gone.jpg" in warnings and "notes.jpg" in warnings
    with Image.open(sheet_path) as sheet:
        assert sheet.format == "WEBP"
        assert sheet.size == expected_sheet([good]).size


def test_nothing_to_show_is_a_clear_error(applied: dict[str, str], tmp_path: Path) -> None:
    sheet_path = tmp_path / "sheet.png"

    def fails(output: str, *message: str) -> None:
        result = preview("--output", output, "--to", str(sheet_path))
        assert result.exit_code == 1, result.output
        assert "Traceback" not in result.output and all(m in result.output for m in message), result.output
        assert not sheet_path.exists()

    fails(str(tmp_path / "never-applied"), "_manifest: no part files (nothing applied there)")

    failed = str(tmp_path / "failed")
    write_outputs_part(failed, [manifest_row(str(tmp_path / "a.jpg"), None, STATUS_ERROR)])
    fails(failed, "no 'ok' rows, every photo failed", f"pst-pipeline status --output {failed}")

    gone = str(tmp_path / "gone")
    write_outputs_part(gone, [manifest_row(str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg"))])
    fails(gone, "none of the 1 latest results could be shown", "a.jpg: no such object")


def test_bad_options_are_refused_before_any_work(tmp_path: Path) -> None:
    result = preview("--output", str(tmp_path / "anything"), "--to", str(tmp_path / "sheet.gif"))
    assert result.exit_code == 2 and "--to" in result.output and "name it .png, .jpg or .webp" in result.output
    result = preview("--output", str(tmp_path / "anything"), "--n", "0")
    assert result.exit_code == 2 and "--n" in result.output


# ---- the renderer -------------------------------------------------------------------------
RED, GREEN, BLUE = (220, 30, 30), (30, 200, 30), (30, 30, 220)


def solid(size: tuple[int, int], colour: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", size, colour)


def test_fit_scales_to_the_height_and_caps_panoramas() -> None:
    assert contact_sheet.fit(solid((100, 50), RED), 40).size == (80, 40)
    assert contact_sheet.fit(solid((10, 5), RED), 40).size == (80, 40)  # small photos scale up too
    assert contact_sheet.fit(solid((1000, 100), RED), 40).size == (80, 8)  # at most twice as wide as high
    assert contact_sheet.fit(solid((1000, 100), RED), 40, max_width=400).size == (400, 40)
    assert contact_sheet.fit(Image.new("RGBA", (20, 40)), 40).mode == "RGB"
    once = contact_sheet.fit(solid((123, 77), RED), 40)
    assert contact_sheet.fit(once, 40) is once


def test_cells_sit_in_aligned_columns() -> None:
    gap, height = 8, 40
    rows = [
        [(solid((100, 50), RED), ""), (solid((50, 100), GREEN), "")],
        [(solid((200, 100), BLUE), "")],
    ]
    sheet = np.asarray(contact_sheet.render(rows, cell_height=height, gap=gap))
    widths = [80, 20]  # column 0: max(80, 80); column 1: 20
    assert sheet.shape == (2 * height + 3 * gap, sum(widths) + 3 * gap, 3)
    assert (sheet[gap : gap + height, gap : gap + 80] == RED).all()
    assert (sheet[gap : gap + height, 2 * gap + 80 : 2 * gap + 100] == GREEN).all()
    assert (sheet[2 * gap + height : 2 * gap + 2 * height, gap : gap + 80] == BLUE).all()
    assert (sheet[2 * gap + height :, 2 * gap + 80 :] == 255).all()  # row 1 has no second cell


def test_captions_go_under_their_cell_and_never_widen_it() -> None:
    gap, height = 8, 40
    long = "a/very/long/path/to/a/photo/with/a/long/name/IMG_20260101_000000.jpg"
    bare = contact_sheet.render([[(solid((40, 40), RED), "")]], cell_height=height, gap=gap)
    captioned = contact_sheet.render([[(solid((40, 40), RED), long + "\nlook@v1")]], cell_height=height, gap=gap)
    assert captioned.width == bare.width == 40 + 2 * gap
    assert captioned.height > bare.height + 2 * 10  # two lines of text
    band = np.asarray(captioned)[gap + height :, gap : gap + 40]
    assert (band < 200).any()  # ink under the cell
    assert contact_sheet._shorten(long, contact_sheet._font(14), 40).count("…") == 1
    short = contact_sheet._shorten(long, contact_sheet._font(14), 200)
    assert short.startswith("a/") and short.endswith(".jpg") and len(short) < len(long)


def test_an_empty_sheet_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one cell"):
        contact_sheet.render([])
    with pytest.raises(ValueError, match="at least one cell"):
        contact_sheet.render([[]])

"""The outputs manifest written, read and deduplicated on S3; bad rows refused; parts whole,
retries idempotent, compaction crash-safe."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import fsspec
import pyarrow as pa
import pytest

from pipeline.manifests import ManifestError
from pipeline.outputs_manifest import (
    OUTPUTS_SCHEMA,
    compact_run,
    done_slices,
    pending_inputs,
    read_outputs,
    write_outputs_part,
)


def row(i: int, *, status: str = "ok", version: str = "v1", run_id: str = "run-1", style: str = "monet") -> dict:
    return {
        "input_uri": f"s3://in/{i}.jpg",
        "output_uri": f"s3://out/{i}.jpg" if status == "ok" else None,
        "style": style,
        "style_version": version,
        "base_id": "0123456789abcdef",
        "status": status,
        "error": "decode failed" if status == "error" else None,
        "width": 640,
        "height": 480,
        "seconds": 0.5,
        "run_id": run_id,
        "finished_at": datetime(2025, 1, 1, tzinfo=timezone.utc),
    }


def test_outputs_manifest_write_read_and_dedup_on_s3(s3_store: str) -> None:
    output = f"{s3_store}/out"
    assert read_outputs(output).schema == OUTPUTS_SCHEMA and read_outputs(output).num_rows == 0
    assert list(done_slices(output, "monet", "v1")) == []

    # run 1: 0,1 ok, 2 failed; run 2: retries 2 (ok) and redoes 0 (ok again); other versions/styles.
    first = write_outputs_part(output, [row(0), row(1), row(2, status="error")])
    retries = pa.Table.from_pylist([row(2, run_id="run-2"), row(0, run_id="run-2")], schema=OUTPUTS_SCHEMA)
    second = write_outputs_part(output, retries)
    write_outputs_part(output, [row(3, version="v2", run_id="run-3"), row(4, style="turner", run_id="run-3")])

    assert first != second and first.startswith(f"{output}/_manifest/part-run-1-") and first.endswith(".parquet")
    fs = fsspec.core.url_to_fs(output)[0]
    assert len(fs.ls(f"{output}/_manifest")) == 3

    table = read_outputs(output)
    assert table.num_rows == 7 and table.schema == OUTPUTS_SCHEMA
    done = [uri for part in done_slices(output, "monet", "v1") for uri in part.to_pylist()]
    assert sorted(done) == ["s3://in/0.jpg", "s3://in/0.jpg", "s3://in/1.jpg", "s3://in/2.jpg"]  # 0 was redone
    assert [part.to_pylist() for part in done_slices(output, "monet", "v2")] == [["s3://in/3.jpg"]]

    inputs = pa.chunked_array([[f"s3://in/{i}.jpg" for i in (5, 0, 3)], [f"s3://in/{i}.jpg" for i in (1, 4, 2, 5)]])
    expected = ["s3://in/5.jpg", "s3://in/3.jpg", "s3://in/4.jpg", "s3://in/5.jpg"]  # order and repeats kept
    assert pending_inputs(inputs, output, "monet", "v1").to_pylist() == expected
    # One done URI hashed at a time: several passes, the same answer.
    slices = list(done_slices(output, "monet", "v1", slice_rows=1))  # whole record batches: one per part here
    assert len(slices) == 2 and sum(len(part) for part in slices) == 4
    assert pending_inputs(inputs, output, "monet", "v1", slice_rows=1).to_pylist() == expected
    assert pending_inputs(inputs, f"{s3_store}/elsewhere", "monet", "v1") is inputs


@pytest.mark.parametrize(
    ("rows", "problem"),
    [
        ([], "no rows"),
        ([row(0, status="done")], "status must be 'ok' or 'error'"),
        ([{**row(0), "output_uri": None}], "status 'ok' has no output_uri"),
        ([{**row(0, status="error"), "error": None}], "status 'error' has no error message"),
        ([{**row(0), "style_version": None}], "without 'style_version'"),
        ([row(0), row(1, run_id="run-2")], "one part holds one run"),
        ([row(0, run_id="../run")], "invalid run id '../run'"),
        ([{**row(0), "width": "wide"}], "do not fit the outputs schema"),
    ],
)
def test_invalid_outputs_rows_are_refused_and_nothing_written(tmp_path: Path, rows: list, problem: str) -> None:
    output = str(tmp_path / "out")
    with pytest.raises(ManifestError, match=problem):
        write_outputs_part(output, rows)
    assert not (tmp_path / "out").exists()


def test_outputs_table_with_wrong_columns_is_refused(tmp_path: Path) -> None:
    table = pa.Table.from_pylist([row(0)], schema=OUTPUTS_SCHEMA)
    with pytest.raises(ManifestError, match="unknown column"):
        write_outputs_part(str(tmp_path), table.append_column("extra", pa.array([1])))
    with pytest.raises(ManifestError, match=r"missing column\(s\) seconds"):
        write_outputs_part(str(tmp_path), table.drop_columns(["seconds"]))


def test_local_part_files_are_whole_and_temp_files_ignored(tmp_path: Path) -> None:
    output = str(tmp_path / "out")
    write_outputs_part(output, [row(0)])
    manifest = tmp_path / "out" / "_manifest"
    (manifest / ".tmp-abc-part-run-9-x.parquet").write_bytes(b"half a parquet file")
    assert [p.name.startswith("part-run-1-") for p in manifest.iterdir() if not p.name.startswith(".")] == [True]
    assert read_outputs(output)["input_uri"].to_pylist() == ["s3://in/0.jpg"]


def test_a_retried_commit_of_the_same_photos_adds_no_rows(tmp_path: Path) -> None:
    output = str(tmp_path / "out")
    first = write_outputs_part(output, [row(0), row(1, status="error")])
    again = write_outputs_part(output, [row(1), row(0)])  # the retry: same run, same photos, any order
    assert again == first
    assert read_outputs(output)["input_uri"].to_pylist() == ["s3://in/0.jpg", "s3://in/1.jpg"]
    other_run = write_outputs_part(output, [row(0, run_id="run-2")])
    assert other_run != first and read_outputs(output).num_rows == 3


def test_compacting_a_run_merges_its_parts_and_survives_a_crash_half_way(tmp_path: Path) -> None:
    output = str(tmp_path / "out")
    manifest = tmp_path / "out" / "_manifest"
    for i in range(3):
        write_outputs_part(output, [row(i, run_id="run-1")])
    write_outputs_part(output, [row(7, run_id="run-2")])
    before = read_outputs(output).sort_by("input_uri")

    merged = compact_run(output, "run-1")
    assert merged == f"{output}/_manifest/part-run-1-compacted.parquet"
    assert sorted(p.name for p in manifest.iterdir())[0] == "part-run-1-compacted.parquet"
    assert len(list(manifest.iterdir())) == 2
    assert read_outputs(output).sort_by("input_uri").equals(before)
    assert compact_run(output, "run-1") is None and compact_run(output, "run-2") is None  # nothing to merge

    # A crash after writing the compacted part and before deleting: the old parts come back,
    # but readers ignore them, and compacting again deletes them.
    write_outputs_part(output, [row(1, run_id="run-1")])
    write_outputs_part(output, [row(2, run_id="run-1")])
    assert read_outputs(output).sort_by("input_uri").equals(before)
    assert compact_run(output, "run-1") == merged
    assert len(list(manifest.iterdir())) == 2 and read_outputs(output).sort_by("input_uri").equals(before)

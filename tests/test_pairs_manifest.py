"""Pairs manifest validation: read from disk and S3, and every bad manifest refused naming the file,
the row and the problem."""

from __future__ import annotations

from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.manifests import ManifestError
from pipeline.pairs_manifest import MAX_EXTRA_CONTENT, extra_content, read_pairs

PAIRS = {
    "content": ["s3://in/a.jpg", "s3://in/b.jpg"],
    "style": ["s3://st/1.jpg", "s3://st/2.jpg"],
    "name": ["monet", "turner"],
}


def write_pairs(path: Path, columns: dict, schema: pa.Schema | None = None) -> str:
    pq.write_table(pa.table(columns, schema=schema), path)
    return str(path)


def test_pairs_manifest_is_read_with_extra_columns_kept(tmp_path: Path) -> None:
    table = read_pairs(write_pairs(tmp_path / "pairs.parquet", {**PAIRS, "note": ["x", "y"]}))
    assert table["name"].to_pylist() == ["monet", "turner"]
    assert table["note"].to_pylist() == ["x", "y"]


def test_extra_content_is_a_list_per_row_and_null_or_absent_means_none(tmp_path: Path) -> None:
    table = read_pairs(write_pairs(tmp_path / "pairs.parquet", {**PAIRS, "extra_content": [["s3://in/c.jpg", "s3://in/d.jpg"], None]}))
    assert extra_content(table) == [["s3://in/c.jpg", "s3://in/d.jpg"], []]
    assert extra_content(read_pairs(write_pairs(tmp_path / "plain.parquet", PAIRS))) == [[], []]


def test_pairs_manifest_is_read_from_s3(s3_store: str) -> None:
    uri = f"{s3_store}/pairs.parquet"
    with fsspec.open(uri, "wb") as f:
        pq.write_table(pa.table(PAIRS), f)
    assert read_pairs(uri).num_rows == 2


@pytest.mark.parametrize(
    ("columns", "problem"),
    [
        ({"content": PAIRS["content"], "name": PAIRS["name"]}, r"missing column\(s\) style"),
        ({**PAIRS, "name": [1, 2]}, r"column 'name' must hold strings, not int64"),
        ({k: [] for k in PAIRS}, "no rows"),
        ({**PAIRS, "name": ["monet", "monet"]}, r"row 2 of 2: duplicate name 'monet' \(first at row 1\)"),
        ({**PAIRS, "name": ["monet", "Turner"]}, r"row 2 of 2: invalid style name 'Turner'"),
        ({**PAIRS, "name": ["monet", "../x"]}, r"row 2 of 2: invalid style name '../x'"),
        ({**PAIRS, "content": ["s3://in/a.jpg", ""]}, r"row 2 of 2: empty 'content'"),
        ({**PAIRS, "style": [None, "s3://st/2.jpg"]}, r"row 1 of 2: empty 'style'"),
        ({**PAIRS, "extra_content": ["s3://in/c.jpg", "s3://in/d.jpg"]}, r"column 'extra_content' must hold lists of strings, not string"),
        ({**PAIRS, "extra_content": [[1], [2]]}, r"column 'extra_content' must hold lists of strings, not list<element: int64>"),
        ({**PAIRS, "extra_content": [["s3://in/c.jpg", ""], []]}, r"row 1 of 2: an empty URI in 'extra_content'"),
        ({**PAIRS, "extra_content": [["s3://in/c.jpg"], [None]]}, r"row 2 of 2: an empty URI in 'extra_content'"),
        (
            {**PAIRS, "extra_content": [[], [f"s3://in/{i}.jpg" for i in range(MAX_EXTRA_CONTENT + 1)]]},
            rf"row 2 of 2: {MAX_EXTRA_CONTENT + 1} extra content photos, at most {MAX_EXTRA_CONTENT}",
        ),
    ],
)
def test_bad_pairs_manifest_is_refused_naming_file_row_and_problem(tmp_path: Path, columns: dict, problem: str) -> None:
    schema = pa.schema([(k, pa.string()) for k in columns]) if not any(columns.values()) else None
    uri = write_pairs(tmp_path / "pairs.parquet", columns, schema)
    with pytest.raises(ManifestError, match=problem) as info:
        read_pairs(uri)
    assert uri in str(info.value)


def test_unreadable_pairs_manifest_is_refused(tmp_path: Path) -> None:
    for content in [b"content,style,name\n", b""]:
        (tmp_path / "pairs.parquet").write_bytes(content)
        with pytest.raises(ManifestError, match="not a readable Parquet file"):
            read_pairs(str(tmp_path / "pairs.parquet"))
    with pytest.raises(ManifestError, match="no such file"):
        read_pairs(str(tmp_path / "missing.parquet"))

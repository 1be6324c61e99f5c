"""``pst-pipeline status`` on hand-written manifests: counted per distinct input, per style
version, per run."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.names import is_valid_name
from pipeline.outputs import new_run_id
from pipeline.outputs_manifest import MANIFEST_DIR, OUTPUTS_SCHEMA, read_outputs, write_outputs_part


def rows(run_id: str, style: str, version: str, results: dict[str, str], minute: int, node: str | None = "n1") -> list[dict]:
    return [
        {
            "input_uri": f"/in/{name}.jpg",
            "output_uri": f"/out/{name}.jpg" if status == "ok" else None,
            "style": style,
            "style_version": version,
            "base_id": "0123456789abcdef",
            "status": status,
            "error": None if status == "ok" else f"/in/{name}.jpg: truncated image",
            "width": 4,
            "height": 3,
            "seconds": 0.1,
            "run_id": run_id,
            "finished_at": datetime(2026, 1, 2, 3, minute, tzinfo=timezone.utc),
            "node_id": node,
            "device": "cpu" if node else None,
        }
        for name, status in results.items()
    ]


def test_status_counts_each_input_once_per_style_version_and_reports_the_last_run(tmp_path) -> None:
    out = str(tmp_path / "out")
    write_outputs_part(out, rows("20260102t0300z-a", "look", "v1", {"a": "ok", "b": "error", "c": "error"}, 1))
    write_outputs_part(out, rows("20260102t0300z-a", "look", "v1", {"d": "ok"}, 2))  # same run, another batch
    write_outputs_part(out, rows("20260102t0400z-b", "look", "v1", {"b": "ok", "c": "error"}, 9))  # retried
    write_outputs_part(out, rows("20260102t0400z-b", "look", "v1", {"a": "ok"}, 8, node="n2"))  # a duplicate ok row
    write_outputs_part(out, rows("20260102t0500z-c", "look", "v2", {"a": "error", "e": "ok"}, 30, node=None))

    result = CliRunner().invoke(main, ["status", "--output", out, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "ok": 4,  # a, b, d, e: a's v2 failure does not undo its v1 success
        "error": 1,  # c never succeeded
        "styles": [
            {"style": "look", "style_version": "v1", "ok": 3, "error": 1},
            {"style": "look", "style_version": "v2", "ok": 1, "error": 1},
        ],
        "runs": 3,
        "nodes": [  # attempts (rows) per node; none recorded for c's rows
            {"node_id": "n1", "ok": 3, "error": 3},
            {"node_id": "n2", "ok": 1, "error": 0},
            {"node_id": None, "ok": 1, "error": 1},
        ],
        "last_run": {"run_id": "20260102t0500z-c", "finished_at": "2026-01-02T03:30:00+00:00", "ok": 1, "error": 1},
        "owner": None,  # hand-written parts: no run claimed the folder
        "unreadable_parts": [],
    }

    text = CliRunner().invoke(main, ["status", "--output", out]).stdout.splitlines()
    assert text[0] == "4 ok, 1 failed, 3 run(s)"
    assert text[1:3] == ["  look@v1: 3 ok, 1 failed", "  look@v2: 1 ok, 1 failed"]
    assert text[3:6] == ["  node n1: 3 ok, 3 failed attempts", "  node n2: 1 ok, 0 failed attempts", "  node (none recorded): 1 ok, 1 failed attempts"]
    assert text[6].startswith("last run 20260102t0500z-c")


def test_run_ids_made_back_to_back_sort_in_the_order_they_were_made() -> None:
    # status takes the largest run id as the last run: a rerun started within the same second
    # as the run before it must still sort after it
    ids = [new_run_id() for _ in range(50)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(is_valid_name(i) for i in ids)


def test_a_manifest_written_before_the_node_columns_reads_as_no_node_recorded(tmp_path) -> None:
    """Parts from before ``node_id``/``device`` existed stay readable (their columns read as null)
    and count beside new ones."""
    out = tmp_path / "out"
    old = [{k: v for k, v in row.items() if k not in ("node_id", "device")} for row in rows("20260101t0000z-a", "look", "v1", {"a": "ok"}, 1)]
    old_schema = pa.schema([f for f in OUTPUTS_SCHEMA if f.name not in ("node_id", "device")])
    (out / MANIFEST_DIR).mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(old, schema=old_schema), out / MANIFEST_DIR / "part-20260101t0000z-a-0123.parquet")
    write_outputs_part(str(out), rows("20260102t0000z-b", "look", "v1", {"b": "ok"}, 2, node="n1"))

    table = read_outputs(str(out)).sort_by("input_uri")
    assert table["node_id"].to_pylist() == [None, "n1"] and table["device"].to_pylist() == [None, "cpu"]
    summary = json.loads(CliRunner().invoke(main, ["status", "--output", str(out), "--json"]).stdout)
    assert summary["ok"] == 2
    assert summary["nodes"] == [{"node_id": "n1", "ok": 1, "error": 0}, {"node_id": None, "ok": 1, "error": 0}]

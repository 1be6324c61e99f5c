"""``--json``: exactly one JSON document on stdout in every outcome, failures included, and
nothing else there, whatever a library, a native extension or a child process writes to fd 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

from pipeline.cli import main
from pipeline.commands.documents import emit, reserved_stdout


def only_document(stdout: str) -> dict:
    """stdout is exactly one JSON document (json.loads refuses anything before or after it)."""
    return json.loads(stdout)


def failed(result: Result, exit_code: int, *fragments: str) -> None:
    assert result.exit_code == exit_code, result.output
    document = only_document(result.stdout)
    assert list(document) == ["error", "exit_code"] and document["exit_code"] == exit_code
    for fragment in fragments:
        assert fragment in document["error"], (fragment, document)


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def test_every_command_prints_one_document_when_it_fails(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    failed(run("styles", "show", "nope", "--store", store, "--json"), 1, "style 'nope' not found")
    failed(run("styles", "show", "Bad/Name", "--store", store, "--json"), 2, "invalid style name")
    failed(run("styles", "list", "--store", "foo://x", "--json"), 1, "foo://x")
    failed(run("status", "--output", str(tmp_path / "nothing"), "--json"), 1, "no part files")
    failed(run("preview", "--output", str(tmp_path / "nothing"), "--to", str(tmp_path / "s.png"), "--json"), 2, "--json")
    apply = ["apply", "--store", store, "--input", str(tmp_path), "--output", str(tmp_path / "out"), "--json"]
    failed(run(*apply, "--style", "nope"), 1, "style 'nope' not found")
    failed(run(*apply, "--style", "nope", "--quality", "0"), 2, "--quality")
    failed(run(*apply), 2, "--style")
    failed(run("train", "--pairs", str(tmp_path / "none.parquet"), "--store", store, "--json"), 1, "none.parquet")
    pairs = tmp_path / "pairs.parquet"
    pq.write_table(pa.table({"content": ["/a.png"], "style": ["/b.png"], "name": ["x"]}), pairs)
    failed(run("train", "--pairs", str(pairs), "--store", store, "--mode", "style", "--json"), 2, "--base")
    failed(run("train", "--pairs", str(pairs), "--store", store, "--mode", "style", "--base", "0" * 16, "--json"), 1, "base 0000000000000000 not found")
    failed(run("eval", "--pairs", str(tmp_path / "none.parquet"), "--out", str(tmp_path / "e"), "--json"), 1, "none.parquet")
    failed(run("train", "--bogus", "--json"), 2, "--bogus")


def test_without_json_failures_stay_plain_messages(tmp_path: Path) -> None:
    result = run("styles", "show", "nope", "--store", str(tmp_path))
    assert result.exit_code == 1 and result.stdout == "" and result.stderr.startswith("Error: style 'nope'")


def test_stdout_carries_only_the_document_whatever_writes_to_fd_1(capfd: pytest.CaptureFixture[str]) -> None:
    with reserved_stdout():
        print("a stray print")
        os.write(1, b"(raylet) A worker died or was killed. 3 retries remaining\n")
        subprocess.run([sys.executable, "-c", "print('a child process')"], check=True)
        emit({"ok": 1})
        print("after the document")
    out, err = capfd.readouterr()
    assert only_document(out) == {"ok": 1}
    for noise in ("a stray print", "(raylet)", "a child process", "after the document"):
        assert noise in err
    print("stdout is back")
    assert capfd.readouterr().out == "stdout is back\n"


def test_a_real_process_prints_one_document_on_failure(tmp_path: Path) -> None:
    cli = Path(sys.executable).with_name("pst-pipeline")
    result = subprocess.run(
        [str(cli), "styles", "show", "nope", "--store", str(tmp_path), "--json"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    assert only_document(result.stdout) == {"error": f"style 'nope' not found in store {tmp_path}", "exit_code": 1}
    assert "Error: style 'nope' not found" in result.stderr

"""``pst-pipeline styles list|show`` against local and S3 stores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import s3fs
import torch
from click.testing import CliRunner

from pipeline.catalog import Catalog
from pipeline.cli import main


def publish(store: str, name: str, versions: int = 1) -> str:
    catalog = Catalog(store)
    base_id = catalog.publish_base({"conv.weight": torch.arange(108.0).reshape(4, 3, 3, 3)}, {"preset": "fast"})
    for i in range(versions):
        catalog.publish_style(name, {"in.gamma": torch.randn(4)}, {"preset": "fast", "iterations": i}, base_id=base_id)
    return base_id


def run(*args: str, env: dict | None = None):
    return CliRunner().invoke(main, ["styles", *args], env=env, catch_exceptions=False)


def test_list_and_show(store: str) -> None:
    base_id = publish(store, "monet", versions=2)
    publish(store, "turner")

    out = run("list", "--store", store)
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0].split() == ["NAME", "VERSION", "BASE", "CREATED", "SIZE"]
    assert lines[1].split()[:3] == ["monet", "v2", base_id] and lines[2].split()[:2] == ["turner", "v1"]

    listed = json.loads(run("list", "--json", "--store", store).output)
    assert [(s["name"], s["version"], s["base_id"]) for s in listed] == [
        ("monet", "v2", base_id),
        ("turner", "v1", base_id),
    ]
    assert all(s["size"] > 0 and s["created"] for s in listed)

    meta = json.loads(run("show", "monet", "--json", "--store", store).output)
    assert meta["version"] == "v2" and meta["iterations"] == 1
    assert json.loads(run("show", "monet@v1", "--json", "--store", store).output)["iterations"] == 0
    text = run("show", "monet@v1", "--store", store).output
    assert any(line.split() == ["version", "v1"] for line in text.splitlines())


def test_store_from_environment_then_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    publish(str(tmp_path / "env-store"), "monet")
    assert "monet" in run("list", env={"PST_STORE": str(tmp_path / "env-store")}).output
    publish("./pst-store", "turner")
    out = run("list", env={"PST_STORE": ""})
    assert "turner" in out.output and "monet" not in out.output


def test_empty_store(tmp_path: Path) -> None:
    out = run("list", "--store", str(tmp_path / "empty"))
    assert out.exit_code == 0 and "no styles in" in out.output
    assert json.loads(run("list", "--json", "--store", str(tmp_path / "empty")).output) == []


def test_errors_are_messages_not_tracebacks(local_store: str) -> None:
    publish(local_store, "monet")
    missing = run("show", "monet@v7", "--store", local_store)
    assert missing.exit_code == 1 and "monet@v7 not found" in missing.output and "versions: v1" in missing.output
    bad = run("show", "../etc", "--store", local_store)
    assert bad.exit_code == 2 and "invalid style name '../etc'" in bad.output
    assert "Traceback" not in missing.output + bad.output


def test_unreachable_store_is_a_message(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for store in ["foo://x", "s3://no-such-bucket-here/store"]:
        out = run("list", "--store", store)
        assert out.exit_code == 1 and out.output.startswith(f"Error: {store}: "), out.output
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    s3fs.S3FileSystem.clear_instance_cache()
    out = run("list", "--store", "s3://any-bucket/store")
    assert out.exit_code == 1 and "credentials" in out.output

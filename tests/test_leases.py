"""The lease that makes one ``apply`` run per output at a time: a newer run (a restarted driver)
revokes the old run's lease before reading what is done, and the old run's late batches then
commit nothing. Driven step by step here, without Ray; ``test_multinode`` kills a real driver."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

import pipeline.apply_stages as apply_stages
from pipeline.apply_stages import CommitSpec, DecodeSpec, read_and_decode, write_and_commit
from pipeline.leases import RunLease
from pipeline.outputs import OutputLayout, new_run_id
from pipeline.outputs_manifest import read_outputs
from pipeline.ownership import claim_output
from pipeline.storage import filesystem, join


@pytest.fixture(autouse=True)
def no_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pipeline.leases.GRACE_SECONDS", 0.0)


@pytest.fixture
def photos(tmp_path: Path) -> str:
    root = tmp_path / "in"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return str(root)


def batch_of(photos: str) -> pa.Table:
    """A decoded batch, ready to write (its pixels stand in for stylised ones)."""
    return pa.concat_tables(read_and_decode(pa.table({"input_uri": [f"{photos}/{i}.png" for i in range(3)]}), DecodeSpec()))


def spec_for(output: str, photos: str, run_id: str) -> CommitSpec:
    owner = claim_output(output, "look", "v1", run_id)  # the folder is this style's, as planning makes it
    return CommitSpec(OutputLayout(output, photos, "same"), 90, run_id, owner, "0123456789abcdef")


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    fs.invalidate_cache()
    return fs.exists(path)


def test_a_newer_run_revokes_the_lease_and_the_old_runs_late_batch_commits_nothing(store: str, photos: str) -> None:
    output = join(store, "out")
    old, new = RunLease(output, new_run_id()), RunLease(output, new_run_id())
    assert old.acquire() == [] and old.held()
    assert write_and_commit(batch_of(photos), spec_for(output, photos, old.run_id))["fatal"].to_pylist() == [None]
    committed = read_outputs(output)

    assert new.acquire() == [old.run_id]  # the restarted driver, before it reads what is done
    assert new.held() and not old.held()
    late = write_and_commit(batch_of(photos), spec_for(output, photos, old.run_id))
    assert "no longer holds its lease" in late["fatal"][0].as_py() and late["ok"].to_pylist() == [0]
    assert read_outputs(output).equals(committed)  # no second row for any photo

    new.release()
    assert not new.held()
    new.release()  # releasing twice (or a revoked lease) is harmless


def test_a_commit_slower_than_the_grace_withdraws_its_part_when_the_lease_was_revoked_meanwhile(
    store: str, photos: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old batch passed its check, then its part PUT stalled past the grace period while a
    newer run revoked the lease and planned: the part must not stay (the newer run may redo
    those photos)."""
    output = join(store, "out")
    old, new = RunLease(output, new_run_id()), RunLease(output, new_run_id())
    old.acquire()
    monkeypatch.setattr(apply_stages, "GRACE_SECONDS", 0.0)  # every commit counts as slow
    written = []

    def stalled(output_uri: str, rows: list) -> str:
        written.append(real(output_uri, rows))
        new.acquire()  # revoked while the PUT was in flight
        return written[-1]

    real = apply_stages.write_outputs_part
    monkeypatch.setattr(apply_stages, "write_outputs_part", stalled)
    result = write_and_commit(batch_of(photos), spec_for(output, photos, old.run_id))
    assert "no longer holds its lease" in result["fatal"][0].as_py()
    assert written and not exists(written[0]) and read_outputs(output).num_rows == 0


def test_a_commit_within_the_grace_keeps_its_part(store: str, photos: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The other side: a slow commit whose run still holds the lease stays committed."""
    output = join(store, "out")
    lease = RunLease(output, new_run_id())
    lease.acquire()
    monkeypatch.setattr(apply_stages, "GRACE_SECONDS", 0.0)
    result = write_and_commit(batch_of(photos), spec_for(output, photos, lease.run_id))
    assert result["fatal"].to_pylist() == [None] and result["ok"].to_pylist() == [3]
    assert read_outputs(output).num_rows == 3

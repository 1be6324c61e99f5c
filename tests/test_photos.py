"""The optional datasets: unset skips naming the variable; set but wrong fails, never skips."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.photos import PAIRS, content, dataset, style


def test_every_pair_is_two_bundled_photos_of_different_looks() -> None:
    for n in PAIRS:
        assert content(n).is_file() and style(n).is_file() and content(n) != style(n)
    assert len({content(1), style(1), content(2), style(2)}) == 4


def test_an_unset_dataset_skips_naming_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PHOTOSTYLE_DPST_DEV", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"PHOTOSTYLE_DPST_DEV is unset: point it at the dpst-dev dataset folder"):
        dataset("PHOTOSTYLE_DPST_DEV")


def test_a_dataset_set_to_a_missing_folder_fails(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PHOTOSTYLE_HIGHRES", str(tmp_path / "nope"))
    with pytest.raises(pytest.fail.Exception, match=r"PHOTOSTYLE_HIGHRES=.*nope.* is not a folder"):
        dataset("PHOTOSTYLE_HIGHRES")
    monkeypatch.setenv("PHOTOSTYLE_HIGHRES", str(tmp_path))
    assert dataset("PHOTOSTYLE_HIGHRES") == tmp_path

import logging
import urllib.error

import torch
from click.testing import CliRunner
from PIL import Image

from pipeline.catalog import Catalog
from pipeline.cli import main
from pipeline.published import load_style


def test_demo_runs_end_to_end_offline_with_a_loud_random_loss_network(ray_session, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    store, work = tmp_path / "store", tmp_path / "demo"
    caplog.set_level(logging.WARNING)
    result = CliRunner().invoke(main, ["demo", "--store", str(store), "--workdir", str(work), "--iterations", "2"])
    assert result.exit_code == 0, result.output
    assert any("RANDOM loss network" in r.getMessage() and "--vgg-weights" in r.getMessage() for r in caplog.records)
    assert "Try next:" in result.stdout and "pst-pipeline apply --style demo-coffee" in result.stdout
    meta = load_style(Catalog(str(store)), "demo-coffee").meta
    assert meta["recipe"]["loss_net"]["weights"] == "random"
    outputs = sorted(p.name for p in (work / "outputs").iterdir() if not p.name.startswith("_"))
    assert outputs == ["astronaut.jpg", "chelsea.jpg", "hubble_deep_field.jpg", "rocket.jpg"]
    for name in outputs:
        assert Image.open(work / "outputs" / name).size == Image.open(work / "photos" / name).size
    sheet = Image.open(work / "sheet.png")
    assert sheet.height > 4 * 100

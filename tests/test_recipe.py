"""The recipe: one frozen record of everything that made a style, resolved once, JSON round trip,
and a guard that no default changes without an algorithm version bump."""

import dataclasses
import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from photostyle import (
    ALGORITHM_VERSION,
    PRESETS,
    LossNetIdentity,
    LossNetUnavailable,
    Recipe,
    StyleNet,
    TrainConfig,
    get_preset,
    split_net,
    train_pair,
    train_style,
)
from photostyle.presets import NetConfig, Schedule

# sha256 of each preset's default recipe JSON (TrainConfig(preset=..., loss_net=...).resolve()),
# per algorithm version. A released version's digests never change: a default that changes
# results gets a new ALGORITHM_VERSION and a new entry here.
DEFAULT_RECIPE_DIGESTS = {
    1: {
        ("lite", "vgg19"): "dcdc076b4bc1b420bfb809057e719d0ab000c87313c11c73b2ac914ba04d0e82",
        ("lite", "vgg16"): "d7b29bd668de5d2765e2f0288f56fcfaaca49608f9e67be1191fa7de20893d2c",
        ("lite-cells", "vgg19"): "2db03efc249d2c673150bab91c2e7a24b7a21804f766bd37de45f8cd8ed1f51e",
        ("lite-cells", "vgg16"): "ab7ecee38db2b90429d9a292ed47abd3fbdc641c68daa32b2489ce77b3d1fa98",
        ("paper", "vgg19"): "ab6042b4c1236584bf42a52989ba243e3d78aaa9d896060bdf8b15a09fc939e5",
        ("paper", "vgg16"): "227aa008fc0ebad063485b2a7936580fcc4ef8dd255ae8db5fafb475f467ff6e",
    },
    2: {  # lite: the colour term on crops too (colour_crop_weight 1), 150 iterations
        ("lite", "vgg19"): "bb99a09f74f03e5d6dcc68352ac38922a7297ec5276faaa707e3ddb010b65ae8",
        ("lite", "vgg16"): "fc44341a63535514c3c4e0eda437c95366d44ab25be2549c6a7f20573d5cad89",
        ("lite-cells", "vgg19"): "7c102be769397a5661f19d263e423156addccaa12bed7fe1d6982c173a3ce752",
        ("lite-cells", "vgg16"): "5333ab01786e2bd954bc2f87cd04341f9d64674a82a01702ffd04739c68cff4c",
        ("paper", "vgg19"): "bab59c5844bfe61fb9675b1aafd33c9554792cb4b6bf3ef35e10f0a1781a7ef4",
        ("paper", "vgg16"): "d38a43b00b9716603c5dfe8263f8a8c8a937bbed1f7f49f2cb734b7d8e969c21",
    },
    3: {  # every preset: the colour term on extra content photos (extra_content_weight 3)
        ("lite", "vgg19"): "214a8cc2972ac2ecb8ee5e4ac732b7207ed931a6d416b8b2dce136c0aaf9e0fa",
        ("lite", "vgg16"): "0408bdcb819dc6f2f195f620127bf5cb8fbef0a1ebdd64bfb75c1e35ce7667e9",
        ("lite-cells", "vgg19"): "a57415c5cbfb064bc8d01de8c2bee49f333e2116200bd54f5e6dd6867269effc",
        ("lite-cells", "vgg16"): "ef844889e567db72505c083298fc1c9a59d62ac03ad1c0c50a04bfd25568cbbe",
        ("paper", "vgg19"): "403b32160eb5089d6b5ce9b4c75087c9d9a6213dffd69b7b8b0d56ffdbe00c37",
        ("paper", "vgg16"): "91fed24dc53996d9db7bb01febd5e4f011d8a8faab1ceed0aedf8480493ec269",
    },
}

PLUMBING = TrainConfig(iterations=2, crop=32, train_side=48, colour_side=32, loss_net="vgg16", loss_weights="random")


def _digests() -> dict[tuple[str, str], str]:
    return {
        (preset, loss_net): hashlib.sha256(TrainConfig(preset=preset, loss_net=loss_net).resolve().to_json().encode()).hexdigest()
        for preset in PRESETS
        for loss_net in ("vgg19", "vgg16")
    }


def test_no_default_changes_without_an_algorithm_version_bump():
    assert ALGORITHM_VERSION == max(DEFAULT_RECIPE_DIGESTS), (
        f"ALGORITHM_VERSION is {ALGORITHM_VERSION}: add its default recipe digests to DEFAULT_RECIPE_DIGESTS"
    )
    changed = {key for key, digest in _digests().items() if DEFAULT_RECIPE_DIGESTS[ALGORITHM_VERSION].get(key) != digest}
    assert not changed, (
        f"the default recipe of {sorted(changed)} changed. If results change for the same inputs, bump "
        f"ALGORITHM_VERSION in photostyle/recipe.py and add the new digests under the new version here "
        f"(never edit a released version's digests); styles trained before are then retrained by `train`. "
        f"New digests: {_digests()}"
    )


def _changed(value):
    """Another value of the same type."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value * 2 + 1
    if isinstance(value, tuple):
        return tuple(_changed(v) for v in value) if value and not isinstance(value[0], str) else value + ("relu1_1",)
    if isinstance(value, str):
        return {"rgb": "affine", "affine": "lut", "lut": "rgb"}.get(value, value + "x")
    raise AssertionError(f"no other value for {value!r}")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_default_of_a_preset_is_in_its_recipe(name, monkeypatch):
    """Architecture (every head constant), schedule and colour weight: change any one of them in
    the registry and the recipe changes, so `train` retrains (tests/test_train_cli.py)."""
    preset = PRESETS[name]
    before = TrainConfig(preset=name).resolve()
    variants = [
        *(dataclasses.replace(preset, net=dataclasses.replace(preset.net, **{f.name: _changed(getattr(preset.net, f.name))}))
          for f in dataclasses.fields(NetConfig)),
        *(dataclasses.replace(preset, schedule=dataclasses.replace(preset.schedule, **{f.name: _changed(getattr(preset.schedule, f.name))}))
          for f in dataclasses.fields(Schedule)),
        dataclasses.replace(preset, colour_weight=preset.colour_weight + 1),
        dataclasses.replace(preset, colour_crop_weight=preset.colour_crop_weight + 1),
    ]
    assert len(variants) == len(dataclasses.fields(NetConfig)) + len(dataclasses.fields(Schedule)) + 2
    for variant in variants:
        monkeypatch.setitem(PRESETS, name, variant)
        assert TrainConfig(preset=name).resolve() != before, variant
        assert TrainConfig(preset=name).resolve().to_json() != before.to_json()
    monkeypatch.setitem(PRESETS, name, preset)
    assert TrainConfig(preset=name).resolve() == before


def test_the_loss_defaults_and_the_algorithm_version_are_in_the_recipe(monkeypatch):
    before = TrainConfig().resolve()
    assert before.algorithm_version == ALGORITHM_VERSION
    monkeypatch.setattr("photostyle.recipe.ALGORITHM_VERSION", ALGORITHM_VERSION + 1)
    assert TrainConfig().resolve().algorithm_version == ALGORITHM_VERSION + 1
    for field in ("content_weight", "style_weight", "cycle_weight", "self_weight", "colour_directions", "colour_crop_weight", "extra_content_weight"):
        own = dataclasses.replace(before.loss, **{field: _changed(getattr(before.loss, field))})
        assert TrainConfig(loss=own).resolve().loss == own != before.loss


@pytest.mark.parametrize(
    "preset, field, value",
    [("lite", "lut_chroma_range", 0.5), ("lite", "lut_entry_floor", 0.0), ("lite-cells", "affine_level_floor", 0.0)],
)
def test_each_head_constant_is_the_one_the_network_uses(preset, field, value):
    """The constants that were module globals are read from the architecture: changing one changes
    the output (so recording it is not decoration)."""
    config = get_preset(preset).net
    net = StyleNet(config, num_styles=1).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2 + (1.0 if p.ndim == 2 else 0.0))
    other = StyleNet(dataclasses.replace(config, **{field: value}), num_styles=1).eval()
    other.load_state_dict(net.state_dict())
    photo = torch.rand(1, 3, 64, 64, generator=g)
    photo[..., 20:22, 20:22] = torch.tensor([0.95, 0.05, 0.05]).view(1, 3, 1, 1)  # a colour few pixels have
    with torch.no_grad():
        assert float((net(photo, 0) - other(photo, 0)).abs().amax()) > 1e-3


def _photo(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (40, 48, 3), dtype=np.uint8))


def test_recipes_round_trip_through_json(tmp_path):
    weights = tmp_path / "vgg16.pth"
    torch.save({}, weights)
    pair = split_net(StyleNet(get_preset("lite").net, num_styles=1))[0]
    recipes = [TrainConfig(preset=name).resolve() for name in PRESETS]
    recipes += [
        TrainConfig(loss_net="vgg16", loss_weights=str(weights)).resolve(),
        TrainConfig(loss_weights="random", seed=3).resolve(base=pair),
    ]
    assert recipes[-2].loss_net == LossNetIdentity("vgg16", "file", sha256=hashlib.sha256(weights.read_bytes()).hexdigest())
    assert recipes[-1].mode == "style" and recipes[-1].base == pair.digest()
    for recipe in recipes:
        assert Recipe.from_json(recipe.to_json()) == recipe
        assert Recipe.from_dict(json.loads(json.dumps(recipe.to_dict()))) == recipe


def test_a_record_that_is_not_a_recipe_is_refused():
    good = TrainConfig().resolve().to_dict()
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['colour'\]"):
        Recipe.from_dict({**good, "colour": 1})
    with pytest.raises(ValueError, match="not a photostyle recipe: KeyError: 'seed'"):
        Recipe.from_dict({k: v for k, v in good.items() if k != "seed"})
    with pytest.raises(ValueError, match="not a photostyle recipe"):
        Recipe.from_dict({**good, "base": "not-a-digest"})
    with pytest.raises(ValueError, match="not a photostyle recipe"):
        Recipe.from_dict({**good, "loss_net": {"arch": "vgg19", "weights": "file"}})  # no digest


def test_a_weights_file_must_exist_to_be_named_in_a_recipe(tmp_path):
    with pytest.raises(LossNetUnavailable, match="nope.pth.*no such file"):
        TrainConfig(loss_net="vgg16", loss_weights=str(tmp_path / "nope.pth")).resolve()


def test_training_from_a_recipe_is_training_from_its_config():
    """What a batch driver does: resolve once, train elsewhere from the recipe alone."""
    content, style = _photo(1), _photo(2)
    from_config = train_pair(content, style, PLUMBING)
    from_recipe = train_pair(content, style, PLUMBING.resolve())
    assert from_recipe.report.recipe == from_config.report.recipe == PLUMBING.resolve()
    assert all(torch.equal(from_config.base.tensors[k], from_recipe.base.tensors[k]) for k in from_config.base.tensors)


def test_a_recipe_is_only_trained_as_what_it_describes(tmp_path):
    content, style = _photo(1), _photo(2)
    pair = train_pair(content, style, PLUMBING)
    style_recipe = PLUMBING.resolve(base=pair.base)
    assert style_recipe.schedule.iterations == 2 and style_recipe.base == pair.base.digest()
    with pytest.raises(ValueError, match="cannot train a pair: use train_style"):
        train_pair(content, style, style_recipe)
    other = train_pair(content, style, dataclasses.replace(PLUMBING, seed=1)).base
    with pytest.raises(ValueError, match=f"the recipe is for base {pair.base.digest()}, not this base"):
        train_style(other, content, style, style_recipe)
    with pytest.raises(ValueError, match="with a TrainConfig, give loss_weights and device in the config"):
        train_pair(content, style, PLUMBING, device="cpu")

    weights = tmp_path / "vgg16.pth"
    torch.save({}, weights)
    file_recipe = dataclasses.replace(PLUMBING, loss_weights=str(weights)).resolve()
    with pytest.raises(ValueError, match="weights file sha256 .*: pass loss_weights=PATH"):
        train_pair(content, style, file_recipe)
    with pytest.raises(LossNetUnavailable, match="'random' are .*, not the recipe's"):
        train_pair(content, style, file_recipe, loss_weights="random")
    weights.write_bytes(b"replaced")  # the file changed since the recipe was resolved
    with pytest.raises(LossNetUnavailable, match="not the recipe's"):
        train_pair(content, style, file_recipe, loss_weights=weights)


def test_a_new_style_takes_its_bases_preset_and_refuses_another():
    base = split_net(StyleNet(get_preset("lite-cells").net, num_styles=1))[0]
    assert TrainConfig().resolve(base=base).preset == "lite-cells"
    with pytest.raises(ValueError, match="config preset 'lite' does not match the base's architecture"):
        TrainConfig(preset="lite").resolve(base=base)
    odd = split_net(StyleNet(dataclasses.replace(get_preset("lite").net, residual_blocks=1), num_styles=1))[0]
    with pytest.raises(ValueError, match="matches no preset"):
        TrainConfig().resolve(base=odd)

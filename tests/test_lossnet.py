import urllib.error

import pytest
import torch

from photostyle import LossNetIdentity, LossNetUnavailable, load_loss_network
from tests.photos import HED_VGG16_FILE, HED_VGG16_SHA256, hed_vgg16


def test_vgg16_loads_from_a_local_safetensors_file(vgg16_weights):
    net = load_loss_network("vgg16", vgg16_weights.path, layers=("relu1_2", "relu3_3"))
    assert net.identity == LossNetIdentity("vgg16", "file", sha256=vgg16_weights.sha256)
    feats = net(torch.rand(1, 3, 32, 32))
    assert set(feats) == {"relu1_2", "relu3_3"}
    assert feats["relu3_3"].shape == (1, 256, 8, 8)
    assert not any(p.requires_grad for p in net.parameters())
    assert len(net.features) == 16  # cut after relu3_3


def test_a_pass_for_some_layers_stops_at_the_deepest_of_them_with_the_same_features(vgg16_weights):
    net = load_loss_network("vgg16", vgg16_weights.path, layers=("relu1_2", "relu2_2", "relu4_3"))
    x = torch.rand(2, 3, 32, 32)
    whole = net(x)
    ran = []
    hooks = [layer.register_forward_hook(lambda m, i, o: ran.append(m)) for layer in net.features]
    part = net(x, ("relu2_2",))
    for hook in hooks:
        hook.remove()
    assert set(part) == {"relu2_2"} and torch.equal(part["relu2_2"], whole["relu2_2"])
    assert len(ran) == 9  # conv1_1 ... relu2_2, not the 14 layers after it
    with pytest.raises(ValueError, match=r"relu3_3.*not requested"):
        net(x, ("relu3_3",))


def test_torchvision_pth_is_read_with_weights_only(tmp_path, vgg16_weights):
    from safetensors.torch import load_file

    pth = tmp_path / "vgg16.pth"
    torch.save(load_file(str(vgg16_weights.path)), pth)
    a = load_loss_network("vgg16", pth, layers=("relu2_2",))
    b = load_loss_network("vgg16", vgg16_weights.path, layers=("relu2_2",))
    x = torch.rand(1, 3, 20, 20)
    assert torch.equal(a(x)["relu2_2"], b(x)["relu2_2"])


def test_random_is_seeded_and_recorded_as_random():
    a = load_loss_network("vgg19", "random", layers=("relu1_1",))
    b = load_loss_network("vgg19", "random", layers=("relu1_1",))
    assert a.identity == LossNetIdentity("vgg19", "random", seed=0)
    assert torch.equal(a.features[0].weight, b.features[0].weight)


def test_offline_imagenet_weights_fail_with_instructions(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(LossNetUnavailable, match=r"ImageNet vgg19.*--vgg-weights.*'random' only for plumbing"):
        load_loss_network("vgg19", layers=("relu1_1",))


def test_missing_or_wrong_weights_files_are_named(tmp_path, vgg16_weights):
    with pytest.raises(LossNetUnavailable, match="nope.safetensors.*no such file"):
        load_loss_network("vgg16", tmp_path / "nope.safetensors", layers=("relu1_1",))
    with pytest.raises(LossNetUnavailable, match="do not fit vgg19"):
        load_loss_network("vgg19", vgg16_weights.path, layers=("relu1_1",))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(LossNetUnavailable, match="junk.pth.*not a torchvision state dict"):
        load_loss_network("vgg16", junk, layers=("relu1_1",))


def test_unknown_arch_and_layer_are_refused():
    with pytest.raises(ValueError, match="unknown loss network 'resnet'"):
        load_loss_network("resnet", "random", layers=("relu1_1",))
    with pytest.raises(ValueError, match=r"no layer\(s\) \['relu9_9'\]"):
        load_loss_network("vgg16", "random", layers=("relu9_9",))


def test_the_trained_offline_vgg16_is_the_one_its_readme_names():
    net = load_loss_network("vgg16", hed_vgg16(), layers=("relu1_2",))
    assert net.identity == LossNetIdentity("vgg16", "file", sha256=HED_VGG16_SHA256)
    assert hed_vgg16().name == HED_VGG16_FILE

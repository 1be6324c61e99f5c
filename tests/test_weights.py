import pytest
import torch

from photostyle import Base, Style, StyleNet, build_net, get_preset, split_net
from photostyle.weights import WeightsError, dumps, loads, tensors_digest


def test_base_and_style_round_trip_exactly_through_bytes():
    torch.manual_seed(0)
    net = StyleNet(get_preset("lite").net, num_styles=2)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p))
    base, styles = split_net(net)
    base2 = Base.from_bytes(base.to_bytes({"note": "x"}))
    style2 = Style.from_bytes(styles[1].to_bytes({"name": "b"}))
    assert base2.config == base.config
    assert base2.tensors.keys() == base.tensors.keys()
    assert all(torch.equal(base.tensors[k], base2.tensors[k]) for k in base.tensors)
    assert all(torch.equal(styles[1].tensors[k], style2.tensors[k]) for k in styles[1].tensors)
    assert style2.metadata["name"] == "b"
    assert base2.digest() == base.digest()
    x = torch.rand(1, 3, 24, 36)
    with torch.no_grad():
        torch.testing.assert_close(build_net(base2, [style2])(x, 0), net.eval()(x, 1), rtol=0, atol=0)


def test_bytes_round_trip_and_digest_ignores_metadata():
    tensors = {"a": torch.arange(6, dtype=torch.float32).view(2, 3), "b": torch.zeros(0)}
    loaded, meta = loads(dumps(tensors, {"k": "v"}))
    assert meta == {"k": "v"}
    assert all(torch.equal(tensors[k], loaded[k]) for k in tensors)
    assert dumps(tensors) == dumps(dict(reversed(list(tensors.items()))))  # key order does not matter
    assert tensors_digest(tensors) == tensors_digest(loaded)
    assert tensors_digest(tensors) != tensors_digest({**tensors, "a": tensors["a"] + 1})


@pytest.mark.parametrize("data, cause", [(b"", "empty"), (b"\x00" * 3, "not a valid safetensors"), (b"garbage" * 20, "not a valid safetensors")])
def test_bad_weights_data_is_refused_naming_the_source(data, cause):
    with pytest.raises(WeightsError, match=f"thing.safetensors: {cause}"):
        loads(data, source="thing.safetensors")


def test_a_style_file_is_not_a_base():
    _, styles = split_net(StyleNet(get_preset("lite").net, num_styles=1))
    with pytest.raises(WeightsError, match="not a photostyle base"):
        Base.from_bytes(styles[0].to_bytes(), source="s.safetensors")


def test_non_string_metadata_is_refused():
    with pytest.raises(WeightsError, match="must be str"):
        dumps({"a": torch.zeros(1)}, {"n": 3})  # type: ignore[dict-item]


def test_a_style_from_another_architecture_does_not_fit():
    base, _ = split_net(StyleNet(get_preset("lite").net, num_styles=1))
    _, paper_styles = split_net(StyleNet(get_preset("paper").net, num_styles=1))
    with pytest.raises(ValueError, match="does not fit this base"):
        build_net(base, paper_styles)

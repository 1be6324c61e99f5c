import torch

from photostyle import Stylizer, TrainConfig, train_pair
from pipeline.catalog import Catalog
from pipeline.published import load_base, load_style, publish_pair
from tests.photos import content, open_rgb, style


def test_a_published_pair_loads_back_and_stylises_identically(store):
    c, s = open_rgb(content(4), 128), open_rgb(style(4), 128)
    pair = train_pair(c, s, TrainConfig(iterations=2, crop=32, train_side=64, loss_net="vgg16", loss_weights="random"))
    catalog = Catalog(store)
    base_id, refs = publish_pair(catalog, "sunset", pair, {"content": "c.png", "style": "s.png"})
    assert [r.name for r in refs] == ["sunset", "sunset.reverse"]
    loaded = load_style(catalog, "sunset")
    assert loaded.ref.base_id == base_id
    assert loaded.meta["loss_network"]["weights"] == "random"
    assert loaded.meta["content"] == "c.png" and loaded.meta["iterations"] == 2
    assert loaded.base.config == pair.base.config
    assert all(torch.equal(loaded.base.tensors[k], pair.base.tensors[k]) for k in pair.base.tensors)
    assert Stylizer(loaded.base, loaded.style)(c).tobytes() == Stylizer(pair.base, pair.style)(c).tobytes()
    reverse = load_style(catalog, "sunset.reverse@v1")
    assert all(torch.equal(reverse.style.tensors[k], pair.reverse.tensors[k]) for k in pair.reverse.tensors)
    assert load_base(catalog, base_id).digest() == pair.base.digest()

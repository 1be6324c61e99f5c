import dataclasses

import pytest
import torch

from photostyle import Recipe, StyleNet, Stylizer, TrainConfig, get_preset, preset_of, split_net, train_pair
from pipeline.catalog import Catalog, CatalogError
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
    assert loaded.meta["recipe"] == pair.report.recipe.to_dict()
    assert loaded.meta["content"] == "c.png" and Recipe.from_dict(loaded.meta["recipe"]) == pair.report.recipe
    assert loaded.base.config == pair.base.config
    assert all(torch.equal(loaded.base.tensors[k], pair.base.tensors[k]) for k in pair.base.tensors)
    assert Stylizer(loaded.base, loaded.style)(c).tobytes() == Stylizer(pair.base, pair.style)(c).tobytes()
    reverse = load_style(catalog, "sunset.reverse@v1")
    assert all(torch.equal(reverse.style.tensors[k], pair.reverse.tensors[k]) for k in pair.reverse.tensors)
    assert load_base(catalog, base_id).digest() == pair.base.digest()


# What `train` wrote into a lite-cells base's meta.json before recipes (and before brightness
# levels had a floor field): its architecture alone.
OLD_LITE_CELLS_ARCH = {
    "affine_bins": 8,
    "affine_cell": 32,
    "channels": [16, 32, 64],
    "head": "affine",
    "lut_levels": [8, 6, 6],
    "outer_kernel": 5,
    "residual_blocks": 3,
}


def test_bases_published_before_recipes_keep_loading(store):
    base, _ = split_net(StyleNet(get_preset("lite-cells").net, num_styles=1))
    catalog = Catalog(store)
    base_id = catalog.publish_base(dict(base.tensors), {"preset": "lite-cells", "arch": OLD_LITE_CELLS_ARCH})
    loaded = load_base(catalog, base_id)
    assert loaded.config == get_preset("lite-cells").net and preset_of(loaded.config) == "lite-cells"
    assert loaded.digest() == base.digest()


def test_a_base_is_rebuilt_from_its_recipe_alone(store):
    """Not from its preset's name: the recipe's own architecture (here a head constant no preset has)."""
    net = dataclasses.replace(get_preset("lite").net, lut_chroma_range=0.7)
    recipe = dataclasses.replace(TrainConfig(loss_weights="random").resolve(), net=net)
    base, _ = split_net(StyleNet(net, num_styles=1))
    catalog = Catalog(store)
    base_id = catalog.publish_base(dict(base.tensors), {"recipe": recipe.to_dict()})
    assert load_base(catalog, base_id).config == net


def test_a_base_meta_without_a_usable_architecture_is_an_error_naming_the_base(store):
    base, _ = split_net(StyleNet(get_preset("lite").net, num_styles=1))
    tensors = dict(base.tensors)
    catalog = Catalog(store)
    cases = [
        ({"preset": "lite"}, "records neither a recipe nor an architecture"),
        ({"recipe": {"preset": "lite"}}, r"holds no valid recipe \(not a photostyle recipe"),
        ({"arch": {"channels": [16, 32, 64], "wings": 2}}, r"arch.wings: unknown field"),
    ]
    for i, (meta, message) in enumerate(cases):
        tensors = {**tensors, "extra": torch.full((1,), float(i))}  # a new base id each time
        base_id = catalog.publish_base(tensors, meta)
        with pytest.raises(CatalogError, match=rf"base {base_id}: .*/bases/{base_id}/meta.json: .*{message}"):
            load_base(catalog, base_id)

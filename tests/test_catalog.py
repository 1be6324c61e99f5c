"""The style catalog on local and S3 stores: round trips, immutability, concurrency, integrity."""

from __future__ import annotations

import threading

import fsspec
import pytest
import torch

from photostyle.weights import dumps
from pipeline.catalog import (
    BaseNotFound,
    Catalog,
    CatalogError,
    ChecksumError,
    StyleNotFound,
    StyleRef,
)
from pipeline.names import InvalidName
from pipeline.storage import uri_of, write_atomic

META = {"preset": "fast", "loss_net": {"arch": "vgg16", "weights": "random"}, "iterations": 10}


def base_tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"conv1.weight": torch.randn(4, 3, 3, 3, generator=g), "conv1.bias": torch.randn(4, generator=g)}


def norm_tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + seed)
    return {"in1.gamma": torch.randn(4, generator=g), "in1.beta": torch.randn(4, generator=g)}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def with_base(store: str) -> tuple[Catalog, str]:
    catalog = Catalog(store)
    return catalog, catalog.publish_base(base_tensors(), {"preset": "fast"})


def test_publish_and_load_round_trip(store: str) -> None:
    catalog, base_id = with_base(store)
    ref = catalog.publish_style("monet", norm_tensors(), META, base_id=base_id)
    assert ref == StyleRef("monet", "v1", base_id)

    fresh = Catalog(store)  # nothing carried over in memory
    assert fresh.resolve("monet") == ref
    assert fresh.resolve("monet@v1") == ref
    tensors, meta = fresh.load_style(ref)
    assert_same(tensors, norm_tensors())
    assert {k: meta[k] for k in META} == META
    assert meta["name"] == "monet" and meta["version"] == "v1" and meta["base_id"] == base_id
    assert len(meta["sha256"]) == 64 and meta["size"] > 0
    assert meta["package_version"] and meta["created"].endswith("+00:00")
    assert fresh.style_meta(ref) == meta

    base, base_meta = fresh.load_base(base_id)
    assert_same(base, base_tensors())
    assert base_meta["preset"] == "fast" and base_meta["base_id"] == base_id


def test_publishing_the_same_base_twice_is_a_no_op(store: str) -> None:
    catalog, base_id = with_base(store)
    fs = fsspec.core.url_to_fs(store)[0]
    meta_path = f"{catalog.root}/bases/{base_id}/meta.json"
    before = fs.cat_file(meta_path)
    assert catalog.publish_base(base_tensors(), {"preset": "other"}) == base_id
    assert fs.cat_file(meta_path) == before
    assert catalog.publish_base(base_tensors(seed=1), {}) != base_id


def test_base_left_without_meta_is_completed(local_store: str) -> None:
    catalog = Catalog(local_store)
    base_id = catalog.publish_base(base_tensors(), {})
    catalog.fs.rm(f"{catalog.root}/bases/{base_id}/meta.json")
    assert not catalog.has_base(base_id)
    assert catalog.publish_base(base_tensors(), {"preset": "fast"}) == base_id
    assert_same(catalog.load_base(base_id)[0], base_tensors())


def test_versions_are_ordered_numerically(local_store: str) -> None:
    catalog, base_id = with_base(local_store)
    for i in range(11):
        catalog.publish_style("monet", norm_tensors(i), META, base_id=base_id)
    assert catalog.resolve("monet").version == "v11"
    assert_same(catalog.load_style(catalog.resolve("monet@v9"))[0], norm_tensors(8))
    assert [(s.name, s.version) for s in catalog.list_styles()] == [("monet", "v11")]


def test_concurrent_publishers_get_distinct_versions(store: str) -> None:
    catalog, base_id = with_base(store)
    n = 8
    barrier = threading.Barrier(n)
    refs: dict[int, StyleRef] = {}
    errors: list[BaseException] = []

    def publish(i: int) -> None:
        try:
            barrier.wait()
            refs[i] = Catalog(store).publish_style("monet", norm_tensors(i), {**META, "seed": i}, base_id=base_id)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=publish, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(r.version for r in refs.values()) == sorted(f"v{i}" for i in range(1, n + 1))
    for i, ref in refs.items():  # nobody's version was overwritten by another publisher
        tensors, meta = catalog.load_style(ref)
        assert_same(tensors, norm_tensors(i))
        assert meta["seed"] == i
    assert catalog.resolve("monet").version == f"v{n}"


@pytest.mark.parametrize("target", ["style", "base"])
def test_tampered_tensor_file_is_refused(store: str, target: str) -> None:
    catalog, base_id = with_base(store)
    ref = catalog.publish_style("monet", norm_tensors(), META, base_id=base_id)
    if target == "style":
        path, load = f"{catalog.root}/styles/monet/v1/norm.safetensors", lambda: catalog.load_style(ref)
    else:
        path, load = f"{catalog.root}/bases/{base_id}/weights.safetensors", lambda: catalog.load_base(base_id)
    write_atomic(catalog.fs, path, dumps(norm_tensors(seed=7)))  # valid safetensors, wrong content
    with pytest.raises(ChecksumError, match="checksum") as info:
        load()
    assert uri_of(catalog.fs, path) in str(info.value)


def test_incomplete_version_is_invisible_and_does_not_block(store: str) -> None:
    catalog, base_id = with_base(store)
    v1 = catalog.publish_style("monet", norm_tensors(1), META, base_id=base_id)
    # A publisher died after its tensors, before meta.json: v2 and a whole style left incomplete.
    write_atomic(catalog.fs, f"{catalog.root}/styles/monet/v2/norm.safetensors", dumps(norm_tensors(2)))
    write_atomic(catalog.fs, f"{catalog.root}/styles/ghost/v1/norm.safetensors", dumps(norm_tensors(3)))

    assert catalog.resolve("monet") == v1
    with pytest.raises(StyleNotFound, match=r"monet@v2 not found .*versions: v1"):
        catalog.resolve("monet@v2")
    with pytest.raises(StyleNotFound, match="ghost"):
        catalog.resolve("ghost")
    assert [(s.name, s.version) for s in catalog.list_styles()] == [("monet", "v1")]

    v3 = catalog.publish_style("monet", norm_tensors(4), META, base_id=base_id)
    assert v3.version == "v3" and catalog.resolve("monet") == v3
    assert_same(catalog.load_style(v3)[0], norm_tensors(4))


BAD_NAMES = ["../x", "/x", "x/y", "Monet", "MONET", "", "a" * 65, ".x", "-x", "_x", "a@b", "a b", "caf\u00e9", "a\n"]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_bad_names_are_refused_before_anything_is_written(local_store: str, bad: str) -> None:
    catalog, base_id = with_base(local_store)
    with pytest.raises(InvalidName) as info:
        catalog.publish_style(bad, norm_tensors(), META, base_id=base_id)
    assert repr(bad) in str(info.value)
    with pytest.raises(InvalidName):
        catalog.resolve(bad)
    assert not catalog.fs.exists(f"{catalog.root}/styles")


def test_longest_and_punctuated_names_are_accepted(local_store: str) -> None:
    catalog, base_id = with_base(local_store)
    for name in ["a" * 64, "0", "van-gogh_2.1"]:
        assert catalog.resolve(catalog.publish_style(name, norm_tensors(), META, base_id=base_id).name).version == "v1"


@pytest.mark.parametrize("spec", ["monet@", "monet@3", "monet@v0", "monet@v01", "monet@latest", "monet@v1@v2"])
def test_bad_version_specs_are_refused(local_store: str, spec: str) -> None:
    with pytest.raises(InvalidName, match="version"):
        Catalog(local_store).resolve(spec)


def test_unknown_style_and_base(local_store: str) -> None:
    catalog = Catalog(local_store)
    with pytest.raises(StyleNotFound, match=r"'monet' not found in store"):
        catalog.resolve("monet")
    with pytest.raises(BaseNotFound, match="0123456789abcdef"):
        catalog.load_base("0123456789abcdef")
    with pytest.raises(BaseNotFound, match="0123456789abcdef"):
        catalog.publish_style("monet", norm_tensors(), META, base_id="0123456789abcdef")
    with pytest.raises(InvalidName, match="base id"):
        catalog.load_base("../../etc")
    assert catalog.list_styles() == []


def test_meta_keys_owned_by_the_catalog_are_refused(local_store: str) -> None:
    catalog, base_id = with_base(local_store)
    with pytest.raises(CatalogError, match="sha256"):
        catalog.publish_style("monet", norm_tensors(), {"sha256": "0" * 64}, base_id=base_id)
    with pytest.raises(CatalogError, match="JSON"):
        catalog.publish_style("monet", norm_tensors(), {"loss": object()}, base_id=base_id)
    assert not catalog.fs.exists(f"{catalog.root}/styles")


def test_store_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PST_STORE", raising=False)
    assert Catalog().uri == "./pst-store"
    assert Catalog().root == str(tmp_path / "pst-store")
    monkeypatch.setenv("PST_STORE", "memory://env-store")
    assert Catalog().uri == "memory://env-store"
    assert Catalog("s3://explicit/store").uri == "s3://explicit/store"

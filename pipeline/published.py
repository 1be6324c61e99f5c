"""Trained photostyle objects <-> catalog entries: what ``train`` publishes and ``apply`` loads.

The catalog stores tensors and JSON; this module adds the meaning: a base's and a style's
``meta.json`` carry the recipe that made them verbatim (:class:`photostyle.Recipe`: a base is
rebuilt from its recipe alone), a style's also its provenance (photos and their sha256, losses,
time), and styles are loaded back as ``photostyle`` types. Bases published before recipes carry
only their architecture (``arch``) and keep loading.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from photostyle import Base, NetConfig, Recipe, Style, StylePair
from pipeline.catalog import Catalog, CatalogError, StyleRef

__all__ = ["REVERSE_SUFFIX", "LoadedStyle", "base_architecture", "publish_pair", "load_style", "load_base"]

REVERSE_SUFFIX = ".reverse"  # NAME is the style photo's look, NAME.reverse the content photo's


@dataclass(frozen=True)
class LoadedStyle:
    """A resolved, checksum-verified style with the base it runs on."""

    ref: StyleRef
    base: Base
    style: Style
    meta: dict[str, Any]


def publish_pair(
    catalog: Catalog, name: str, pair: StylePair, provenance: dict[str, Any]
) -> tuple[str, list[StyleRef]]:
    """Publish a pair's base (a no-op if already there) and its two styles, ``name`` and
    ``name.reverse``. ``provenance`` (photos, their sha256, mode, ...) goes into both metas,
    with the pair's recipe."""
    report = pair.report
    recipe = report.recipe.to_dict()
    if "recipe" in provenance:
        raise ValueError("the recipe is the trained pair's own; do not pass one in the provenance")
    base_id = catalog.publish_base(dict(pair.base.tensors), {"recipe": recipe})
    common = {
        **provenance,
        "recipe": recipe,
        "final_losses": report.final_losses,
        "seconds": round(report.seconds, 3),
    }
    refs = [
        catalog.publish_style(style_name, dict(style.tensors), {**common, "direction": direction}, base_id=base_id)
        for style_name, style, direction in (
            (name, pair.style, "style photo's look"),
            (name + REVERSE_SUFFIX, pair.reverse, "content photo's look"),
        )
    ]
    return base_id, refs


def load_base(catalog: Catalog, base_id: str) -> Base:
    """A base from the store, checksum verified, as a photostyle :class:`Base`."""
    tensors, meta = catalog.load_base(base_id)
    return Base(base_architecture(meta, f"base {base_id} in store {catalog.uri}"), tensors)


def base_architecture(meta: dict[str, Any], where: str) -> NetConfig:
    """The architecture a base's ``meta.json`` records: its recipe's, or, for bases published
    before recipes, its ``arch`` (fields added since take the values the code had then)."""
    try:
        if "recipe" in meta:
            return Recipe.from_dict(meta["recipe"]).net
        if "arch" in meta:
            return NetConfig.from_dict(meta["arch"])
    except (TypeError, ValueError) as exc:
        raise CatalogError(f"{where}: meta.json holds no valid architecture ({exc})") from exc
    raise CatalogError(f"{where}: meta.json records neither a recipe nor an architecture")


def load_style(catalog: Catalog, spec: str) -> LoadedStyle:
    """Resolve ``name`` or ``name@version`` and load it with its base, checksums verified."""
    ref = catalog.resolve(spec)
    tensors, meta = catalog.load_style(ref)
    return LoadedStyle(ref=ref, base=load_base(catalog, ref.base_id), style=Style(tensors), meta=meta)

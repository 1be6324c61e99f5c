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
from photostyle.architecture import ArchitectureError, check_style_tensors, config_from_record
from pipeline.catalog import META, Catalog, CatalogError, StyleNotFound, StyleRef
from pipeline.storage import join

__all__ = [
    "REVERSE_SUFFIX",
    "LoadedStyle",
    "NameTaken",
    "base_architecture",
    "check_pair_names",
    "load_base",
    "load_style",
    "pair_styles",
    "publish_pair",
    "restyled_photo",
]

REVERSE_SUFFIX = ".reverse"  # NAME is the style photo's look, NAME.reverse the content photo's


class NameTaken(CatalogError):
    """A pair whose style names belong to another pair in the store."""


@dataclass(frozen=True)
class LoadedStyle:
    """A resolved, checksum-verified style with the base it runs on."""

    ref: StyleRef
    base: Base
    style: Style
    meta: dict[str, Any]


def pair_styles(name: str) -> tuple[str, str]:
    """The two styles pair ``name`` publishes: the style photo's look, then the content photo's."""
    return name, name + REVERSE_SUFFIX


def check_pair_names(catalog: Catalog, name: str) -> None:
    """Refuse pair ``name`` if the store's latest version of either of its styles was published
    by another pair (``meta.json``'s ``pair``): a row named ``x.reverse`` would otherwise take
    over pair ``x``'s reverse style, and each retrain of ``x`` would take it back."""
    for style_name in pair_styles(name):
        try:
            ref = catalog.resolve(style_name)
        except StyleNotFound:
            continue
        owner = catalog.style_meta(ref).get("pair")
        if owner != name:
            raise NameTaken(
                f"pair {name!r} would publish style {style_name!r}, but {ref.spec} in store {catalog.uri} "
                f"belongs to pair {owner!r}; choose another name"
            )


def publish_pair(
    catalog: Catalog, name: str, pair: StylePair, provenance: dict[str, Any]
) -> tuple[str, list[StyleRef]]:
    """Publish a pair's base (a no-op if already there) and its two styles, ``name`` and
    ``name.reverse``. ``provenance`` (photos, their sha256, mode, ...) goes into both metas,
    with the pair's recipe and ``pair``: ``name``. Refused (:class:`NameTaken`) where either style
    name belongs to another pair (:func:`check_pair_names`)."""
    check_pair_names(catalog, name)
    report = pair.report
    recipe = report.recipe.to_dict()
    if "recipe" in provenance:
        raise ValueError("the recipe is the trained pair's own; do not pass one in the provenance")
    base_id = catalog.publish_base(dict(pair.base.tensors), {"recipe": recipe})
    common = {
        **provenance,
        "recipe": recipe,
        "pair": name,
        "final_losses": report.final_losses,
        "seconds": round(report.seconds, 3),
    }
    refs = [
        catalog.publish_style(style_name, dict(style.tensors), {**common, "direction": direction}, base_id=base_id)
        for style_name, style, direction in zip(
            pair_styles(name), (pair.style, pair.reverse), ("style photo's look", "content photo's look")
        )
    ]
    return base_id, refs


def load_base(catalog: Catalog, base_id: str) -> Base:
    """A base from the store, its id and checksum verified and its recorded architecture checked
    against its tensors (:mod:`photostyle.architecture`), as a photostyle :class:`Base`.
    Everything is checked here, before any worker builds the net."""
    tensors, meta = catalog.load_base(base_id)
    where = f"base {base_id}: {join(catalog.base_uri(base_id), META)}"
    try:
        return Base(base_architecture(meta, where), tensors)
    except ArchitectureError as exc:
        raise CatalogError(f"{where}: {exc}") from exc


def base_architecture(meta: dict[str, Any], where: str) -> NetConfig:
    """The architecture a base's ``meta.json`` records, bounded and type-checked
    (:func:`photostyle.architecture.config_from_record`): its recipe's, or, for bases published
    before recipes, its ``arch`` (fields added since take the values the code had then)."""
    try:
        if "recipe" in meta:
            recipe = meta["recipe"]
            # The net first, bounded field by field; then the whole record must be one this code reads.
            net = config_from_record(recipe["net"]) if isinstance(recipe, dict) and "net" in recipe else None
            checked = Recipe.from_dict(recipe)
            return net if net is not None else checked.net
        if "arch" in meta:
            return config_from_record(meta["arch"])
    except ArchitectureError as exc:
        raise CatalogError(f"{where}: {exc}") from exc
    except (TypeError, ValueError, AttributeError) as exc:
        raise CatalogError(f"{where}: meta.json holds no valid recipe ({exc})") from exc
    raise CatalogError(f"{where}: meta.json records neither a recipe nor an architecture (field 'recipe' is missing)")


def load_style(catalog: Catalog, spec: str) -> LoadedStyle:
    """Resolve ``name`` or ``name@version`` and load it with its base, checksums verified and
    its tensors checked against the base's architecture."""
    ref = catalog.resolve(spec)
    tensors, meta = catalog.load_style(ref)
    base = load_base(catalog, ref.base_id)
    try:
        check_style_tensors(base.config, tensors)
    except ArchitectureError as exc:
        raise CatalogError(f"style {ref.spec} in store {catalog.uri} does not fit base {ref.base_id}: {exc}") from exc
    return LoadedStyle(ref=ref, base=base, style=Style(tensors), meta=meta)


def restyled_photo(loaded: LoadedStyle) -> dict[str, Any] | None:
    """The recorded photo (``{"uri", "sha256"}``) this style was trained to restyle: the pair's
    content photo for ``NAME``, its style photo for ``NAME.reverse``; None when the meta records
    no such photo with a URI and checksum."""
    key = "style" if loaded.ref.name.endswith(REVERSE_SUFFIX) else "content"
    record = loaded.meta.get(key)
    if isinstance(record, dict) and isinstance(record.get("uri"), str) and isinstance(record.get("sha256"), str):
        return record
    return None

"""Trained photostyle objects <-> catalog entries: what ``train`` publishes and ``apply`` loads.

The catalog stores tensors and JSON; this module adds the meaning: a base's ``meta.json`` carries
its architecture (so ``apply`` can rebuild the net), a style's carries its provenance (photos and
their sha256, loss network, settings, losses), and styles are loaded back as ``photostyle`` types.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from photostyle import Base, NetConfig, Style, StylePair
from pipeline.catalog import Catalog, StyleRef

__all__ = ["REVERSE_SUFFIX", "LoadedStyle", "publish_pair", "load_style", "load_base", "restyled_photo"]

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
    ``name.reverse``. ``provenance`` (photos, their sha256, mode, ...) goes into both metas."""
    report = pair.report
    base_meta = {"preset": report.config["preset"], "arch": dataclasses.asdict(pair.base.config)}
    base_id = catalog.publish_base(dict(pair.base.tensors), base_meta)
    common = {
        **provenance,
        "preset": report.config["preset"],
        "loss_network": report.loss_network,
        "hyperparameters": report.config,
        "iterations": report.iterations,
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
    return Base(NetConfig.from_dict(meta["arch"]), tensors)


def load_style(catalog: Catalog, spec: str) -> LoadedStyle:
    """Resolve ``name`` or ``name@version`` and load it with its base, checksums verified."""
    ref = catalog.resolve(spec)
    tensors, meta = catalog.load_style(ref)
    return LoadedStyle(ref=ref, base=load_base(catalog, ref.base_id), style=Style(tensors), meta=meta)


def restyled_photo(loaded: LoadedStyle) -> dict[str, Any] | None:
    """The recorded photo (``{"uri", "sha256"}``) this style was trained to restyle: the pair's
    content photo for ``NAME``, its style photo for ``NAME.reverse``; None when the meta records
    no such photo with a URI and checksum."""
    key = "style" if loaded.ref.name.endswith(REVERSE_SUFFIX) else "content"
    record = loaded.meta.get(key)
    if isinstance(record, dict) and isinstance(record.get("uri"), str) and isinstance(record.get("sha256"), str):
        return record
    return None

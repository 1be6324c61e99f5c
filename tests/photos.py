"""Paths to the shared real photos and loss network (never copied into the project)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DPST = SHARED_DATA / "dpst-dev"
HIGHRES = SHARED_DATA / "highres"
HED_VGG16 = SHARED_DATA / "lossnet" / "vgg16-hed-bsds500.safetensors"
HED_VGG16_SHA256 = "6f1f280ea207f36f83273955c435b5a241d1832d54b23b16eea277b9dc5a8703"


def content(n: int) -> Path:
    return DPST / "content" / f"{n}.png"


def style(n: int) -> Path:
    return DPST / "style" / f"{n}.png"


def open_rgb(path: Path, max_side: int | None = None) -> Image.Image:
    image = Image.open(path).convert("RGB")
    if max_side and max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.BOX)
    return image

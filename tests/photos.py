"""The photos and loss networks tests use.

Every test runs on a clone alone: its photos are real photographs that ship inside scikit-image's
wheel (its ``data`` folder, not the ones it downloads on first use). The datasets that live beside
the project (the dpst-dev pairs, the 7 MP highres photo, the trained VGG16) are optional: a test
that judges quality on them takes their folder from an environment variable (``DATASETS``) and is
skipped, naming the variable, when it is unset. Set but wrong is a failure, never a skip, so a CI
run that points at the data cannot quietly run less.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import skimage.data
from PIL import Image

SAMPLES = Path(skimage.data.__file__).parent

# Content/style pairs of bundled photos, numbered from 1. Each pairs two different looks, and pairs
# 1 and 2 share no photo (tests that train two pairs need four different photos).
PAIRS = {
    1: ("rocket.jpg", "coffee.png"),
    2: ("chelsea.png", "astronaut.png"),
    3: ("astronaut.png", "rocket.jpg"),
    4: ("motorcycle_left.png", "chelsea.png"),
    5: ("coffee.png", "motorcycle_right.png"),
    6: ("motorcycle_right.png", "rocket.jpg"),
    7: ("chelsea.png", "coffee.png"),
    8: ("motorcycle_left.png", "astronaut.png"),
    9: ("coffee.png", "chelsea.png"),
    10: ("astronaut.png", "motorcycle_left.png"),
}

# Environment variable -> the dataset folder it names (the README's Testing section says where).
DATASETS = {
    "PHOTOSTYLE_DPST_DEV": "dpst-dev",
    "PHOTOSTYLE_HIGHRES": "highres",
    "PHOTOSTYLE_LOSSNET": "lossnet",
}

HED_VGG16_FILE = "vgg16-hed-bsds500.safetensors"
HED_VGG16_SHA256 = "6f1f280ea207f36f83273955c435b5a241d1832d54b23b16eea277b9dc5a8703"


def sample(name: str) -> Path:
    """A photo scikit-image ships in its wheel."""
    path = SAMPLES / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not in this scikit-image ({skimage.__version__}); tests need its bundled photos")
    return path


def content(n: int) -> Path:
    return sample(PAIRS[n][0])


def style(n: int) -> Path:
    return sample(PAIRS[n][1])


def dataset(variable: str) -> Path:
    """The folder an optional dataset's variable names; skips the test when it is unset."""
    folder = DATASETS[variable]
    value = os.environ.get(variable)
    if not value:
        pytest.skip(f"{variable} is unset: point it at the {folder} dataset folder to run this test")
    path = Path(value)
    if not path.is_dir():
        pytest.fail(f"{variable}={value!r} is not a folder (expected the {folder} dataset)")
    return path


def dpst_content(n: int) -> Path:
    return dataset("PHOTOSTYLE_DPST_DEV") / "content" / f"{n}.png"


def dpst_style(n: int) -> Path:
    return dataset("PHOTOSTYLE_DPST_DEV") / "style" / f"{n}.png"


def dpst_output(n: int) -> Path:
    return dataset("PHOTOSTYLE_DPST_DEV") / "dpst_output" / f"{n}.png"


def hed_vgg16() -> Path:
    """The trained, offline VGG16 (see the lossnet dataset's README)."""
    return dataset("PHOTOSTYLE_LOSSNET") / HED_VGG16_FILE


def open_rgb(path: Path, max_side: int | None = None) -> Image.Image:
    image = Image.open(path).convert("RGB")
    if max_side and max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.BOX)
    return image

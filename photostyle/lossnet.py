"""The frozen VGG that the losses look through.

VGG19 is the paper's loss network, VGG16 the one of Johnson et al.'s perceptual losses. Weights:

* ``"imagenet"`` (default) -- torchvision's ``IMAGENET1K_V1`` through torchvision's own loading
  (its cache, its download). Air-gapped machines get an error that says how to pass a file.
* a local path -- a state dict in torchvision's layout (``features.N.weight``), ``.safetensors``
  or torchvision's ``.pth`` (read with ``weights_only=True``; never unpickled otherwise).
* ``"random"`` -- a seeded random network for fast plumbing tests only. Never a silent fallback:
  it is used only when asked for by name, and :attr:`LossNetwork.identity` says so.

:class:`LossNetIdentity` is what a recipe records of the loss network: its architecture and which
weights (by digest for a file, so a moved or renamed file is the same network).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import nn
from torchvision import models

__all__ = ["LossNetwork", "LossNetIdentity", "LossNetUnavailable", "load_loss_network", "loss_net_identity", "ARCHES", "RANDOM"]

log = logging.getLogger(__name__)

ARCHES = ("vgg19", "vgg16")
RANDOM = "random"
_RANDOM_SEED = 0
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class LossNetUnavailable(RuntimeError):
    """The requested loss-network weights cannot be had here."""


@dataclass(frozen=True)
class LossNetIdentity:
    """Which loss network: an architecture and its weights, named so that the same weights
    always get the same identity wherever they are stored."""

    arch: str  # "vgg19" or "vgg16"
    weights: str  # "torchvision:IMAGENET1K_V1", "file" (then sha256) or "random" (then seed)
    sha256: str | None = None  # of the weights file
    seed: int | None = None  # of the random weights

    def __post_init__(self) -> None:
        if self.arch not in ARCHES:
            raise ValueError(f"unknown loss network {self.arch!r}; choose one of {', '.join(ARCHES)}")
        if (self.weights == "file") != (self.sha256 is not None) or (self.weights == RANDOM) != (self.seed is not None):
            raise ValueError(f"loss network identity {self}: file weights need a sha256, random ones a seed, others neither")


def _layer_names(features: nn.Sequential) -> list[str]:
    """torchvision index -> conventional names (conv1_1, relu1_1, ..., pool1, ...)."""
    names, block, idx = [], 1, 1
    for layer in features:
        if isinstance(layer, nn.Conv2d):
            names.append(f"conv{block}_{idx}")
        elif isinstance(layer, nn.ReLU):
            names.append(f"relu{block}_{idx}")
            idx += 1
        else:
            names.append(f"pool{block}")
            block, idx = block + 1, 1
    return names


class LossNetwork(nn.Module):
    """VGG features up to the deepest requested layer, frozen, ImageNet-normalised inputs."""

    def __init__(self, features: nn.Sequential, layers: Sequence[str], identity: LossNetIdentity) -> None:
        super().__init__()
        names = _layer_names(features)
        unknown = [n for n in layers if n not in names]
        if unknown:
            known = ", ".join(n for n in names if n.startswith("relu"))
            raise ValueError(f"{identity.arch} has no layer(s) {unknown}; known: {known}")
        wanted = set(layers)
        last = max(names.index(n) for n in layers)
        for layer in features:
            if isinstance(layer, nn.ReLU):
                layer.inplace = False
        self.features = features[: last + 1]
        self.names = names[: last + 1]
        self.wanted = wanted
        self.identity = identity
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def forward(self, image: torch.Tensor, layers: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Features of RGB images in [0, 1] at every requested layer, or only at ``layers`` (a
        subset): then the pass stops at the deepest of them, which is where its cost is."""
        wanted = self.wanted if layers is None else set(layers)
        if not wanted <= self.wanted:
            raise ValueError(f"layers {sorted(wanted - self.wanted)} were not requested when the loss network was built")
        x = (image - self.mean) / self.std
        out: dict[str, torch.Tensor] = {}
        for name, layer in zip(self.names, self.features):
            x = layer(x)
            if name in wanted:
                out[name] = x
                if len(out) == len(wanted):
                    break
        return out

    def train(self, mode: bool = True) -> "LossNetwork":  # frozen: always eval (no dropout/bn anyway)
        return super().train(False)


_TORCHVISION_CFG = {"vgg19": "E", "vgg16": "D"}
_IMAGENET = {"vgg19": models.VGG19_Weights.IMAGENET1K_V1, "vgg16": models.VGG16_Weights.IMAGENET1K_V1}


def _features_config(arch: str) -> str:
    if arch not in ARCHES:
        raise ValueError(f"unknown loss network {arch!r}; choose one of {', '.join(ARCHES)}")
    return _TORCHVISION_CFG[arch]


def _features(arch: str) -> nn.Sequential:
    """VGG's convolutional part only (no 100M-parameter classifier to build and throw away)."""
    return models.vgg.make_layers(models.vgg.cfgs[_features_config(arch)], batch_norm=False)


def _load_features(features: nn.Sequential, state: Mapping[str, torch.Tensor], source: str, arch: str) -> None:
    prefix = "features."
    wanted = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    missing = [k for k in features.state_dict() if k not in wanted]
    if missing:
        raise LossNetUnavailable(
            f"loss-network weights {source!r} do not fit {arch}: missing {prefix}{missing[0]} "
            f"(and {len(missing) - 1} more); expected torchvision's layout"
        )
    try:
        features.load_state_dict({k: wanted[k] for k in features.state_dict()})
    except RuntimeError as exc:
        raise LossNetUnavailable(f"loss-network weights {source!r} do not fit {arch}: {exc}") from exc


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise LossNetUnavailable(f"loss-network weights {str(path)!r}: no such file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise LossNetUnavailable(f"loss-network weights {str(path)!r}: not a torchvision state dict ({exc})") from exc


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def loss_net_identity(arch: str, weights: str | Path | None = "imagenet") -> LossNetIdentity:
    """The identity of loss network ``arch`` with ``weights`` (see module doc), without building
    it; a weights file is read to hash it."""
    _features_config(arch)
    if weights is None or weights == "imagenet":
        return LossNetIdentity(arch, f"torchvision:{_IMAGENET[arch].name}")
    if weights == RANDOM:
        return LossNetIdentity(arch, RANDOM, seed=_RANDOM_SEED)
    path = Path(weights)
    if not path.is_file():
        raise LossNetUnavailable(f"loss-network weights {str(path)!r}: no such file")
    return LossNetIdentity(arch, "file", sha256=_sha256(path))


def load_loss_network(
    arch: str = "vgg19",
    weights: str | Path | None = "imagenet",
    *,
    layers: Sequence[str],
    expected: LossNetIdentity | None = None,
) -> LossNetwork:
    """Build the frozen loss network ``arch`` with ``weights`` (see module doc) and ``layers``.
    With ``expected`` (a recipe's), weights that are not those (a replaced file) are refused."""
    identity = loss_net_identity(arch, weights)
    if expected is not None and identity != expected:
        raise LossNetUnavailable(f"loss-network weights {str(weights)!r} are {identity}, not the recipe's {expected}")
    features = _features(arch)
    if identity.weights == RANDOM:
        log.warning("using a RANDOM-weight %s loss network: fine for plumbing tests, meaningless for quality", arch)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_RANDOM_SEED)
            features = _features(arch)
    elif identity.weights == "file":
        path = Path(str(weights))
        _load_features(features, _read_state_dict(path), str(path), arch)
    else:
        imagenet = _IMAGENET[arch]
        try:
            state = imagenet.get_state_dict(progress=False)
        except Exception as exc:
            raise LossNetUnavailable(
                f"cannot load torchvision's ImageNet {arch} weights ({type(exc).__name__}: {exc}). "
                f"On a machine without internet, pass a state dict in torchvision's layout: "
                f"`--vgg-weights PATH_OR_URI` on the command line, or weights='/path/{arch}.safetensors' "
                f"(or torchvision's .pth) in Python; weights='random' only for plumbing tests."
            ) from exc
        _load_features(features, state, imagenet.url, arch)
    return LossNetwork(features, layers, identity)

"""photostyle: *Photo style transfer with consistency losses* (Yao, Puy, Pérez, ICIP 2019).

A pure PyTorch + Pillow library: train a pair of styles from two photos, learn new styles on a
frozen base, and stylise photos of any size. It knows nothing of Ray, object storage or Parquet;
``pipeline`` builds the batch jobs on top of it.

    >>> from photostyle import TrainConfig, train_pair, stylize
    >>> pair = train_pair(content_photo, style_photo, TrainConfig(preset="lite"))
    >>> result = stylize(pair.base, pair.style, another_photo)
"""

from photostyle.losses import LossConfig, default_loss_config
from photostyle.lossnet import LossNetUnavailable, LossNetwork, load_loss_network
from photostyle.model import Base, Style, build_net, split_net
from photostyle.network import StyleNet
from photostyle.presets import PRESETS, NetConfig, get_preset
from photostyle.stylize import Stylizer, stylize
from photostyle.training import StylePair, TrainConfig, TrainReport, train_pair, train_style

__all__ = [
    "Base",
    "LossConfig",
    "LossNetUnavailable",
    "LossNetwork",
    "NetConfig",
    "PRESETS",
    "Style",
    "StyleNet",
    "StylePair",
    "Stylizer",
    "TrainConfig",
    "TrainReport",
    "build_net",
    "default_loss_config",
    "get_preset",
    "load_loss_network",
    "split_net",
    "stylize",
    "train_pair",
    "train_style",
]

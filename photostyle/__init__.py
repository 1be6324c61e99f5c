"""photostyle: *Photo style transfer with consistency losses* (Yao, Puy, Pérez, ICIP 2019).

A pure PyTorch + Pillow library: train a pair of styles from two photos, learn new styles on a
frozen base, and stylise photos of any size. It knows nothing of Ray, object storage or Parquet;
``pipeline`` builds the batch jobs on top of it.

    >>> from photostyle import TrainConfig, train_pair, stylize
    >>> pair = train_pair(content_photo, style_photo, TrainConfig(preset="lite"))
    >>> result = stylize(pair.base, pair.style, another_photo)
    >>> pair.report.recipe  # everything that made the style: the one description of it

A :class:`Recipe` is resolved once from a :class:`TrainConfig` (:meth:`TrainConfig.resolve`);
``train_pair`` and ``train_style`` take either.
"""

from photostyle.losses import LossConfig, default_loss_config
from photostyle.lossnet import LossNetIdentity, LossNetUnavailable, LossNetwork, load_loss_network
from photostyle.model import Base, Style, build_net, split_net
from photostyle.network import StyleNet
from photostyle.presets import PRESETS, NetConfig, Preset, Schedule, get_preset, preset_of
from photostyle.recipe import ALGORITHM_VERSION, Recipe, TrainConfig
from photostyle.stylize import Stylizer, stylize
from photostyle.training import StylePair, TrainReport, train_pair, train_style

__all__ = [
    "ALGORITHM_VERSION",
    "Base",
    "LossConfig",
    "LossNetIdentity",
    "LossNetUnavailable",
    "LossNetwork",
    "NetConfig",
    "PRESETS",
    "Preset",
    "Recipe",
    "Schedule",
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
    "preset_of",
    "split_net",
    "stylize",
    "train_pair",
    "train_style",
]

"""Click options shared by several commands, defined once so their flags and help never drift."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

import math

import click

from photostyle import PRESETS
from photostyle.stylize import RENDERS
from pipeline.storage import DEFAULT_STORE, STORE_ENV, S3Timeouts
from pipeline.training_jobs import LOSS_NETS

__all__ = [
    "TRAIN_SETTINGS",
    "render_options",
    "resource_quantity",
    "s3_timeout_options",
    "shared_fs_option",
    "store_option",
    "train_options",
]

F = TypeVar("F", bound=Callable[..., object])

# No click default or envvar here: pipeline.storage.resolve_store owns the precedence
# (--store, then $PST_STORE, then ./pst-store), so library callers get the same answer.
store_option = click.option(
    "--store",
    metavar="URI",
    default=None,
    help=f"Style store: any fsspec URI (path, s3://, gs://, ...). [default: ${STORE_ENV}, else {DEFAULT_STORE}]",
)

# On a cluster of several nodes a local path is each node's own disk: refused unless declared shared.
shared_fs_option = click.option(
    "--shared-fs",
    is_flag=True,
    help="Local paths are on a file system every Ray node mounts (NFS, EFS, ...); without it, a local path "
    "is refused when the cluster has more than one node.",
)


def resource_quantity(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """Ray takes fractions of one CPU/GPU (several tasks share it) or whole numbers, not 1.5."""
    if value is not None and value > 1 and not value.is_integer():
        raise click.BadParameter(f"{value} is neither a fraction below 1 nor a whole number")
    return value


def _strength(ctx: click.Context, param: click.Parameter, value: float) -> float:
    """click's FloatRange lets NaN through (every comparison with it is false)."""
    if math.isnan(value):
        raise click.BadParameter("nan is not a number from 0 to 1")
    return value


_RENDER_OPTIONS = (
    click.option(
        "--render",
        type=click.Choice(RENDERS),
        default=None,
        show_default="lut for colour-table styles (preset lite), else guided",
        help="full: the network on every pixel; guided: the network at the working side (apply --working-side), "
        "lifted to full size by local colour maps (24x faster on a 7 MP photo; identical up to the working side); lut "
        "(colour-table styles only): the network at the working side, then the style as the 3-D LUT it is for that "
        "photo, applied to the 8-bit photo. Done photos are not redone when it changes: use --force.",
    ),
    click.option(
        "--strength",
        type=click.FloatRange(0, 1),
        default=1.0,
        show_default=True,
        callback=_strength,
        metavar="S",
        help="Blend the result toward the photo: 0 leaves it as it is, 1 is the full look. Recorded per photo: "
        "a rerun at another strength redoes the done photos.",
    ),
)


def render_options(command: F) -> F:
    """Add ``--render`` and ``--strength`` (how ``apply`` and ``eval`` render a style)."""
    for option in reversed(_RENDER_OPTIONS):
        command = option(command)
    return command


_TRAIN_OPTIONS = (
    click.option(
        "--preset",
        type=click.Choice(sorted(PRESETS)),
        show_default="lite; with train --mode style, the base's",
        help="Network preset: size and output head (README, The method library).",
    ),
    click.option(
        "--iterations",
        type=int,
        show_default="the preset's; half of it with train --mode style",
        help="Training iterations.",
    ),
    click.option("--crop", type=int, metavar="PX", show_default="the preset's", help="Random-crop side in pixels."),
    click.option(
        "--loss-net",
        type=click.Choice(LOSS_NETS),
        default="vgg19",
        show_default=True,
        help="Loss network; random: seeded random VGG19, for plumbing tests only.",
    ),
    click.option(
        "--vgg-weights",
        metavar="URI",
        show_default="torchvision's ImageNet weights",
        help="Loss-network weights in torchvision's layout, any fsspec URI (fetched once per node).",
    ),
    click.option("--seed", type=int, default=0, show_default=True, help="Seed for initialisation and crops."),
    click.option(
        "--gpus-per-task",
        type=click.FloatRange(min=0),
        callback=resource_quantity,
        show_default="1 if the cluster has GPUs, else 0",
        help="GPUs per row's task.",
    ),
    click.option(
        "--cpus-per-task",
        type=click.FloatRange(min=0, min_open=True),
        default=1.0,
        show_default=True,
        callback=resource_quantity,
        help="CPUs per row's task (also its number of torch threads).",
    ),
)

TRAIN_SETTINGS = ("preset", "iterations", "crop", "loss_net", "vgg_weights", "seed", "gpus_per_task", "cpus_per_task")
"""The parameter names :func:`train_options` adds, in order."""


def train_options(command: F) -> F:
    """Add the training flags (network, iterations, loss network, seed, per-task resources) of
    ``train`` to a command, as the keyword arguments named in :data:`TRAIN_SETTINGS`."""
    for option in reversed(_TRAIN_OPTIONS):
        command = option(command)
    return command


_DEFAULT_TIMEOUTS = S3Timeouts()
_S3_OPTIONS = (
    click.option(
        "--s3-connect-timeout",
        type=click.FloatRange(min=0, min_open=True),
        envvar=S3Timeouts.ENV["connect"],
        default=_DEFAULT_TIMEOUTS.connect,
        show_default=True,
        show_envvar=True,
        metavar="SECONDS",
        help="Seconds an S3 connection may take to open, per attempt.",
    ),
    click.option(
        "--s3-read-timeout",
        type=click.FloatRange(min=0, min_open=True),
        envvar=S3Timeouts.ENV["read"],
        default=_DEFAULT_TIMEOUTS.read,
        show_default=True,
        show_envvar=True,
        metavar="SECONDS",
        help="Seconds an S3 call may wait for its next byte, per attempt.",
    ),
    click.option(
        "--s3-attempts",
        type=click.IntRange(min=1),
        envvar=S3Timeouts.ENV["attempts"],
        default=_DEFAULT_TIMEOUTS.attempts,
        show_default=True,
        show_envvar=True,
        help="Attempts per S3 call (with backoff) before it fails.",
    ),
)


def s3_timeout_options(command: F) -> F:
    """Add the S3 timeout flags (:class:`~pipeline.storage.S3Timeouts`) to a command. They are
    put in the environment, where every filesystem of this process reads them and Ray workers
    get them (``pipeline.ray_runtime``); the command itself does not see them."""

    @functools.wraps(command)
    def with_timeouts(*args: Any, s3_connect_timeout: float, s3_read_timeout: float, s3_attempts: int, **kwargs: Any) -> Any:
        os.environ.update(S3Timeouts(s3_connect_timeout, s3_read_timeout, s3_attempts).env())
        return command(*args, **kwargs)

    for option in reversed(_S3_OPTIONS):
        with_timeouts = option(with_timeouts)
    return with_timeouts  # type: ignore[return-value]

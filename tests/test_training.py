import dataclasses

import pytest
import torch

from photostyle import LossNetIdentity, StylePair, Stylizer, TrainConfig, default_loss_config, train_pair, train_style
from photostyle.model import identity_style
from tests.photos import HED_VGG16_SHA256, content, open_rgb, style

PLUMBING = TrainConfig(preset="lite", iterations=3, crop=32, train_side=64, loss_net="vgg16", loss_weights="random", log_every=1)


@pytest.fixture(scope="module")
def photos():
    return open_rgb(content(2), 256), open_rgb(style(2), 256)


@pytest.fixture(scope="module")
def pair(photos) -> StylePair:
    return train_pair(*photos, PLUMBING)


def test_train_pair_returns_a_base_two_styles_and_a_report(pair):
    fresh = identity_style(pair.base.config)
    for look in (pair.style, pair.reverse):
        assert look.tensors.keys() == fresh.tensors.keys()
        assert any(not torch.equal(look.tensors[k], fresh.tensors[k]) for k in fresh.tensors)
    assert any(not torch.equal(pair.style.tensors[k], pair.reverse.tensors[k]) for k in fresh.tensors)
    report = pair.report
    assert report.iterations == 3 and len(report.history) == 3
    assert set(report.final_losses) == {"total", "content", "style", "colour", "cycle", "self"}
    assert report.recipe.loss_net == LossNetIdentity("vgg16", "random", seed=0)
    assert report.recipe == PLUMBING.resolve()
    assert report.recipe.schedule.crop == 32 and report.recipe.preset == "lite"
    assert report.seconds > 0


def test_seeded_training_is_reproducible_on_cpu(photos, pair):
    again = train_pair(*photos, PLUMBING)
    assert all(torch.equal(pair.base.tensors[k], again.base.tensors[k]) for k in pair.base.tensors)
    other = train_pair(*photos, dataclasses.replace(PLUMBING, seed=1))
    assert any(not torch.equal(pair.base.tensors[k], other.base.tensors[k]) for k in pair.base.tensors)


def test_train_style_trains_norms_only_and_leaves_the_base_bit_identical(photos, pair):
    before = {k: v.clone() for k, v in pair.base.tensors.items()}
    new = train_style(pair.base, *reversed(photos), PLUMBING)
    assert new.base is pair.base
    assert all(torch.equal(before[k], pair.base.tensors[k]) for k in before)
    fresh = identity_style(pair.base.config)
    assert any(not torch.equal(new.style.tensors[k], fresh.tensors[k]) for k in fresh.tensors)
    Stylizer(new.base, new.style)(photos[0])  # the new style runs on the old base


def test_train_style_defaults_to_half_the_iterations(pair):
    cfg = TrainConfig(preset="lite", loss_weights="random")
    assert cfg.resolve(base=pair.base).schedule.iterations == cfg.resolve().schedule.iterations // 2


def test_each_preset_trains_its_colour_term_at_the_weight_it_was_tuned_with():
    assert TrainConfig(preset="lite", loss_net="vgg16").resolve().loss.colour_weight == 30.0
    assert TrainConfig(preset="lite-cells", loss_net="vgg16").resolve().loss.colour_weight == 10.0
    own = dataclasses.replace(default_loss_config("vgg16"), colour_weight=5.0)
    assert TrainConfig(preset="lite", loss_net="vgg16", loss=own).resolve().loss == own


def test_lite_asks_its_look_of_crops_of_the_photos_too_and_the_crops_change_what_it_learns(photos, pair):
    assert PLUMBING.resolve().loss.colour_crop_weight == 1.0
    assert TrainConfig(preset="lite-cells").resolve().loss.colour_crop_weight == 0.0
    without = dataclasses.replace(PLUMBING.resolve().loss, colour_crop_weight=0.0)
    other = train_pair(*photos, dataclasses.replace(PLUMBING, loss=without))
    assert pair.report.history[0]["colour"] > other.report.history[0]["colour"]  # the same start, one term more
    assert not torch.equal(pair.style.tensors["head.photo_norm.gamma"], other.style.tensors["head.photo_norm.gamma"])
    for sides in ((0.0, 0.5), (0.6, 0.5), (0.5, 1.5)):
        with pytest.raises(ValueError, match="colour crops need"):
            dataclasses.replace(without, colour_crop_sides=sides)
    with pytest.raises(ValueError, match="colour crops need"):
        dataclasses.replace(without, colour_crop_weight=-1.0)


def test_extra_content_photos_are_asked_the_look_too(photos, pair):
    extras = [open_rgb(content(n), 128) for n in (4, 5)]
    with_extras = train_pair(*photos, PLUMBING, extra_content=extras)
    assert with_extras.report.history[0]["colour"] > pair.report.history[0]["colour"]  # the same start, one term more
    assert not torch.equal(with_extras.style.tensors["head.photo_norm.gamma"], pair.style.tensors["head.photo_norm.gamma"])
    unweighted = dataclasses.replace(PLUMBING.resolve().loss, extra_content_weight=0.0)
    silent = train_pair(*photos, dataclasses.replace(PLUMBING, loss=unweighted), extra_content=extras)
    assert silent.report.history == pair.report.history  # the photos reach training through that term alone
    with pytest.raises(ValueError, match="extra_content_weight must be >= 0"):
        dataclasses.replace(unweighted, extra_content_weight=-1.0)


def test_bad_settings_are_refused(photos):
    with pytest.raises(ValueError, match="unknown preset 'big'"):
        train_pair(*photos, TrainConfig(preset="big"))
    with pytest.raises(ValueError, match="iterations must be >= 1"):
        train_pair(*photos, dataclasses.replace(PLUMBING, iterations=0))
    with pytest.raises(ValueError, match="crop must be >= 16"):
        train_pair(*photos, dataclasses.replace(PLUMBING, crop=8))


def test_losses_fall_on_a_real_pair_with_the_trained_vgg16(hed_pair):
    history = hed_pair.report.history
    assert hed_pair.report.recipe.loss_net == LossNetIdentity("vgg16", "file", sha256=HED_VGG16_SHA256)
    first = sum(h["total"] for h in history[:2]) / 2
    last = sum(h["total"] for h in history[-2:]) / 2
    assert last < 0.7 * first, [round(h["total"], 3) for h in history]
    assert history[-1]["style"] < history[0]["style"]


def test_progress_is_called_once_per_iteration_and_leaves_the_result_alone(photos, pair):
    calls: list[tuple[int, int]] = []
    reported = train_pair(*photos, PLUMBING, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert all(torch.equal(pair.base.tensors[k], reported.base.tensors[k]) for k in pair.base.tensors)
    calls.clear()
    train_style(pair.base, *photos, PLUMBING, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]

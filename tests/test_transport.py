"""The covariance global step (photostyle.transport): what it does to a photo's colours, its
gradient, and how it takes part in a style network."""

import dataclasses

import pytest
import torch

from photostyle import NetConfig, StyleNet
from photostyle.architecture import ArchitectureError, config_from_record
from photostyle.norm import ConditionalInstanceNorm2d, shared_statistics
from photostyle.transport import PHOTO_COVARIANCE_FLOOR, ColourTransportNorm, colour_moments, symmetric_sqrt, transport_matrix

STYLE = torch.tensor([0])


def _photo(seed: int, mix: list[list[float]], shape: tuple[int, int] = (40, 56)) -> torch.Tensor:
    """Random colours with correlated channels (``mix`` 3 x 3), within [0, 1]."""
    noise = torch.rand(1, 3, *shape, generator=torch.Generator().manual_seed(seed))
    return (torch.einsum("ij,bjhw->bihw", torch.tensor(mix), noise) + 0.1).clamp(0, 1)


WARM = [[0.6, 0.2, 0.0], [0.3, 0.3, 0.0], [0.0, 0.1, 0.2]]
COOL = [[0.2, 0.0, 0.1], [0.0, 0.4, 0.3], [0.1, 0.2, 0.6]]


def _covariance(x: torch.Tensor) -> torch.Tensor:
    """The colour covariance itself, without the floor :func:`colour_moments` adds."""
    return colour_moments(x)[1] - PHOTO_COVARIANCE_FLOOR * torch.eye(3, dtype=torch.float64)


def test_a_photo_gets_the_look_photo_s_colour_mean_and_covariance():
    photo, look = _photo(0, COOL), _photo(1, WARM, (30, 30))
    norm = ColourTransportNorm(num_styles=1)
    norm.start_at(0, look)
    out = norm(photo, STYLE)
    assert torch.allclose(colour_moments(out)[0], colour_moments(look)[0], atol=1e-5)
    # Exactly, up to the floor both covariances get (what keeps flat photos from exploding):
    # T P T = S - floor T T, for the transport T from the floored photo covariance P + floor to the
    # look's floored S.
    transport = transport_matrix(colour_moments(photo)[1], colour_moments(look)[1])
    assert torch.allclose(
        _covariance(out) + PHOTO_COVARIANCE_FLOOR * transport @ transport, colour_moments(look)[1], atol=1e-6
    )
    assert torch.allclose(_covariance(out), _covariance(look), atol=0.001)
    off_diagonal = _covariance(look)[0] - torch.diag(torch.diag(_covariance(look)[0]))
    assert off_diagonal.abs().max() > 20 * PHOTO_COVARIANCE_FLOOR  # the correlations were matched, not just the spreads


def test_with_uncorrelated_channels_it_is_the_per_channel_transfer():
    photo = _photo(2, [[0.5, 0, 0], [0, 0.2, 0], [0, 0, 0.7]], (64, 64))
    look = _photo(3, [[0.3, 0, 0], [0, 0.6, 0], [0, 0, 0.1]], (64, 64))
    # Make both exactly uncorrelated: shuffle each channel's pixels independently.
    for x, seed in ((photo, 4), (look, 5)):
        g = torch.Generator().manual_seed(seed)
        for c in range(3):
            x[0, c] = x[0, c].flatten()[torch.randperm(x[0, c].numel(), generator=g)].view(x.shape[-2:])
    transport, channels = ColourTransportNorm(num_styles=1), ConditionalInstanceNorm2d(3, num_styles=1)
    transport.start_at(0, look)
    channels.start_at(0, look)
    assert torch.allclose(transport(photo, STYLE), channels(photo, STYLE), atol=0.02)


def test_a_look_started_at_a_photo_leaves_that_photo_almost_as_it_is():
    photo = _photo(6, WARM)
    norm = ColourTransportNorm(num_styles=1)
    norm.start_at(0, photo)
    assert (norm(photo, STYLE) - photo).abs().max() < 0.01


def test_symmetric_sqrt_has_the_exact_gradient_and_a_finite_one_where_eigenvalues_meet():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4, 3, 3, generator=g, dtype=torch.float64)
    a = (a @ a.transpose(1, 2) + 0.1 * torch.eye(3, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: symmetric_sqrt((x + x.transpose(1, 2)) / 2), (a,))

    # Through eigh the gradient at a repeated eigenvalue is 0/0; the square root's own is 1 / (2 sqrt(l)).
    grey = (0.04 * torch.eye(3, dtype=torch.float64)).requires_grad_()
    symmetric_sqrt(grey).trace().backward()
    assert torch.allclose(grey.grad, torch.eye(3, dtype=torch.float64) / (2 * 0.2))


def test_training_the_look_moves_its_covariance_without_nans_on_a_grey_photo():
    grey = torch.full((1, 3, 32, 32), 0.5) + 0.001 * torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    norm = ColourTransportNorm(num_styles=1)
    norm.start_at(0, grey)  # a look with equal, tiny spreads: eigenvalues meet
    loss = (norm(_photo(8, WARM), STYLE) - 0.3).square().mean()
    loss.backward()
    assert torch.isfinite(norm.gamma.grad).all() and norm.gamma.grad.abs().sum() > 0


def test_tiles_replaying_the_whole_photo_s_statistics_match_the_whole_photo():
    photo, look = _photo(9, COOL, (48, 64)), _photo(10, WARM)
    norm = ColourTransportNorm(num_styles=1)
    norm.start_at(0, look)
    whole = norm(photo, STYLE)
    with shared_statistics(norm) as recorded:
        norm(photo, STYLE)
    with shared_statistics(norm, recorded):
        left = norm(photo[..., :20], STYLE)
    assert torch.allclose(left, whole[..., :20], atol=1e-6)
    assert not torch.allclose(norm(photo[..., :20], STYLE), whole[..., :20], atol=1e-3)  # alone it would differ


def test_the_lut_head_with_the_covariance_step_carries_its_style_tensors():
    config = dataclasses.replace(NetConfig(channels=(8, 8, 8), residual_blocks=1, outer_kernel=3, head="lut"), global_step="covariance")
    net = StyleNet(config, num_styles=2)
    assert isinstance(net.head.photo_norm, ColourTransportNorm)
    assert net.head.photo_norm.gamma.shape == (2, 3, 3)
    out = net(torch.rand(1, 3, 20, 24), 1)
    assert out.shape == (1, 3, 20, 24) and torch.isfinite(out).all()


def test_recorded_architectures_name_a_known_global_step_on_a_head_that_has_one():
    lut = {"channels": [16, 32, 64], "head": "lut", "outer_kernel": 5, "residual_blocks": 3}
    assert config_from_record(lut).global_step == "channels"  # recorded before the field existed
    assert config_from_record({**lut, "global_step": "covariance"}).global_step == "covariance"
    with pytest.raises(ArchitectureError, match="arch.global_step: 'lab' is not one of channels, covariance"):
        config_from_record({**lut, "global_step": "lab"})
    with pytest.raises(ArchitectureError, match="arch.global_step: 'covariance' needs the affine or lut head"):
        config_from_record({**lut, "head": "rgb", "global_step": "covariance"})
    with pytest.raises(ArchitectureError, match="arch.global_step: expected a str"):
        config_from_record({**lut, "global_step": 1})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_under_bf16_autocast_it_matches_cpu_in_float32():
    photo, look = _photo(11, COOL, (96, 128)), _photo(12, WARM)
    norm = ColourTransportNorm(num_styles=1)
    norm.start_at(0, look)
    want = norm(photo, STYLE)
    norm = norm.cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        got = norm(photo.cuda(), STYLE.cuda())
    assert got.dtype == torch.float32
    assert torch.allclose(got.cpu(), want, atol=1e-4)


def test_a_look_started_at_a_black_and_white_photo_can_still_learn_colour():
    """R = G = B gives a covariance of rank one; a factor of rank one keeps that rank under any
    gradient, so the look must start from the floored covariance, which has full rank."""
    grey = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(13)).repeat(1, 3, 1, 1)
    colourful, photo = _photo(14, WARM), _photo(15, COOL)
    norm = ColourTransportNorm(num_styles=1)
    norm.start_at(0, grey)
    optimiser = torch.optim.Adam(norm.parameters(), lr=1e-2)
    for _ in range(300):
        optimiser.zero_grad()
        (_covariance(norm(photo, STYLE)) - _covariance(colourful)).square().sum().backward()
        optimiser.step()
    learnt = torch.linalg.eigvalsh(_covariance(norm(photo, STYLE)))[0, 0]
    wanted = torch.linalg.eigvalsh(_covariance(colourful))[0, 0]
    assert learnt > 0.25 * wanted  # without the floor: about 1e-11, for ever

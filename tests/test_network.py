import pytest
import torch

from photostyle import PRESETS, NetConfig, StyleNet, get_preset
from photostyle.model import split_net
from photostyle.lut import edge_aware_mean
from photostyle.network import AffineHead

FLOOR = NetConfig().affine_level_floor  # every level's share of its whole cell, as the presets use it


def _randomised(net: StyleNet, seed: int = 0) -> StyleNet:
    """Every parameter random (a fresh affine head is the identity, which would hide bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2 + (1.0 if p.ndim == 2 else 0.0))
    return net


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("size", [(17, 31), (64, 97), (5, 7), (128, 128), (3, 200)])
def test_output_size_equals_input_at_odd_sizes(preset, size):
    net = StyleNet(get_preset(preset).net, num_styles=2).eval()
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        y = net(x, torch.tensor([0, 1]))
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_mixed_style_batch_equals_per_style_calls(preset):
    net = _randomised(StyleNet(get_preset(preset).net, num_styles=3)).eval()
    x = torch.rand(4, 3, 40, 52)
    styles = torch.tensor([2, 0, 1, 2])
    with torch.no_grad():
        mixed = net(x, styles)
        single = torch.cat([net(x[i : i + 1], int(s)) for i, s in enumerate(styles)])
        assert not torch.allclose(net(x[:1], 0), net(x[:1], 1))  # the styles do differ
    torch.testing.assert_close(mixed, single, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_a_style_is_under_one_percent_of_the_base(preset):
    base, styles = split_net(StyleNet(get_preset(preset).net, num_styles=2))
    assert len(styles) == 2
    assert styles[0].num_parameters < 0.01 * base.num_parameters
    assert all(name.endswith((".gamma", ".beta")) for name in styles[0].tensors)
    assert not any(name.endswith((".gamma", ".beta")) for name in base.tensors)


def test_unknown_preset_is_refused_by_name():
    with pytest.raises(ValueError, match="'huge'.*lite.*paper"):
        get_preset("huge")


def test_style_index_out_of_range_is_refused():
    net = StyleNet(get_preset("lite").net, num_styles=2)
    with pytest.raises(ValueError, match="out of range"):
        net(torch.rand(1, 3, 16, 16), 2)
    with pytest.raises(ValueError, match="batch size"):
        net(torch.rand(2, 3, 16, 16), torch.tensor([0, 1, 0]))


def _roughness(x: torch.Tensor) -> float:
    x = x.detach()
    return float((x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean())


def test_affine_head_starts_as_a_global_transfer_and_its_maps_are_smooth_over_cells():
    photo = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(2))
    features = torch.rand(1, 8, 48, 48, generator=torch.Generator().manual_seed(0))
    style = torch.tensor([0])
    fine, smooth = AffineHead(8, 3, num_styles=1, cell=1, bins=1, level_floor=FLOOR), AffineHead(8, 3, num_styles=1, cell=8, bins=1, level_floor=FLOOR)
    with torch.no_grad():
        smooth.photo_norm.gamma[0] = torch.tensor([0.1, 0.2, 0.3])
        smooth.photo_norm.beta[0] = torch.tensor([0.5, 0.4, 0.3])
    out = smooth(features, photo, style)  # zero-initialised maps: each channel gets (gamma, beta)
    var, mean = torch.var_mean(out, dim=(0, 2, 3), correction=0)
    assert torch.allclose(mean, torch.tensor([0.5, 0.4, 0.3]), atol=1e-5)
    assert torch.allclose(var.sqrt(), torch.tensor([0.1, 0.2, 0.3]), atol=1e-4)

    with torch.no_grad():  # a flat global transfer: the output shows the maps themselves
        fine.photo_norm.gamma.zero_()
        fine.photo_norm.beta.fill_(0.5)
    torch.nn.init.normal_(fine.conv.conv.weight, generator=torch.Generator().manual_seed(1))
    smooth.load_state_dict(fine.state_dict())
    assert _roughness(smooth(features, photo, style)) < 0.2 * _roughness(fine(features, photo, style))


def _cell_average(maps: torch.Tensor, cell: int) -> torch.Tensor:
    cells = torch.nn.functional.avg_pool2d(maps, cell, ceil_mode=True)
    return torch.nn.functional.interpolate(cells, size=maps.shape[-2:], mode="bilinear", align_corners=False)


def test_edge_aware_mean_with_one_level_or_a_flat_guide_is_the_plain_cell_average():
    maps = torch.rand(2, 12, 40, 36, generator=torch.Generator().manual_seed(0))
    guide = torch.rand(2, 1, 40, 36, generator=torch.Generator().manual_seed(1))
    flat = torch.full((2, 1, 40, 36), 0.37)
    expected = _cell_average(maps, 8)
    assert torch.allclose(edge_aware_mean(maps, guide, cell=8, bins=1, level_floor=FLOOR), expected, atol=1e-6)
    assert torch.allclose(edge_aware_mean(maps, flat, cell=8, bins=8, level_floor=FLOOR), expected, atol=1e-6)


def test_edge_aware_mean_shares_nothing_across_a_brightness_edge():
    """A dark ridge under a bright sky: each side keeps its own value up to the edge (no halo)."""
    guide = torch.full((1, 1, 32, 40), 0.9)
    guide[..., 19:, :] = 0.1  # the edge falls inside a cell
    maps = torch.where(guide > 0.5, 1.0, -1.0).expand(1, 3, 32, 40)
    sharp = edge_aware_mean(maps, guide, cell=8, bins=8, level_floor=FLOOR)
    assert float((sharp - maps).abs().amax()) < 0.2  # a tenth of the jump at most: the floor of the whole cell
    blurred = edge_aware_mean(maps, guide, cell=8, bins=1, level_floor=FLOOR)
    assert float((blurred - maps).abs().amax()) > 0.5  # plain cells smear the edge


def test_a_level_few_pixels_fall_in_follows_the_cell_around_it():
    """A star in a night sky: its own transform would come from a handful of pixels alone."""
    guide = torch.full((1, 1, 32, 32), 0.05)
    guide[..., 12:14, 12:14] = 0.95
    maps = torch.where(guide > 0.5, 1.0, 0.0).expand(1, 3, 32, 32)
    star = edge_aware_mean(maps, guide, cell=32, bins=8, level_floor=FLOOR)[..., 12:14, 12:14]
    assert float(star.amax()) < 0.5


def test_edge_aware_mean_keeps_constant_maps_and_their_gradients():
    guide = torch.rand(1, 1, 24, 24, generator=torch.Generator().manual_seed(3))
    maps = torch.full((1, 4, 24, 24), 0.25, requires_grad=True)
    out = edge_aware_mean(maps, guide, cell=8, bins=8, level_floor=FLOOR)
    assert torch.allclose(out, torch.full_like(out, 0.25), atol=1e-6)
    out.sum().backward()
    assert torch.isfinite(maps.grad).all() and float(maps.grad.abs().sum()) > 0


def test_bases_recorded_before_brightness_levels_keep_plain_cell_averages():
    recorded = '{"affine_cell": 8, "channels": [16, 32, 64], "head": "affine", "outer_kernel": 5, "residual_blocks": 3}'
    config = NetConfig.from_json(recorded)
    assert (config.affine_cell, config.affine_bins) == (8, 1)
    assert StyleNet(config, num_styles=1).head.bins == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_edge_aware_mean_on_cuda_matches_cpu_in_float32_and_under_bf16_autocast():
    """scatter_add and 3-D grid_sample have their own CUDA kernels; the grid stays float32 under autocast."""
    gen = torch.Generator().manual_seed(4)
    maps = torch.randn(2, 12, 96, 80, generator=gen)
    guide = torch.rand(2, 1, 96, 80, generator=gen)
    expected = edge_aware_mean(maps, guide, cell=32, bins=8, level_floor=FLOOR)
    on_gpu = edge_aware_mean(maps.cuda(), guide.cuda(), cell=32, bins=8).cpu()
    assert torch.allclose(on_gpu, expected, atol=1e-4)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        low = edge_aware_mean(maps.cuda().bfloat16(), guide.cuda(), cell=32, bins=8)
    assert low.dtype == torch.bfloat16
    assert float((low.float().cpu() - expected).abs().amax()) < 0.05
    grad_maps = maps.cuda().requires_grad_()
    edge_aware_mean(grad_maps, guide.cuda(), cell=32, bins=8, level_floor=FLOOR).square().sum().backward()
    cpu_maps = maps.clone().requires_grad_()
    edge_aware_mean(cpu_maps, guide, cell=32, bins=8, level_floor=FLOOR).square().sum().backward()
    assert torch.allclose(grad_maps.grad.cpu(), cpu_maps.grad, atol=1e-4)

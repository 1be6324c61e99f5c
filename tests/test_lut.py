import pytest
import torch

from photostyle import NetConfig, StyleNet, get_preset
from photostyle.lut import ColourLUT
from photostyle.network import LUTHead
from photostyle.norm import shared_statistics

LEVELS = (8, 6, 6)
LITE = get_preset("lite").net
TABLE = {"chroma_range": LITE.lut_chroma_range, "entry_floor": LITE.lut_entry_floor}  # as lite uses them


def _sky_over_city(seed: int = 0) -> torch.Tensor:
    """A flat blue sky over a random 'city', 48 x 64."""
    photo = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(seed))
    photo[:, :, :20] = torch.tensor([0.45, 0.6, 0.85]).view(1, 3, 1, 1)
    return photo


def test_pixels_of_one_colour_get_the_same_maps_wherever_they_are():
    """What rules out a patch in a flat sky: the maps are a function of colour alone."""
    photo = _sky_over_city()
    maps = torch.randn(1, 12, 48, 64, generator=torch.Generator().manual_seed(1))
    shared = ColourLUT(LEVELS, **TABLE)(maps, photo)
    sky = shared[..., :20, :]
    assert float((sky - sky[..., :1, :1]).abs().amax()) < 1e-5
    assert float(maps[..., :20, :].std()) > 0.5  # the per-pixel maps did differ across the sky
    city = shared[..., 24:, :]
    assert float(city.std()) > 0.01  # other colours keep maps of their own


def test_a_photo_taken_in_several_passes_gets_one_table(monkeypatch):
    """Large photos are splatted and sliced in chunks of pixels (for the cache): same result."""
    photo = _sky_over_city(7)
    maps = torch.randn(1, 12, 48, 64, generator=torch.Generator().manual_seed(8), requires_grad=True)
    whole = ColourLUT(LEVELS, **TABLE)(maps, photo)
    (grad_whole,) = torch.autograd.grad(whole.square().sum(), maps)
    monkeypatch.setattr("photostyle.lut._CHUNK", 1000)  # 4 passes over 3072 pixels
    chunked = ColourLUT(LEVELS, **TABLE)(maps, photo)
    (grad_chunked,) = torch.autograd.grad(chunked.square().sum(), maps)
    assert torch.allclose(chunked, whole, atol=1e-6)
    assert torch.allclose(grad_chunked, grad_whole, atol=1e-6)


def test_the_table_keeps_constant_maps_and_their_gradients():
    photo = _sky_over_city(2)
    maps = torch.full((1, 4, 48, 64), 0.25, requires_grad=True)
    out = ColourLUT(LEVELS, **TABLE)(maps, photo)
    assert torch.allclose(out, torch.full_like(out, 0.25), atol=1e-6)
    out.sum().backward()
    assert torch.isfinite(maps.grad).all() and float(maps.grad.abs().sum()) > 0


def test_a_colour_few_pixels_have_follows_the_whole_photo():
    """A red lamp in a grey street: its own transform would come from four pixels alone."""
    photo = torch.full((1, 3, 64, 64), 0.4)
    photo[:, :, 30:32, 30:32] = torch.tensor([0.9, 0.1, 0.1]).view(1, 3, 1, 1)
    maps = torch.zeros(1, 3, 64, 64)
    maps[..., 30:32, 30:32] = 1.0
    lamp = ColourLUT(LEVELS, **TABLE)(maps, photo)[..., 30:32, 30:32]
    assert float(lamp.amax()) < 0.5


def test_tiles_replaying_the_whole_photos_table_match_the_whole_photo():
    photo = _sky_over_city(3)
    maps = torch.randn(1, 12, 48, 64, generator=torch.Generator().manual_seed(4))
    table = ColourLUT(LEVELS, **TABLE)
    whole = table(maps, photo)
    with shared_statistics(table) as recorded:
        table(maps, photo)
    with shared_statistics(table, recorded):
        left = table(maps[..., :32], photo[..., :32])
    assert torch.allclose(left, whole[..., :32], atol=1e-6)
    assert not torch.allclose(table(maps[..., :32], photo[..., :32]), whole[..., :32], atol=1e-3)


@pytest.mark.parametrize("levels", [(8, 6), (8, 1, 6)])
def test_a_table_without_two_levels_of_each_axis_is_refused(levels):
    with pytest.raises(ValueError, match="at least 2 levels"):
        ColourLUT(levels, **TABLE)


def test_lite_grades_with_a_colour_table_and_its_config_round_trips():
    config = get_preset("lite").net
    assert isinstance(StyleNet(config, num_styles=1).head, LUTHead)
    assert NetConfig.from_json(config.to_json()) == config
    assert StyleNet(config, num_styles=1).period == 4  # no cells to align tiles to


def test_the_lut_head_starts_as_the_global_transfer():
    head = LUTHead(8, 3, num_styles=1, levels=LEVELS, **TABLE)
    with torch.no_grad():
        head.photo_norm.gamma[0] = torch.tensor([0.1, 0.2, 0.3])
        head.photo_norm.beta[0] = torch.tensor([0.5, 0.4, 0.3])
    out = head(torch.rand(1, 8, 48, 64), _sky_over_city(), torch.tensor([0]))
    var, mean = torch.var_mean(out, dim=(0, 2, 3), correction=0)
    assert torch.allclose(mean, torch.tensor([0.5, 0.4, 0.3]), atol=1e-5)
    assert torch.allclose(var.sqrt(), torch.tensor([0.1, 0.2, 0.3]), atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_table_on_cuda_matches_cpu_in_float32_and_under_bf16_autocast():
    """scatter_add and 5-D grid_sample have their own CUDA kernels; the table stays float32 under autocast."""
    photo = _sky_over_city(5)
    maps = torch.randn(1, 12, 48, 64, generator=torch.Generator().manual_seed(6))
    expected = ColourLUT(LEVELS, **TABLE)(maps, photo)
    table = ColourLUT(LEVELS, **TABLE).cuda()
    assert torch.allclose(table(maps.cuda(), photo.cuda()).cpu(), expected, atol=1e-4)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        low = table(maps.cuda().bfloat16(), photo.cuda())
    assert low.dtype == torch.bfloat16
    assert float((low.float().cpu() - expected).abs().amax()) < 0.05


def test_lite_bases_recorded_before_colour_tables_are_the_lite_cells_preset():
    """So published bases keep getting new styles (train --mode style finds a base's preset by its config)."""
    recorded = (
        '{"affine_bins": 8, "affine_cell": 32, "channels": [16, 32, 64], "head": "affine", '
        '"outer_kernel": 5, "residual_blocks": 3}'
    )
    assert NetConfig.from_json(recorded) == get_preset("lite-cells").net

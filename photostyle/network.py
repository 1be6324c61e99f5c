"""The style network: Johnson et al.'s feed-forward transformation net with conditional instance norm.

    conv in (stride 1) -> down (stride 2) -> down (stride 2) -> residual blocks
        -> up (nearest x2 + conv) -> up (nearest x2 + conv) -> head

Every convolution is shared by all styles; every norm layer is a
:class:`~photostyle.norm.ConditionalInstanceNorm2d`, so a style is just its (gamma, beta) rows.
The net is fully convolutional: inputs of any size are reflect-padded to the net's stride and the
output is cropped back, so output size == input size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from photostyle.colour import luma
from photostyle.lut import ColourLUT, edge_aware_mean
from photostyle.norm import ConditionalInstanceNorm2d
from photostyle.presets import NetConfig

__all__ = ["StyleNet", "STRIDE"]

STRIDE = 4  # two stride-2 convolutions
_MIN_SIDE = 16  # smaller inputs are padded up so every reflection pad stays valid


class ConvLayer(nn.Module):
    """Reflection padding + convolution (no zero borders that darken the edges)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1) -> None:
        super().__init__()
        self.pad = nn.ReflectionPad2d(kernel // 2)
        self.conv = nn.Conv2d(cin, cout, kernel, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pad(x))


class ConvNormReLU(nn.Module):
    """Shared convolution, per-style instance norm, ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, num_styles: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = ConvLayer(cin, cout, kernel, stride)
        self.norm = ConditionalInstanceNorm2d(cout, num_styles)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(x), style))


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with per-style norm, added to the input (He et al.)."""

    def __init__(self, channels: int, num_styles: int) -> None:
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, 3)
        self.norm1 = ConditionalInstanceNorm2d(channels, num_styles)
        self.conv2 = ConvLayer(channels, channels, 3)
        self.norm2 = ConditionalInstanceNorm2d(channels, num_styles)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm1(self.conv1(x), style))
        return x + self.norm2(self.conv2(y), style)


class UpsampleConvNormReLU(ConvNormReLU):
    """Nearest-neighbour x2 upsampling then a convolution: no checkerboard (Odena et al. 2016)."""

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        return super().forward(F.interpolate(x, scale_factor=2, mode="nearest"), style)


class RGBHead(nn.Module):
    """The paper's output: a convolution paints the stylised pixels directly."""

    def __init__(self, cin: int, kernel: int) -> None:
        super().__init__()
        self.conv = ConvLayer(cin, 3, kernel)

    def forward(self, features: torch.Tensor, image: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        return self.conv(features)


class AffineHead(nn.Module):
    """A global colour transfer refined by a local affine colour transform per pixel.

    First the photo is instance-normalised with this style's own (gamma, beta): each channel
    gets the style's mean and spread, which is Reinhard et al.'s colour transfer when (gamma,
    beta) are a photo's colour statistics (training starts them there). Instance-normalised
    features alone could not do this part: normalisation removes exactly the global brightness
    and cast that tell a noon sky from a night sky. Then a 3x4 transform per pixel, predicted
    from the features and that photo, recolours it locally: the output is a local affine
    recolouring of the input, so edges and texture come from the photo itself (photorealistic by
    construction, as in Gharbi et al.'s deep bilateral learning).

    The transforms are averaged over ``cell`` x ``cell`` pixel cells, so they cannot paint
    texture or noise of their own, whatever the losses ask for; with ``bins`` > 1 only over
    pixels of similar brightness (:func:`edge_aware_mean`), so a dark ridge and the bright sky
    above it keep their own transforms instead of a halo of each other's.
    Zero-initialised: a fresh network is the global transfer alone.
    """

    def __init__(self, cin: int, kernel: int, num_styles: int, *, cell: int, bins: int, level_floor: float) -> None:
        super().__init__()
        self.cell, self.bins, self.level_floor = cell, bins, level_floor
        self.photo_norm = ConditionalInstanceNorm2d(3, num_styles)
        self.conv = ConvLayer(cin + 3, 12, kernel)
        nn.init.zeros_(self.conv.conv.weight)
        nn.init.zeros_(self.conv.conv.bias)

    def forward(self, features: torch.Tensor, image: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        normalised = self.photo_norm(image, style)  # the global transfer
        coeffs = self.share(self.conv(torch.cat([features, normalised], dim=1)), image)
        b, _, h, w = coeffs.shape
        coeffs = coeffs.view(b, 3, 4, h, w)
        matrix, offset = coeffs[:, :, :3], coeffs[:, :, 3]
        # (I + M) x + t, per pixel
        return normalised + torch.einsum("bcdhw,bdhw->bchw", matrix, normalised) + offset

    def share(self, coeffs: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """The per-pixel maps, averaged over the pixels that must share them (here: a cell's)."""
        if self.cell == 1:
            return coeffs
        return edge_aware_mean(coeffs, luma(image), cell=self.cell, bins=self.bins, level_floor=self.level_floor)


class LUTHead(AffineHead):
    """The affine head with its colour maps shared by colour over the whole photo, not by cell.

    Every pixel of one colour gets the same recolouring wherever it is (:class:`ColourLUT`), so
    the net can grade a photo as a colourist's lookup table does but cannot paint light into part
    of a flat sky. It has the affine head's parameters; only how the maps are shared differs.
    """

    def __init__(
        self, cin: int, kernel: int, num_styles: int, levels: tuple[int, int, int], *, chroma_range: float, entry_floor: float
    ) -> None:
        super().__init__(cin, kernel, num_styles, cell=1, bins=1, level_floor=0.0)
        self.lut = ColourLUT(levels, chroma_range=chroma_range, entry_floor=entry_floor)

    def share(self, coeffs: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.lut(coeffs, image)


class StyleNet(nn.Module):
    """Feed-forward style network with ``num_styles`` sets of per-style norm parameters."""

    def __init__(self, config: NetConfig, num_styles: int) -> None:
        super().__init__()
        c1, c2, c3 = config.channels
        k = config.outer_kernel
        self.config = config
        self.conv_in = ConvNormReLU(3, c1, k, num_styles)
        self.down1 = ConvNormReLU(c1, c2, 3, num_styles, stride=2)
        self.down2 = ConvNormReLU(c2, c3, 3, num_styles, stride=2)
        self.residuals = nn.ModuleList(ResidualBlock(c3, num_styles) for _ in range(config.residual_blocks))
        self.up1 = UpsampleConvNormReLU(c3, c2, 3, num_styles)
        self.up2 = UpsampleConvNormReLU(c2, c1, 3, num_styles)
        self.head = _build_head(config, c1, num_styles)

    @property
    def num_styles(self) -> int:
        return self.conv_in.norm.num_styles

    @property
    def period(self) -> int:
        """Tiles cut at multiples of this many pixels see the same strides and colour-map cells as
        the whole photo (tiled rendering aligns to it and keeps two periods of context)."""
        return math.lcm(STRIDE, getattr(self.head, "cell", 1))

    def forward(self, image: torch.Tensor, style: torch.Tensor | int) -> torch.Tensor:
        """Stylise a batch ``(B, 3, H, W)`` in [0, 1]; ``style`` is one index or one per sample."""
        style = self._style_index(style, image)
        x, (h, w) = _pad_to_stride(image), image.shape[-2:]
        y = self.conv_in(x, style)
        y = self.down1(y, style)
        y = self.down2(y, style)
        for block in self.residuals:
            y = block(y, style)
        y = self.up1(y, style)
        y = self.up2(y, style)
        return self.head(y, x, style)[..., :h, :w]

    def _style_index(self, style: torch.Tensor | int, image: torch.Tensor) -> torch.Tensor:
        index = torch.as_tensor(style, dtype=torch.long, device=image.device)
        if index.ndim == 0:
            index = index.expand(image.shape[0])
        if index.shape != (image.shape[0],):
            raise ValueError(f"style index shape {tuple(index.shape)} does not match batch size {image.shape[0]}")
        if bool(((index < 0) | (index >= self.num_styles)).any()):
            raise ValueError(f"style index out of range [0, {self.num_styles}): {index.tolist()}")
        return index


def _build_head(config: NetConfig, cin: int, num_styles: int) -> nn.Module:
    k = config.outer_kernel
    if config.head == "lut":
        return LUTHead(
            cin, k, num_styles, config.lut_levels, chroma_range=config.lut_chroma_range, entry_floor=config.lut_entry_floor
        )
    if config.head == "affine":
        return AffineHead(
            cin, k, num_styles, cell=config.affine_cell, bins=config.affine_bins, level_floor=config.affine_level_floor
        )
    return RGBHead(cin, k)


def _pad_to_stride(x: torch.Tensor) -> torch.Tensor:
    """Pad bottom/right up to a multiple of STRIDE (and at least _MIN_SIDE): reflect where the
    image is large enough, replicate otherwise."""
    h, w = x.shape[-2:]
    target_h = max(_MIN_SIDE, -(-h // STRIDE) * STRIDE)
    target_w = max(_MIN_SIDE, -(-w // STRIDE) * STRIDE)
    pad = (0, target_w - w, 0, target_h - h)
    if pad == (0, 0, 0, 0):
        return x
    mode = "reflect" if target_h - h < h and target_w - w < w else "replicate"
    return F.pad(x, pad, mode=mode)

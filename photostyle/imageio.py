"""Image bytes in and out: untrusted photos to 8-bit RGB, results back to JPEG/PNG/WebP.

Everything the method sees is an upright 8-bit RGB image, whatever the file held: EXIF
orientation is applied, palette/grey/alpha/CMYK/16-bit modes are converted, and bad input
(empty, not an image, truncated, decompression bomb) becomes one ``ImageDecodeError`` whose
message starts with the input's name. The source's ICC profile and EXIF travel beside the
pixels in ``Photo`` so that ``encode`` can write them back into the result.

Pillow's process-wide switches are never touched: ``Image.MAX_IMAGE_PIXELS`` (our own
``max_pixels`` check does the job per call) and ``ImageFile.LOAD_TRUNCATED_IMAGES`` (which must
stay False, its default, or truncated files decode silently with grey fill).
"""

from __future__ import annotations

import io
import logging
import os
import struct
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, features

try:
    from PIL import ImageCms
except ImportError:  # Pillow built without littleCMS
    ImageCms = None

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "EXTENSIONS",
    "ImageDecodeError",
    "Photo",
    "decode",
    "downscale",
    "encode",
    "read",
    "to_image",
    "to_tensor",
]

_log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 120_000_000
"""Largest image ``decode`` accepts by default.

Admits the biggest common camera files (medium format, ~102 MP) with headroom, yet caps one
decode at ~360 MB of 8-bit RGB (~1.4 GB as a float32 tensor). It sits below Pillow's own hard
refusal (2 x ``Image.MAX_IMAGE_PIXELS``, ~179 MP by default) so that, by default, the refusal a
user sees is ours, with the pixel count and the limit. Pillow still warns
(``DecompressionBombWarning``) for images between ~89 MP and this limit.
"""

# Decoders we let loose on untrusted bytes: the photo formats, nothing that shells out (EPS)
# or is rarely a photo. Extensions are those the pipeline picks up.
_EXTENSION_FORMATS = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".png": "PNG",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
}
Image.init()
_DECODERS = tuple(
    sorted(
        {f for f in _EXTENSION_FORMATS.values() if f in Image.OPEN and (f != "WEBP" or features.check_module("webp"))}
    )
)
EXTENSIONS: frozenset[str] = frozenset(ext for ext, fmt in _EXTENSION_FORMATS.items() if fmt in _DECODERS)
"""Lower-case file extensions (with dot) of the formats ``decode`` can read in this install."""

_ENCODERS = {"jpeg": "JPEG", "jpg": "JPEG", "png": "PNG", "webp": "WEBP"}

_EXIF_HEADER = b"Exif\x00\x00"
_ORIENTATION = 0x0112


class ImageDecodeError(ValueError):
    """Input that cannot be turned into a photo; the message starts with the input's name."""


@dataclass(frozen=True)
class Photo:
    """A decoded photo: upright 8-bit RGB pixels plus the metadata to write back on encode."""

    image: Image.Image
    """RGB, 8-bit, EXIF orientation applied; ``image.info`` is empty (metadata lives here)."""
    icc_profile: bytes | None
    """RGB ICC profile describing ``image``; None when untagged (sRGB assumed), including after
    a CMYK or grey profile was used to convert the pixels to sRGB."""
    exif: bytes | None
    """Source EXIF (``Exif\\0\\0`` + TIFF structure) with Orientation set to 1, else None."""
    format: str | None
    """Source format as Pillow names it, e.g. "JPEG", "PNG", "WEBP"."""

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the upright image."""
        return self.image.size


def decode(data: bytes, *, name: str = "<bytes>", max_pixels: int = DEFAULT_MAX_PIXELS) -> Photo:
    """Decode untrusted image bytes into an upright RGB ``Photo``; ``name`` labels errors."""
    return _decode(io.BytesIO(data), name, max_pixels)


def read(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Photo:
    """Decode a local image file (notebook convenience); errors name the path."""
    with open(path, "rb") as fp:
        return _decode(fp, os.fspath(path), max_pixels)


def encode(
    image: Image.Image,
    *,
    format: str = "jpeg",
    quality: int = 92,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
) -> bytes:
    """Encode an RGB image with exactly the given ICC profile and EXIF, nothing from ``image.info``.

    ``quality`` (1..100) drives JPEG and lossy WebP; PNG is lossless and ignores it. EXIF
    Orientation is written as 1 because the pixels are expected upright already.
    """
    fmt = _ENCODERS.get(format.lower()) if isinstance(format, str) else None
    if fmt is None:
        raise ValueError(f"format {format!r} is not one of {sorted(_ENCODERS)}")
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ValueError(f"quality must be an int in 1..100, got {quality!r}")
    if image.mode != "RGB":
        raise ValueError(f"image mode must be RGB, got {image.mode!r}")
    options: dict[str, object] = {} if fmt == "PNG" else {"quality": quality}
    if icc_profile:
        options["icc_profile"] = icc_profile
    if exif:
        options["exif"] = _reset_orientation(exif)
    # Save a copy with empty info: Pillow's writers fall back to image.info (PNG: ICC profile,
    # transparency; JPEG: comment), and save() sets attributes on the image it writes, which
    # would race when one image is encoded from several threads.
    bare = image.copy()
    bare.info = {}
    buf = io.BytesIO()
    bare.save(buf, format=fmt, **options)
    return buf.getvalue()


def downscale(image: Image.Image, side: int) -> Image.Image:
    """``image`` as RGB with its long side at most ``side`` (an 8-bit box filter: each pixel the
    area average of those it covers); itself, converted, when it is no larger."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    scale = side / max(image.size)
    if scale >= 1:
        return image
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BOX)


def to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB image -> float32 tensor (3, H, W) in [0, 1]."""
    if image.mode != "RGB":
        raise ValueError(f"image mode must be RGB, got {image.mode!r}")
    chw = np.ascontiguousarray(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1))
    return torch.from_numpy(chw).to(torch.float32).div_(255.0)


def to_image(tensor: torch.Tensor) -> Image.Image:
    """Float tensor (3, H, W) or (1, 3, H, W) in [0, 1] -> RGB image (clamped, rounded)."""
    if tensor.dim() == 4 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.dim() != 3 or tensor.shape[0] != 3:
        raise ValueError(f"tensor must have shape (3, H, W) or (1, 3, H, W), got {tuple(tensor.shape)}")
    if not tensor.is_floating_point():
        raise ValueError(f"tensor must be floating point in [0, 1], got {tensor.dtype}")
    values = tensor.detach().to("cpu", torch.float32)
    if torch.isnan(values).any():
        raise ValueError("tensor contains NaN")
    hwc = values.mul(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0)
    return Image.fromarray(hwc.contiguous().numpy())


def _decode(fp: BinaryIO, name: str, max_pixels: int) -> Photo:
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive int, got {max_pixels!r}")
    if not fp.read(1):
        raise ImageDecodeError(f"{name}: empty input (0 bytes)")
    fp.seek(0)
    with _open(fp, name) as im:
        width, height = im.size
        if width * height > max_pixels:
            raise ImageDecodeError(
                f"{name}: image too large: {width}x{height} = {width * height} pixels exceeds "
                f"the limit of {max_pixels} pixels (max_pixels)"
            )
        try:
            im.load()
        except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
            raise ImageDecodeError(f"{name}: truncated image or corrupt pixel data ({exc})") from exc
        icc = im.info.get("icc_profile") or None
        exif = _source_exif(im, name)
        source_format = im.format
        ImageOps.exif_transpose(im, in_place=True)
        rgb, icc = _to_rgb(im, icc, name)
    rgb.info = {}
    return Photo(image=rgb, icc_profile=icc, exif=exif, format=source_format)


def _open(fp: BinaryIO, name: str) -> Image.Image:
    """Read the header only (no pixel data), mapping Pillow's failures to ImageDecodeError."""
    try:
        return Image.open(fp, formats=_DECODERS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own limit (or its warning, when warnings are errors) tripped in the header.
        raise ImageDecodeError(f"{name}: image too large, refused as a decompression bomb ({exc})") from exc
    except Image.UnidentifiedImageError as exc:
        # Pillow cannot tell a cut-off header from junk; the signature can.
        if (looks_like := _signature_format(fp)) is not None:
            raise ImageDecodeError(f"{name}: truncated image or corrupt {looks_like} header") from exc
        raise ImageDecodeError(f"{name}: not an image in a supported format ({', '.join(_DECODERS)})") from exc
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise ImageDecodeError(f"{name}: truncated image or corrupt header ({exc})") from exc


def _signature_format(fp: BinaryIO) -> str | None:
    """The allowed format whose magic bytes the data starts with, if any."""
    fp.seek(0)
    prefix = fp.read(16)  # as much as Pillow's own identification reads
    return next((fmt for fmt in _DECODERS if Image.OPEN[fmt][1] and Image.OPEN[fmt][1](prefix) is True), None)


def _source_exif(im: Image.Image, name: str) -> bytes | None:
    """The file's EXIF block with Orientation reset; a corrupt block is dropped, not fatal.

    TIFF files have no separate EXIF block (their tags describe the file layout), so they
    yield None; their orientation is still applied.
    """
    raw = im.info.get("exif")
    if not raw:
        return None
    try:
        return _reset_orientation(raw)
    except ValueError as exc:
        _log.warning("%s: dropping unreadable EXIF (%s)", name, exc)
        return None


def _reset_orientation(exif: bytes) -> bytes:
    """Set IFD0 Orientation to 1 by patching that one value in place.

    Patching rather than re-serialising with ``Image.Exif`` keeps every other byte, so maker
    notes and sub-IFD offsets stay valid. Returns the block with the ``Exif\\0\\0`` header,
    which is what Pillow's JPEG, PNG and WebP writers expect.
    """
    tiff = bytearray(exif[len(_EXIF_HEADER) :] if exif.startswith(_EXIF_HEADER) else exif)
    order = {b"II*\x00": "<", b"MM\x00*": ">"}.get(bytes(tiff[:4]))
    if order is None:
        raise ValueError("EXIF data does not start with a TIFF header")
    try:
        (ifd0,) = struct.unpack_from(order + "I", tiff, 4)
        (count,) = struct.unpack_from(order + "H", tiff, ifd0)
        for entry in range(ifd0 + 2, ifd0 + 2 + 12 * count, 12):
            tag, kind, n = struct.unpack_from(order + "HHI", tiff, entry)
            if tag == _ORIENTATION and n == 1 and kind in (3, 4):  # SHORT or LONG
                struct.pack_into(order + ("H" if kind == 3 else "I"), tiff, entry + 8, 1)
    except struct.error as exc:
        raise ValueError(f"EXIF IFD0 is truncated ({exc})") from exc
    return _EXIF_HEADER + bytes(tiff)


def _to_rgb(im: Image.Image, icc: bytes | None, name: str) -> tuple[Image.Image, bytes | None]:
    """Any mode our decoders produce -> 8-bit RGB, plus the ICC profile still describing it.

    Modes left to Pillow's ``convert`` (RGBX, YCbCr, LAB, P, 1) convert correctly there.
    """
    space = _icc_colour_space(icc)
    im = _flatten_alpha(_to_8bit(im))
    native_space = {"CMYK": b"CMYK", "L": b"GRAY"}.get(im.mode)
    if native_space is not None and space == native_space:
        managed = _icc_to_srgb(im, icc, name)
        if managed is not None:
            return managed, None
    # An RGB profile only describes RGB (or palette-of-RGB) pixels; any other is now stale.
    keep = space == b"RGB " and im.mode in ("RGB", "P")
    return im.convert("RGB"), icc if keep else None


def _to_8bit(im: Image.Image) -> Image.Image:
    """16-bit and float grey -> L by scaling, not clipping (Pillow's convert clips at 255).

    Integer modes are read as 16-bit (65535 -> 255, rounded); "I" from 32-bit files is clipped
    to 0..65535 first. Float ("F") is read as 0..1, the usual float-image range.
    """
    if im.mode.startswith("I;16") or im.mode == "I":
        wide = np.clip(np.asarray(im), 0, 65535).astype(np.uint32)
        return Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8))
    if im.mode == "F":
        unit = np.clip(np.nan_to_num(np.asarray(im, dtype=np.float32)), 0.0, 1.0)
        return Image.fromarray(np.rint(unit * 255).astype(np.uint8))
    return im


def _flatten_alpha(im: Image.Image) -> Image.Image:
    """Composite any alpha (channel or transparent palette/colour key) over white.

    White rather than black or dropping alpha: transparent pixels often hold garbage colour,
    and white is how viewers and print show transparency on a photo.
    """
    if im.mode in ("L", "RGB", "P") and im.has_transparency_data:
        im = im.convert("LA" if im.mode == "L" else "RGBA")
    base = {"LA": "L", "La": "L", "PA": "RGB", "RGBA": "RGB"}.get(im.mode)
    if base is None:
        return im
    im = im.convert(base + "A")  # expands palettes (PA), un-premultiplies La
    flat = Image.new(base, im.size, "white")
    flat.paste(im.convert(base), mask=im.getchannel("A"))
    return flat


def _icc_colour_space(icc: bytes | None) -> bytes | None:
    """The profile's data colour space signature (b"RGB ", b"CMYK", b"GRAY", ...), or None."""
    if icc is None or len(icc) < 128 or icc[36:40] != b"acsp":
        return None
    return icc[16:20]


def _icc_to_srgb(im: Image.Image, icc: bytes, name: str) -> Image.Image | None:
    """Convert CMYK/grey pixels to sRGB through their embedded profile; None if impossible."""
    if ImageCms is None:
        _log.warning("%s: Pillow lacks ImageCms; ignoring the embedded %s ICC profile", name, im.mode)
        return None
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        return ImageCms.profileToProfile(im, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError) as exc:
        _log.warning("%s: embedded %s ICC profile unusable (%s); using Pillow's conversion", name, im.mode, exc)
        return None

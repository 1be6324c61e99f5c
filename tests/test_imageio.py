"""Image I/O: real photos through every mode, orientation, metadata and failure path."""

from __future__ import annotations

import functools
import io
import logging
import random
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms, ImageFile, features

from photostyle import imageio
from photostyle.imageio import DEFAULT_MAX_PIXELS, ImageDecodeError, decode, encode, read, to_image, to_tensor
from tests.photos import content, sample


ORIENTATION, MAKE, MODEL, EXIF_IFD, DATE_TIME_ORIGINAL = 0x0112, 0x010F, 0x0110, 0x8769, 0x9003
D50 = (0.9642, 1.0, 0.8249)
LOSSY = 5  # mean abs error (0..255) allowed after JPEG/WebP at quality 95 on a 96 px photo


# ---------------------------------------------------------------- helpers


@functools.cache
def _real(n: int = 1, width: int = 96) -> Image.Image:
    """A real photo, shrunk for speed (aspect kept, so not square). Callers must not mutate it."""
    with Image.open(content(n)) as im:
        rgb = im.convert("RGB")
    return rgb.resize((width, round(width * rgb.height / rgb.width)), Image.Resampling.LANCZOS)


def _save(im: Image.Image, fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **options)
    return buf.getvalue()


def _px(im: Image.Image) -> np.ndarray:
    return np.asarray(im).astype(np.int32)


def _exif(orientation: int | None = None) -> bytes:
    exif = Image.Exif()
    if orientation is not None:
        exif[ORIENTATION] = orientation
    exif[MAKE] = "PhotoCam"
    exif[MODEL] = "PC-1"
    exif.get_ifd(EXIF_IFD)[DATE_TIME_ORIGINAL] = "2019:05:01 12:00:00"
    return exif.tobytes()


def _parse_exif(data: bytes) -> Image.Exif:
    exif = Image.Exif()
    exif.load(data)
    return exif


def _srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _png(width: int, height: int, *, bit_depth: int, colour_type: int, rows: bytes = b"") -> bytes:
    """A hand-made PNG: Pillow cannot write 48-bit RGB or a header that lies about the size."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def _png48(rgb16: np.ndarray) -> bytes:
    height, width, _ = rgb16.shape
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in rgb16)
    return _png(width, height, bit_depth=16, colour_type=2, rows=rows)


def _s15(values: tuple[float, ...]) -> bytes:
    return struct.pack(f">{len(values)}i", *(round(v * 65536) for v in values))


def _icc(space: bytes, pcs: bytes, tags: dict[bytes, bytes]) -> bytes:
    """A minimal ICC v2 input profile (littleCMS accepts it); ImageCms cannot create CMYK/grey ones."""
    table = struct.pack(">I", len(tags))
    offset = 128 + 4 + 12 * len(tags)
    body = b""
    for sig, data in tags.items():
        data += b"\0" * (-len(data) % 4)
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += data
    header = bytearray(128)
    struct.pack_into(">I4s4s4s4s", header, 0, offset + len(body), b"", bytes([2, 0x10, 0, 0]), b"scnr", space)
    header[20:24], header[36:40], header[68:80] = pcs, b"acsp", _s15(D50)
    return bytes(header) + table + body


def _srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB in [0, 1] -> CIE Lab (D50, the ICC connection space)."""
    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    to_xyz_d50 = np.array(
        [[0.4360747, 0.3850649, 0.1430804], [0.2225045, 0.7168786, 0.0606169], [0.0139322, 0.0971045, 0.7141733]]
    )
    xyz = lin @ to_xyz_d50.T / np.array(D50)
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def _swapped_cmyk_icc(grid: int = 9) -> bytes:
    """CMYK profile in which C is the *green* ink and M the *red* one (the opposite of Pillow's
    naive CMYK->RGB), so only a decoder that uses the profile gets the colours right."""
    t = np.linspace(0.0, 1.0, grid)
    c, m, y, k = np.meshgrid(t, t, t, t, indexing="ij")
    lab = _srgb_to_lab(np.stack([(1 - m) * (1 - k), (1 - c) * (1 - k), (1 - y) * (1 - k)], -1)).reshape(-1, 3)
    clut = np.stack([lab[:, 0] / 100 * 0xFF00, (lab[:, 1] + 128) * 256, (lab[:, 2] + 128) * 256], -1)
    identity_curve = struct.pack(">HH", 0, 0xFFFF)
    lut = (
        b"mft2\0\0\0\0"
        + bytes([4, 3, grid, 0])
        + _s15((1, 0, 0, 0, 1, 0, 0, 0, 1))
        + struct.pack(">HH", 2, 2)
        + identity_curve * 4
        + np.clip(np.rint(clut), 0, 0xFFFF).astype(">u2").tobytes()
        + identity_curve * 3
    )
    return _icc(b"CMYK", b"Lab ", {b"A2B0": lut, b"wtpt": b"XYZ \0\0\0\0" + _s15(D50)})


def _linear_gray_icc() -> bytes:
    """Grey profile with gamma 1.0: grey 128 is 50 % linear light, i.e. sRGB ~188."""
    gamma_1 = b"curv\0\0\0\0" + struct.pack(">IH", 1, 0x0100)
    return _icc(b"GRAY", b"XYZ ", {b"kTRC": gamma_1, b"wtpt": b"XYZ \0\0\0\0" + _s15(D50)})


# ---------------------------------------------------------------- decode: plain photos


def test_decode_png_photo_exactly() -> None:
    data = content(2).read_bytes()
    photo = decode(data, name="2.png")
    with Image.open(io.BytesIO(data)) as ref:
        expected = ref.convert("RGB")
    assert photo.format == "PNG"
    assert photo.image.mode == "RGB" and photo.size == expected.size
    assert np.array_equal(_px(photo.image), _px(expected))
    assert photo.image.info == {}


def test_read_a_camera_size_jpeg(tmp_path: Path) -> None:
    # 12 MP, as a camera saves it: a bundled photo upscaled.
    path = tmp_path / "camera.jpg"
    _real(3, 4000).resize((4000, 3000), Image.Resampling.BICUBIC).save(path, "JPEG", quality=90)
    photo = read(path)
    assert (photo.format, photo.image.mode, photo.size) == ("JPEG", "RGB", (4000, 3000))


@pytest.mark.parametrize("ext", sorted(imageio.EXTENSIONS))
def test_every_listed_extension_decodes(ext: str) -> None:
    fmt = Image.registered_extensions()[ext]
    options = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    photo = decode(_save(_real(), fmt, **options), name=f"x{ext}")
    assert photo.format == fmt and photo.size == _real().size
    assert np.abs(_px(photo.image) - _px(_real())).mean() < LOSSY


def test_extensions_are_the_photo_formats() -> None:
    expected = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"} | ({".webp"} if features.check("webp") else set())
    assert imageio.EXTENSIONS == expected


def test_formats_outside_extensions_are_refused() -> None:
    with pytest.raises(ImageDecodeError, match=r"^anim\.gif: not an image"):
        decode(_save(_real(), "GIF"), name="anim.gif")


# ---------------------------------------------------------------- EXIF orientation

# Displayed image for each EXIF orientation, from the stored pixels s (rows, cols, channels).
_UPRIGHT = {
    1: lambda s: s,
    2: lambda s: s[:, ::-1],
    3: lambda s: s[::-1, ::-1],
    4: lambda s: s[::-1],
    5: lambda s: s.transpose(1, 0, 2),
    6: lambda s: np.rot90(s, -1),
    7: lambda s: s[::-1, ::-1].transpose(1, 0, 2),
    8: lambda s: np.rot90(s, 1),
}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(orientation: int) -> None:
    stored = decode(_save(_real(3), "JPEG", quality=90)).image  # same pixels, any EXIF
    photo = decode(_save(_real(3), "JPEG", quality=90, exif=_exif(orientation)))
    width, height = stored.size
    assert photo.size == ((height, width) if orientation >= 5 else (width, height))
    assert np.array_equal(_px(photo.image), _UPRIGHT[orientation](_px(stored)))
    exif = _parse_exif(photo.exif)
    assert exif[ORIENTATION] == 1 and exif[MAKE] == "PhotoCam"


def test_orientation_reset_keeps_every_other_exif_byte() -> None:
    photo = decode(_save(_real(), "JPEG", exif=_exif(6)))
    assert photo.exif == _exif(1)


def _big_endian_exif(orientation: int) -> bytes:
    """Motorola-order EXIF (Pillow writes Intel order): IFD0 = Orientation (SHORT), Make "AB"."""
    orientation_entry = struct.pack(">HHIHH", ORIENTATION, 3, 1, orientation, 0)
    make_entry = struct.pack(">HHI4s", MAKE, 2, 3, b"AB\0\0")
    return b"Exif\x00\x00MM\x00*" + struct.pack(">IH", 8, 2) + orientation_entry + make_entry + struct.pack(">I", 0)


def test_big_endian_exif_orientation() -> None:
    photo = decode(_save(_real(), "JPEG", exif=_big_endian_exif(8)))
    width, height = _real().size
    assert photo.size == (height, width)
    assert photo.exif == _big_endian_exif(1)


def test_no_exif_gives_none() -> None:
    photo = decode(_save(_real(), "JPEG"))
    assert photo.exif is None and photo.icc_profile is None


def test_unreadable_exif_is_dropped_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    data = _save(_real(), "JPEG", exif=b"Exif\x00\x00this is not TIFF")
    with caplog.at_level(logging.WARNING, logger="photostyle.imageio"):
        photo = decode(data, name="odd.jpg")
    assert photo.exif is None and photo.size == _real().size
    assert "odd.jpg" in caplog.text and "EXIF" in caplog.text


# ---------------------------------------------------------------- modes


def test_grey_l_becomes_equal_rgb_channels() -> None:
    grey = _real().convert("L")
    photo = decode(_save(grey, "PNG"))
    assert photo.image.mode == "RGB" and photo.size == grey.size
    assert all(np.array_equal(_px(photo.image)[..., c], _px(grey)) for c in range(3))


def test_bilevel_is_black_and_white() -> None:
    bilevel = _real().convert("1")
    photo = decode(_save(bilevel, "PNG"))
    expected = np.where(np.asarray(bilevel), 255, 0)
    assert photo.image.mode == "RGB"
    assert np.array_equal(_px(photo.image)[..., 0], expected) and len(np.unique(expected)) == 2


def test_palette_gives_palette_colours() -> None:
    palette_image = _real().quantize(16)
    photo = decode(_save(palette_image, "PNG"))
    palette = np.array(palette_image.getpalette()[: 16 * 3]).reshape(16, 3)
    assert np.array_equal(_px(photo.image), palette[np.asarray(palette_image)])


def test_palette_transparency_composites_over_white() -> None:
    palette_image = _real().quantize(16)
    indices = np.asarray(palette_image)
    clear = int(indices[0, 0])
    photo = decode(_save(palette_image, "PNG", transparency=clear))
    palette = np.array(palette_image.getpalette()[: 16 * 3]).reshape(16, 3)
    expected = np.where((indices == clear)[..., None], 255, palette[indices])
    assert np.array_equal(_px(photo.image), expected)


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_colour_key_transparency_composites_over_white(mode: str) -> None:
    source = _real(9).convert(mode)
    key = source.getpixel((0, 0))
    photo = decode(_save(source, "PNG", transparency=key))
    colour = _px(source.convert("RGB"))
    keyed = np.all(colour == colour[0, 0], axis=-1)
    assert 0 < keyed.mean() < 0.5
    assert np.array_equal(_px(photo.image), np.where(keyed[..., None], 255, colour))


def _alpha_ramp(size: tuple[int, int]) -> np.ndarray:
    """Alpha 0 on the left third, 128 in the middle, 255 on the right."""
    width, height = size
    alpha = np.full((height, width), 255, dtype=np.uint8)
    alpha[:, : width // 3] = 0
    alpha[:, width // 3 : 2 * width // 3] = 128
    return alpha


@pytest.mark.parametrize("mode", ["LA", "RGBA"])
def test_alpha_composites_over_white(mode: str) -> None:
    colour = _px(_real().convert(mode[:-1]))
    alpha = _alpha_ramp(_real().size)
    # Garbage (pure green / black) under the fully transparent pixels, as editors leave it.
    stored = colour.copy()
    stored[alpha == 0] = [0, 255, 0] if mode == "RGBA" else 0
    planes = [stored[..., c] for c in range(3)] if mode == "RGBA" else [stored]
    source = Image.merge(mode, [Image.fromarray(p.astype(np.uint8)) for p in planes + [alpha]])
    photo = decode(_save(source, "PNG"))
    got = _px(photo.image)
    a = (alpha.astype(np.float64) / 255)[..., None]
    expected = np.rint(colour.reshape(*alpha.shape, -1) * a + 255 * (1 - a))
    assert photo.image.mode == "RGB" and photo.size == source.size
    assert np.array_equal(got[alpha == 0], np.full_like(got[alpha == 0], 255))
    assert np.abs(got - expected).max() <= 1


@pytest.mark.parametrize(("fmt", "mode"), [("PNG", "I;16"), ("TIFF", "I;16B")])
def test_grey_16bit_scales_to_8bit(fmt: str, mode: str) -> None:
    values = np.array([[0, 257, 1000, 32768, 40000, 65535]], dtype=np.uint16)
    source = Image.new(mode, (values.shape[1], 1))
    source.putdata(values.ravel().tolist())
    data = _save(source, fmt)
    with Image.open(io.BytesIO(data)) as raw:
        assert raw.mode == mode  # what Pillow hands us, so the 16-bit path is what is tested
    photo = decode(data)
    assert np.array_equal(_px(photo.image)[..., 0], np.rint(values / 257))
    assert _px(photo.image)[0, 3, 0] == 128 and _px(photo.image)[0, 5, 0] == 255


def test_grey_16bit_photo_keeps_its_tones() -> None:
    grey = _px(_real().convert("L"))
    photo = decode(_save(Image.fromarray((grey * 257).astype(np.uint16)), "PNG"))
    assert np.array_equal(_px(photo.image)[..., 1], grey)


def test_rgb_48bit_png() -> None:
    rgb = _px(_real())
    photo = decode(_png48((rgb * 257).astype(np.uint16)))
    assert np.array_equal(_px(photo.image), rgb)
    corners = decode(_png48(np.array([[[0, 32768, 65535], [65535, 0, 257 * 100]]], dtype=np.uint16)))
    assert _px(corners.image).tolist() == [[[0, 128, 255], [255, 0, 100]]]


def test_int32_tiff_is_read_as_16bit() -> None:
    values = np.array([[0, 32768, 65535, 70000, -5]], dtype=np.int32)
    photo = decode(_save(Image.fromarray(values), "TIFF"))
    assert _px(photo.image)[0, :, 2].tolist() == [0, 128, 255, 255, 0]


def test_float_tiff_is_read_as_unit_range() -> None:
    values = np.array([[0.0, 0.5, 1.0, 2.0, -1.0, np.nan]], dtype=np.float32)
    photo = decode(_save(Image.fromarray(values), "TIFF"))
    assert _px(photo.image)[0, :, 0].tolist() == [0, 128, 255, 255, 0, 0]


def test_cmyk_jpeg_without_profile() -> None:
    photo = decode(_save(_real(7).convert("CMYK"), "JPEG", quality=95))
    assert photo.image.mode == "RGB" and photo.size == _real(7).size and photo.icc_profile is None
    assert np.abs(_px(photo.image) - _px(_real(7))).mean() < 2


def test_cmyk_jpeg_uses_its_icc_profile() -> None:
    c, m, y, k = _real(7).convert("CMYK").split()
    swapped = Image.merge("CMYK", (m, c, y, k))  # right only under _swapped_cmyk_icc
    data = _save(swapped, "JPEG", quality=95, icc_profile=_swapped_cmyk_icc())
    photo = decode(data)
    assert photo.icc_profile is None  # pixels are sRGB now; the CMYK profile no longer applies
    assert np.abs(_px(photo.image) - _px(_real(7))).mean() < 2
    assert np.abs(_px(swapped.convert("RGB")) - _px(_real(7))).mean() > 15  # naive would be wrong


def test_cmyk_with_unusable_profile_falls_back(caplog: pytest.LogCaptureFixture) -> None:
    bad_cmyk_icc = bytearray(_swapped_cmyk_icc())
    bad_cmyk_icc[128 + 4 + 4 : 128 + 4 + 8] = struct.pack(">I", 10**6)  # A2B0 offset past the end
    data = _save(_real().convert("CMYK"), "JPEG", quality=95, icc_profile=bytes(bad_cmyk_icc))
    with caplog.at_level(logging.WARNING, logger="photostyle.imageio"):
        photo = decode(data, name="bad-icc.jpg")
    assert np.abs(_px(photo.image) - _px(_real())).mean() < LOSSY and photo.icc_profile is None
    assert "bad-icc.jpg" in caplog.text


def test_cmyk_profile_without_imagecms_falls_back(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(imageio, "ImageCms", None)  # as in a Pillow built without littleCMS
    data = _save(_real(7).convert("CMYK"), "JPEG", quality=95, icc_profile=_swapped_cmyk_icc())
    with caplog.at_level(logging.WARNING, logger="photostyle.imageio"):
        photo = decode(data, name="cms.jpg")
    assert np.abs(_px(photo.image) - _px(_real(7))).mean() < 2 and photo.icc_profile is None
    assert "cms.jpg" in caplog.text and "ImageCms" in caplog.text


def test_grey_with_icc_profile_is_colour_managed() -> None:
    photo = decode(_save(Image.new("L", (4, 4), 128), "PNG", icc_profile=_linear_gray_icc()))
    assert photo.icc_profile is None
    assert np.abs(_px(photo.image) - 188).max() <= 2


def test_lab_tiff_is_converted_colorimetrically() -> None:
    srgb, lab = ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB")
    lab_image = ImageCms.profileToProfile(_real(7), srgb, lab, outputMode="LAB")
    photo = decode(_save(lab_image, "TIFF"))
    assert photo.icc_profile is None and np.abs(_px(photo.image) - _px(_real(7))).mean() < 2


def test_rgb_icc_profile_is_kept_and_mismatched_one_dropped() -> None:
    srgb = _srgb_icc()
    assert decode(_save(_real(), "PNG", icc_profile=srgb)).icc_profile == srgb
    assert decode(_save(_real().convert("L"), "PNG", icc_profile=srgb)).icc_profile is None


# ---------------------------------------------------------------- bad input


def test_empty_input() -> None:
    with pytest.raises(ImageDecodeError, match=r"^blank\.jpg: empty"):
        decode(b"", name="blank.jpg")


@pytest.mark.parametrize(
    "data",
    [random.Random(0).randbytes(4096), b"Just a text file, no pixels here.\n" * 20],
    ids=["random-bytes", "text"],
)
def test_not_an_image(data: bytes) -> None:
    with pytest.raises(ImageDecodeError, match=r"^in/thing\.png: not an image"):
        decode(data, name="in/thing.png")


def test_truncated_jpeg() -> None:
    data = sample("rocket.jpg").read_bytes()
    with pytest.raises(ImageDecodeError, match=r"^rocket\.jpg: truncated image"):
        decode(data[: len(data) // 2], name="rocket.jpg")


def test_truncated_png() -> None:
    data = content(4).read_bytes()
    with pytest.raises(ImageDecodeError, match=r"^4\.png: truncated image"):
        decode(data[: len(data) // 2], name="4.png")


@pytest.mark.filterwarnings("ignore::UserWarning:PIL.TiffImagePlugin")  # Pillow: "Corrupt EXIF data"
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "TIFF"])
@pytest.mark.parametrize("keep", [8, 40, 200])
def test_cut_inside_the_header(fmt: str, keep: int) -> None:
    data = _save(_real(), fmt, exif=_exif(6), icc_profile=_srgb_icc())
    with pytest.raises(ImageDecodeError, match=r"^head: truncated image or corrupt .*header"):
        decode(data[:keep], name="head")


def test_max_pixels_refuses_a_real_photo() -> None:
    width, height = _real(5, 120).size
    pixels = width * height
    with pytest.raises(ImageDecodeError, match=rf"^p\.png: image too large: .*{pixels} pixels.* {pixels - 1} pixels"):
        decode(_save(_real(5, 120), "PNG"), name="p.png", max_pixels=pixels - 1)
    assert decode(_save(_real(5, 120), "PNG"), max_pixels=width * height).size == (width, height)


_HUGE = (12_000, 10_500)  # 126 MP: over our default limit, under Pillow's hard limit (~179 MP)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_huge_declared_size_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _HUGE[0] * _HUGE[1] > DEFAULT_MAX_PIXELS
    # A header declaring 126 MP with no pixel data: only a check before load() says "too large".
    data = _png(*_HUGE, bit_depth=1, colour_type=0)
    expected = rf"^bomb\.png: image too large: 12000x10500 = 126000000 pixels .* {DEFAULT_MAX_PIXELS} pixels"
    with pytest.raises(ImageDecodeError, match=expected):
        decode(data, name="bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # someone switched Pillow's guard off
    with pytest.raises(ImageDecodeError, match=expected):
        decode(data, name="bomb.png")


@pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")
def test_pillow_bomb_warning_as_error_is_converted() -> None:
    with pytest.raises(ImageDecodeError, match=r"^bomb\.png: image too large"):
        decode(_png(*_HUGE, bit_depth=1, colour_type=0), name="bomb.png")


def test_pillow_bomb_error_is_converted() -> None:
    with pytest.raises(ImageDecodeError, match=r"^bomb\.png: image too large.*400000000"):
        decode(_png(20_000, 20_000, bit_depth=1, colour_type=0), name="bomb.png", max_pixels=10**9)


def test_decoding_leaves_pillow_globals_alone() -> None:
    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    assert before[1] is False
    data = content(4).read_bytes()
    for bad in (data[: len(data) // 2], _png(20_000, 20_000, bit_depth=1, colour_type=0)):
        with pytest.raises(ImageDecodeError):
            decode(bad)
    assert (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES) == before


def test_bad_max_pixels() -> None:
    with pytest.raises(ValueError, match="max_pixels"):
        decode(_save(_real(), "PNG"), max_pixels=0)


def test_read_errors_name_the_path(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo\n")
    with pytest.raises(ImageDecodeError, match=rf"^{re.escape(str(notes))}: not an image"):
        read(notes)
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        read(tmp_path / "missing.jpg")


# ---------------------------------------------------------------- encode


@pytest.mark.parametrize(
    ("fmt", "pillow_format"), [("jpeg", "JPEG"), ("JPG", "JPEG"), ("png", "PNG"), ("WebP", "WEBP")]
)
def test_encode_round_trip(fmt: str, pillow_format: str) -> None:
    photo = decode(encode(_real(), format=fmt, quality=95))
    assert photo.format == pillow_format and photo.size == _real().size
    diff = np.abs(_px(photo.image) - _px(_real()))
    assert diff.max() == 0 if pillow_format == "PNG" else diff.mean() < LOSSY


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
def test_quality_is_passed_through(fmt: str) -> None:
    low, high = (encode(_real(), format=fmt, quality=q) for q in (20, 95))
    error = [np.abs(_px(decode(d).image) - _px(_real())).mean() for d in (low, high)]
    assert len(low) < len(high) and error[0] > error[1]


def test_png_ignores_quality() -> None:
    assert encode(_real(), format="png", quality=1) == encode(_real(), format="png", quality=100)


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp"])
def test_icc_and_exif_survive_a_round_trip(fmt: str) -> None:
    icc = _srgb_icc()
    source = decode(_save(_real(6), "JPEG", quality=95, icc_profile=icc, exif=_exif(6)), name="src.jpg")
    width, height = _real(6).size
    assert source.size == (height, width) and source.icc_profile == icc

    again = decode(encode(source.image, format=fmt, icc_profile=source.icc_profile, exif=source.exif))
    assert again.icc_profile == icc and again.size == (height, width)  # not rotated a second time
    exif = _parse_exif(again.exif)
    assert (exif[ORIENTATION], exif[MAKE], exif[MODEL]) == (1, "PhotoCam", "PC-1")
    assert exif.get_ifd(EXIF_IFD)[DATE_TIME_ORIGINAL] == "2019:05:01 12:00:00"


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp"])
def test_encode_resets_orientation_of_given_exif(fmt: str) -> None:
    again = decode(encode(_real(), format=fmt, exif=_exif(8)))
    assert again.size == _real().size and _parse_exif(again.exif)[ORIENTATION] == 1


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp"])
def test_encode_writes_only_the_metadata_it_is_given(fmt: str) -> None:
    image = _real().copy()
    image.info.update(icc_profile=_srgb_icc(), exif=_exif(6))
    again = decode(encode(image, format=fmt))
    assert again.icc_profile is None and again.exif is None and again.size == _real().size


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"format": "gif"}, "'gif'"),
        ({"format": "tiff"}, "'tiff'"),
        ({"quality": 0}, "quality"),
        ({"quality": 101}, "quality"),
        ({"quality": 90.0}, "quality"),
        ({"exif": b"Exif\x00\x00garbage"}, "EXIF"),
    ],
)
def test_encode_rejects_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode(_real(), **kwargs)


def test_encode_rejects_non_rgb() -> None:
    with pytest.raises(ValueError, match="'RGBA'"):
        encode(_real().convert("RGBA"))


# ---------------------------------------------------------------- tensors


def test_tensor_round_trip_is_exact() -> None:
    image = decode(content(7).read_bytes()).image
    tensor = to_tensor(image)
    assert tensor.dtype == torch.float32 and tensor.shape == (3, image.height, image.width)
    assert 0.0 <= tensor.min() and tensor.max() <= 1.0
    assert torch.equal(tensor[:, 5, 9], torch.tensor(image.getpixel((9, 5)), dtype=torch.float32) / 255)
    assert np.array_equal(_px(to_image(tensor)), _px(image))
    assert np.array_equal(_px(to_image(tensor[None])), _px(image))


def test_to_image_clamps_and_rounds() -> None:
    row = torch.tensor([-0.5, 1.5, 100.4 / 255, 100.6 / 255], dtype=torch.float64)
    tensor = row.reshape(1, 1, 4).expand(3, 1, 4)
    image = to_image(tensor)
    assert image.mode == "RGB" and image.size == (4, 1)
    assert _px(image)[0, :, 0].tolist() == [0, 255, 100, 101]


@pytest.mark.parametrize(
    "tensor",
    [
        torch.zeros(4, 2, 2),
        torch.zeros(2, 3, 2, 2),
        torch.zeros(2, 2),
        torch.zeros(3, 2, 2, dtype=torch.uint8),
        torch.full((3, 2, 2), float("nan")),
    ],
    ids=["4-channels", "batch-of-2", "2d", "uint8", "nan"],
)
def test_to_image_rejects_bad_tensors(tensor: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="tensor"):
        to_image(tensor)


def test_to_tensor_rejects_non_rgb() -> None:
    with pytest.raises(ValueError, match="'L'"):
        to_tensor(_real().convert("L"))

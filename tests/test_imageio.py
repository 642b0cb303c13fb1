"""load_image / save_image: every awkward input is generated here with PIL."""
from __future__ import annotations

import io
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from nullswap_sdk.errors import (
    ConfigError,
    ImageDecodeError,
    ImageTooLargeError,
    InputError,
    NullSwapError,
    OutputExistsError,
    UnsupportedImageError,
)
from nullswap_sdk.imageio import load_image, save_image


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _gradient(h=48, w=64) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x + y) % 256], -1).astype(np.uint8)


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG whose IHDR claims w x h but holds almost no data: a decompression-bomb header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
            + chunk(b"IEND", b""))


def _raises(exc, fn, *a, **kw):
    with pytest.raises(exc) as ei:
        fn(*a, **kw)
    assert ei.value.hint, "every SDK error must carry a fix hint"
    assert "Traceback" not in str(ei.value)
    return ei.value


# ---------------------------------------------------------------- bad inputs
def test_empty_file_and_bytes(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    _raises(ImageDecodeError, load_image, p)
    _raises(ImageDecodeError, load_image, b"")


def test_truncated_jpeg_fails_instead_of_grey_fill():
    data = _encode(Image.fromarray(np.random.default_rng(0).integers(0, 256, (120, 160, 3), np.uint8)),
                   "JPEG", quality=90)
    for cut in (len(data) // 2, len(data) - 64, 200):
        err = _raises(ImageDecodeError, load_image, data[:cut])
        assert err.__cause__ is None and err.__suppress_context__  # no PIL traceback chained


def test_jpeg_claiming_more_pixels_than_its_bytes_can_hold_fails_fast():
    """A SOF size edited to 9000x9000 on a 160x120 JPEG: libjpeg would grey-fill 81 MP (seconds,
    ~250 MB); the loader refuses it from the header. Flat grey JPEGs, the densest real ones,
    still load (fuzz finding, issue 12 item 5)."""
    import time

    data = bytearray(_encode(Image.fromarray(np.random.default_rng(0).integers(0, 256, (120, 160, 3), np.uint8)),
                             "JPEG", quality=90))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", 9000, 9000)
    t0 = time.perf_counter()
    err = _raises(ImageDecodeError, load_image, bytes(data))
    assert "9000x9000" in err.message and time.perf_counter() - t0 < 1.0
    flat = _encode(Image.new("L", (4000, 3000), 128), "JPEG", quality=1, progressive=True, optimize=True)
    assert load_image(flat).rgb.shape == (3000, 4000, 3)


def test_random_bytes_and_text(tmp_path):
    _raises(ImageDecodeError, load_image, np.random.default_rng(1).bytes(4096))
    p = tmp_path / "notes.png"
    p.write_text("definitely not a PNG")
    _raises(ImageDecodeError, load_image, p)


def test_missing_path_and_bad_type(tmp_path):
    _raises(InputError, load_image, tmp_path / "nope.jpg")
    _raises(InputError, load_image, tmp_path)
    _raises(UnsupportedImageError, load_image, 12345)


def test_header_bomb_is_rejected_before_decoding():
    # Beyond PIL's own limit: its DecompressionBombError becomes ours.
    _raises(ImageTooLargeError, load_image, _png_header_only(100_000, 100_000))
    # Below PIL's limit but above ours: our header check fires before any decode.
    err = _raises(ImageTooLargeError, load_image, _png_header_only(5000, 5000), max_pixels=1_000_000)
    assert "5000x5000" in err.message


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "TIFF"])
def test_multi_frame_is_unsupported(fmt):
    frames = [Image.fromarray(np.full((16, 16, 3), v, np.uint8)) for v in (0, 128, 255)]
    data = _encode(frames[0], fmt, save_all=True, append_images=frames[1:])
    err = _raises(UnsupportedImageError, load_image, data)
    assert "frame" in err.message


def test_mpo_uses_primary_image():
    """Camera JPEGs often carry a second MPO frame (preview/depth): not a multi-frame photo."""
    a, b = _gradient(), 255 - _gradient()
    data = _encode(Image.fromarray(a), "MPO", save_all=True, append_images=[Image.fromarray(b)], quality=95)
    im = load_image(data)
    assert im.format == "JPEG" and any("MPO" in n for n in im.notes)
    assert np.abs(im.rgb.astype(int) - a).mean() < 3


# ---------------------------------------------------------------- pixel modes
def test_rgb_png_roundtrip_exact():
    a = _gradient()
    im = load_image(_encode(Image.fromarray(a), "PNG"))
    assert im.format == "PNG" and im.mode == "RGB" and im.alpha is None and im.notes == []
    assert im.rgb.dtype == np.uint8 and im.rgb.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(im.rgb, a)


def test_grayscale_and_one_bit():
    g = _gradient()[:, :, 0]
    im = load_image(_encode(Image.fromarray(g, "L"), "PNG"))
    assert im.mode == "L" and im.rgb.shape == g.shape + (3,)
    for c in range(3):
        np.testing.assert_array_equal(im.rgb[:, :, c], g)
    bw = Image.fromarray(g > 127).convert("1")
    im1 = load_image(_encode(bw, "PNG"))
    assert im1.mode == "1" and set(np.unique(im1.rgb)) <= {0, 255}


def test_rgba_keeps_alpha():
    a = _gradient()
    alpha = np.tile(np.linspace(0, 255, a.shape[1]).astype(np.uint8), (a.shape[0], 1))
    im = load_image(_encode(Image.fromarray(np.dstack([a, alpha]), "RGBA"), "PNG"))
    np.testing.assert_array_equal(im.rgb, a)
    np.testing.assert_array_equal(im.alpha, alpha)


def test_palette_with_transparency_becomes_alpha():
    p = Image.new("P", (20, 10))
    p.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    p.paste(1, (10, 0, 20, 10))
    data = _encode(p, "PNG", transparency=0)  # index 0 (red) transparent
    im = load_image(data)
    assert im.mode == "P" and im.alpha is not None
    assert (im.alpha[:, :10] == 0).all() and (im.alpha[:, 10:] == 255).all()
    assert (im.rgb[:, 10:] == [0, 255, 0]).all()
    opaque = load_image(_encode(p, "PNG"))
    assert opaque.alpha is None and any("palette" in n for n in opaque.notes)


def test_cmyk_jpeg():
    cmyk = Image.new("CMYK", (32, 32), (0, 255, 255, 0))  # pure red ink mix
    im = load_image(_encode(cmyk, "JPEG", quality=95))
    assert im.mode == "CMYK" and im.rgb.shape == (32, 32, 3)
    r, g, b = im.rgb.reshape(-1, 3).mean(0)
    assert r > 200 and g < 60 and b < 60
    assert any("CMYK" in n for n in im.notes)


def test_16bit_png_and_float_tiff_scaled():
    v = (np.arange(64 * 32, dtype=np.uint32) * 31 % 65536).astype(np.uint16).reshape(32, 64)
    im = load_image(_encode(Image.fromarray(v), "PNG"))
    assert im.mode.startswith("I") and im.rgb.dtype == np.uint8
    np.testing.assert_array_equal(im.rgb[:, :, 0], np.rint(v / 257.0).astype(np.uint8))
    assert any("8-bit" in n for n in im.notes)
    f = np.linspace(0, 1, 32 * 16, dtype=np.float32).reshape(16, 32)
    imf = load_image(_encode(Image.fromarray(f, "F"), "TIFF"))
    assert imf.mode == "F" and imf.rgb[0, 0, 0] == 0 and imf.rgb[-1, -1, 0] == 255


def test_exif_orientation_6_is_applied_once():
    a = np.zeros((40, 60, 3), np.uint8)
    a[:10, :5] = 255  # marker in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "TestCam"
    im = load_image(_encode(Image.fromarray(a), "JPEG", quality=95, exif=exif.tobytes()))
    # Orientation 6 = rotate 90° clockwise for display: stored top-left → displayed top-right.
    assert im.rgb.shape == (60, 40, 3)
    ys, xs = np.nonzero(im.rgb.mean(2) > 128)
    assert ys.max() < 8 and xs.min() > 28
    kept = Image.Exif()
    kept.load(im.exif)
    assert 0x0112 not in kept and kept[0x010F] == "TestCam"


# ---------------------------------------------------------------- saving
def test_save_is_atomic_and_refuses_overwrite(tmp_path):
    a = _gradient()
    p = save_image(tmp_path / "out.png", a)
    np.testing.assert_array_equal(load_image(p).rgb, a)
    before = p.read_bytes()
    _raises(OutputExistsError, save_image, p, 255 - a)
    assert p.read_bytes() == before
    save_image(p, 255 - a, overwrite=True)
    np.testing.assert_array_equal(load_image(p).rgb, 255 - a)
    assert sorted(os.listdir(tmp_path)) == ["out.png"]  # no temp files left behind
    assert (p.stat().st_mode & 0o777) != 0o600  # not mkstemp's private mode


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", boom)
    _raises(InputError, save_image, tmp_path / "x.jpg", _gradient())
    assert os.listdir(tmp_path) == []


def test_jpeg_444_quality_and_exif(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # must not rotate the already-upright pixels again
    exif[0x010F] = "Cam"
    p = save_image(tmp_path / "a.jpg", _gradient(), quality=95, exif=exif.tobytes())
    with Image.open(p) as im:
        assert JpegImagePlugin.get_sampling(im) == 0  # 4:4:4
        assert im.getexif().get(0x0112, 1) == 1 and im.getexif()[0x010F] == "Cam"
    p2 = save_image(tmp_path / "b.jpeg", _gradient(), quality=75)
    with Image.open(p2) as im:
        assert JpegImagePlugin.get_sampling(im) == 2  # 4:2:0


def test_alpha_reattached_or_flattened(tmp_path):
    a = _gradient()
    alpha = np.full(a.shape[:2], 255, np.uint8)
    alpha[:, :10] = 0
    for name in ("a.png", "a.webp", "a.tif"):
        back = load_image(save_image(tmp_path / name, a, alpha=alpha, quality=100))
        np.testing.assert_array_equal(back.alpha, alpha)
        np.testing.assert_array_equal(back.rgb[:, 10:], a[:, 10:])  # lossless everywhere here
    j = load_image(save_image(tmp_path / "a.jpg", a, alpha=alpha))
    assert j.alpha is None and j.rgb[:, :8].min() > 240  # flattened over white
    bmp = load_image(save_image(tmp_path / "a.bmp", a))
    np.testing.assert_array_equal(bmp.rgb, a)


def test_save_rejects_bad_inputs(tmp_path):
    _raises(ConfigError, save_image, tmp_path / "x.gifx", _gradient())
    _raises(UnsupportedImageError, save_image, tmp_path / "x.png", _gradient().astype(np.float32))
    _raises(UnsupportedImageError, save_image, tmp_path / "x.png", _gradient()[:, :, 0])
    _raises(UnsupportedImageError, save_image, tmp_path / "x.png", _gradient(),
            alpha=np.zeros((3, 3), np.uint8))
    _raises(InputError, save_image, tmp_path / "missing" / "x.png", _gradient())
    _raises(ConfigError, save_image, tmp_path / "x.jpg", _gradient(), quality=0)
    assert issubclass(OutputExistsError, NullSwapError)

"""Seed files and byte mutations for the input fuzz test (tests/test_fuzz_inputs.py).

Seeds are real photos (an LFW face, downscaled so a case stays cheap, or a synthetic picture
when ../shared/data is absent) encoded as JPEG (baseline, progressive, CMYK, EXIF-rotated),
PNG (RGB, RGBA, palette, 16-bit grey), WebP (lossy, lossless), TIFF (deflate, raw strips),
GIF and BMP. Mutations are what broken uploads and hostile files look like: truncations, bit
flips, header-byte edits, spliced or deleted runs, and absurd dimensions written into each
format's own size fields (PNG with a valid CRC, so the decoder believes them).
"""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np

__all__ = ["seed_files", "mutate", "ABSURD"]

# Sizes a hostile header claims: zero, one, just past 16 bits, huge, and in-limit-but-big.
ABSURD = (0, 1, 2, 255, 9_000, 12_000, 65_535, 65_536, 1 << 24, (1 << 31) - 1, (1 << 32) - 1)


def _photo() -> np.ndarray:
    """A 96x96 RGB real face (LFW) when the data is here, else a synthetic picture."""
    from PIL import Image

    from tests.conftest import DATA_DIR

    f = DATA_DIR / "lfw" / "Aaron_Eckhart" / "Aaron_Eckhart_0001.jpg"
    if f.is_file():
        return np.asarray(Image.open(f).convert("RGB").resize((96, 96), Image.LANCZOS))
    y, x = np.mgrid[0:96, 0:96]
    return np.stack([x * 2, y * 2, (x + y) % 256], -1).astype(np.uint8)


def seed_files() -> dict[str, bytes]:
    """name -> encoded bytes; every seed decodes cleanly before mutation."""
    from PIL import Image

    rgb = _photo()
    im = Image.fromarray(rgb)
    out: dict[str, bytes] = {}

    def save(name: str, img, fmt: str, **kw) -> None:
        buf = io.BytesIO()
        img.save(buf, fmt, **kw)
        out[name] = buf.getvalue()

    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: the loader transposes
    save("baseline.jpg", im, "JPEG", quality=90)
    save("progressive.jpg", im, "JPEG", quality=80, progressive=True, exif=exif.tobytes())
    save("cmyk.jpg", im.convert("CMYK"), "JPEG", quality=90)
    save("rgb.png", im, "PNG")
    rgba = im.copy()
    rgba.putalpha(Image.fromarray(np.tile(np.arange(96, dtype=np.uint8) * 2, (96, 1))))
    save("rgba.png", rgba, "PNG")
    save("palette.png", im.convert("P"), "PNG")
    save("grey16.png", Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)), "PNG")
    save("lossy.webp", im, "WEBP", quality=80)
    save("lossless.webp", rgba, "WEBP", lossless=True)
    save("deflate.tif", im, "TIFF", compression="tiff_deflate")
    save("raw.tif", im, "TIFF")
    save("image.gif", im.convert("P"), "GIF")
    save("image.bmp", im, "BMP")
    return out


# -- format-aware size edits ------------------------------------------------------------

def _png_dims(b: bytearray, w: int, h: int) -> None:
    if b[12:16] != b"IHDR":
        return
    b[16:24] = struct.pack(">II", w & 0xFFFFFFFF, h & 0xFFFFFFFF)
    b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])))  # a valid CRC: the size is believed


def _jpeg_dims(b: bytearray, w: int, h: int) -> None:
    i = 2
    while i + 9 < len(b):
        if b[i] != 0xFF:
            return
        marker, length = b[i + 1], struct.unpack(">H", b[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            b[i + 5:i + 9] = struct.pack(">HH", h & 0xFFFF, w & 0xFFFF)
            return
        i += 2 + length


def _gif_dims(b: bytearray, w: int, h: int) -> None:
    b[6:10] = struct.pack("<HH", w & 0xFFFF, h & 0xFFFF)  # logical screen
    j = b.find(b"\x2c", 13)  # first image descriptor (a guess: enough for a fuzzer)
    if j > 0 and j + 9 <= len(b):
        b[j + 5:j + 9] = struct.pack("<HH", w & 0xFFFF, h & 0xFFFF)


def _bmp_dims(b: bytearray, w: int, h: int) -> None:
    b[18:26] = struct.pack("<ii", _i32(w), _i32(h))


def _i32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >= 1 << 31 else v


def _webp_dims(b: bytearray, w: int, h: int) -> None:
    kind = bytes(b[12:16])
    if kind == b"VP8X" and len(b) >= 30:
        b[24:27] = ((w - 1) & 0xFFFFFF).to_bytes(3, "little")
        b[27:30] = ((h - 1) & 0xFFFFFF).to_bytes(3, "little")
    elif kind == b"VP8L" and len(b) >= 25:
        bits = ((w - 1) & 0x3FFF) | (((h - 1) & 0x3FFF) << 14) | (int.from_bytes(b[21:25], "little") & ~0xFFFFFFF)
        b[21:25] = (bits & 0xFFFFFFFF).to_bytes(4, "little")
    elif kind == b"VP8 " and len(b) >= 30:
        b[26:30] = struct.pack("<HH", w & 0x3FFF, h & 0x3FFF)


def _tiff_dims(b: bytearray, w: int, h: int) -> None:
    if b[:2] not in (b"II", b"MM") or len(b) < 8:
        return
    e = "<" if b[:2] == b"II" else ">"
    ifd = struct.unpack(e + "I", b[4:8])[0]
    if ifd + 2 > len(b):
        return
    for k in range(struct.unpack(e + "H", b[ifd:ifd + 2])[0]):
        at = ifd + 2 + 12 * k
        if at + 12 > len(b):
            return
        tag, typ = struct.unpack(e + "HH", b[at:at + 4])
        if tag in (256, 257):
            v = w if tag == 256 else h
            if typ == 3:  # SHORT
                b[at + 8:at + 10] = struct.pack(e + "H", v & 0xFFFF)
            else:
                b[at + 8:at + 12] = struct.pack(e + "I", v & 0xFFFFFFFF)


_DIMS = {".png": _png_dims, ".jpg": _jpeg_dims, ".gif": _gif_dims, ".bmp": _bmp_dims,
         ".webp": _webp_dims, ".tif": _tiff_dims}


def mutate(data: bytes, name: str, ops) -> bytes:
    """Apply ``ops`` in order. Each op is a tuple:

    ("truncate", frac) keep the first frac of the bytes; ("flip", frac, bit) flip one bit;
    ("header", pos, value) set byte pos (< 64) of the header; ("splice", frac, n, value)
    insert n copies of a byte; ("delete", frac, n) drop n bytes; ("dims", w, h) write a size
    into the format's own width/height fields.
    """
    b = bytearray(data)
    for op in ops:
        kind = op[0]
        at = lambda frac: min(len(b), int(frac * len(b)))  # noqa: E731
        if kind == "truncate":
            del b[at(op[1]):]
        elif kind == "flip" and b:
            i = min(len(b) - 1, at(op[1]))
            b[i] ^= 1 << op[2]
        elif kind == "header" and op[1] < len(b):
            b[op[1]] = op[2]
        elif kind == "splice":
            i = at(op[1])
            b[i:i] = bytes([op[3]]) * op[2]
        elif kind == "delete":
            i = at(op[1])
            del b[i:i + op[2]]
        elif kind == "dims":
            _DIMS[name[name.rindex("."):]](b, op[1], op[2])
    return bytes(b)

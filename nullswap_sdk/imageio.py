"""Image file I/O that never lets a PIL traceback escape.

``load_image`` turns whatever a user hands us (path or bytes; JPEG/PNG/WebP/TIFF/BMP/GIF in
any common PIL mode) into an upright ``HxWx3 uint8`` RGB array plus the metadata needed to
write the result back faithfully (alpha, EXIF without orientation, ICC profile).
``save_image`` writes atomically and refuses to clobber files unless asked.

Policy decisions (documented so apps can rely on them):
- Multi-frame files (animated GIF/WebP/PNG, multi-page TIFF) are rejected with
  ``UnsupportedImageError``: cloaking only the first frame would leave the others exposed.
  MPO (camera JPEGs carrying a thumbnail/depth frame) is the exception: the primary image
  is used and reported as ``"JPEG"``.
- Truncated files fail (``ImageFile.LOAD_TRUNCATED_IMAGES`` is left False), never grey-fill.
- An ICC profile is kept only when it describes RGB data (a Gray/CMYK profile would be wrong
  on the converted RGB pixels); CMYK with a profile is colour-managed to sRGB.
"""
from __future__ import annotations

import io
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import (
    ConfigError,
    ImageDecodeError,
    ImageTooLargeError,
    InputError,
    OutputExistsError,
    UnsupportedImageError,
)

__all__ = ["LoadedImage", "load_image", "save_image", "encode_image", "FORMAT_BY_SUFFIX"]

_ORIENTATION_TAG = 0x0112
FORMAT_BY_SUFFIX = {
    ".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".png": "PNG", ".webp": "WEBP",
    ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP",
}
_ALPHA_FORMATS = {"PNG", "WEBP", "TIFF"}
_EXIF_FORMATS = {"JPEG", "PNG", "WEBP", "TIFF"}
_ICC_FORMATS = {"JPEG", "PNG", "WEBP", "TIFF"}

# A Huffman-coded JPEG spends at least one bit per 8x8 block even on flat grey (≤ 512 px per
# byte, measured ≤ 170 for PIL's smallest); far more pixels per byte means the header lies
# about the size (libjpeg would grey-fill the rest: a decode bomb, never a real photo).
_JPEG_MAX_PX_PER_BYTE = 2048

# Read once at import: querying the umask later means setting it, which races with threads.
_UMASK = os.umask(0)
os.umask(_UMASK)


@dataclass
class LoadedImage:
    """A decoded, upright image. ``rgb`` is HxWx3 uint8 C-contiguous, RGB order."""

    rgb: np.ndarray
    alpha: np.ndarray | None  # HxW uint8, or None when the source had no transparency
    format: str  # PIL format name of the source, e.g. "JPEG", "PNG", "WEBP"
    mode: str  # PIL mode of the source before conversion, e.g. "RGB", "P", "I;16"
    exif: bytes | None = None  # orientation tag removed: pixels are already upright
    icc_profile: bytes | None = None  # only an RGB profile; None after colour management
    notes: list[str] = field(default_factory=list)  # conversions that were applied

    @property
    def shape(self) -> tuple[int, int]:
        return self.rgb.shape[:2]


def _pil():
    from PIL import Image, ImageFile

    return Image, ImageFile


def _icc_colour_space(icc: bytes) -> bytes:
    return icc[16:20] if len(icc) >= 20 else b""


def _transpose_for_orientation(img, exif_obj, notes):
    """Apply EXIF orientation 2..8 and return the image; drop the tag from ``exif_obj``."""
    Image, _ = _pil()
    T = Image.Transpose
    ops = {
        2: [T.FLIP_LEFT_RIGHT], 3: [T.ROTATE_180], 4: [T.FLIP_TOP_BOTTOM],
        5: [T.TRANSPOSE], 6: [T.ROTATE_270], 7: [T.TRANSVERSE], 8: [T.ROTATE_90],
    }
    orientation = exif_obj.get(_ORIENTATION_TAG)
    if orientation is None or orientation == 1:
        return img, False  # keep the EXIF bytes untouched
    try:
        orientation = int(orientation)
    except (TypeError, ValueError):
        orientation = 0  # junk value: drop the tag, leave the pixels
    del exif_obj[_ORIENTATION_TAG]
    for op in ops.get(orientation, []):
        img = img.transpose(op)
    if orientation in ops:
        notes.append(f"applied EXIF orientation {orientation}")
    return img, True


def _scale_to_uint8(arr: np.ndarray, mode: str, notes: list[str]) -> np.ndarray:
    """16-bit / 32-bit int / float grey → 8-bit. Known ranges map linearly; else min-max."""
    a = arr.astype(np.float64)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if mode.startswith("I;16") or (mode == "I" and lo >= 0 and hi <= 65535):
        out, how = a / 257.0, "0..65535 → 0..255"
    elif mode == "F" and lo >= 0 and hi <= 1.0:
        out, how = a * 255.0, "0..1 → 0..255"
    elif mode == "I" and lo >= 0 and hi <= 255:
        out, how = a, "already 0..255"
    else:
        span = hi - lo if hi > lo else 1.0
        out, how = (a - lo) / span * 255.0, f"min-max {lo:g}..{hi:g} → 0..255"
    notes.append(f"scaled {mode} to 8-bit ({how})")
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _to_rgb_alpha(img, icc: bytes | None, notes: list[str]):
    """Convert any supported PIL mode to (rgb uint8 HxWx3, alpha HxW or None, icc)."""
    Image, _ = _pil()
    mode = img.mode
    alpha = None
    if mode == "RGB":
        pass
    elif mode in ("RGBA", "RGBa", "LA", "La", "PA"):
        if mode in ("RGBa", "La"):
            img = img.convert("RGBA" if mode == "RGBa" else "LA")
            notes.append(f"un-premultiplied {mode}")
        alpha = np.asarray(img.getchannel("A"), dtype=np.uint8)
        img = img.convert("RGB")
        if mode not in ("RGBA", "RGBa"):
            notes.append(f"converted {mode} to RGB + alpha")
    elif mode == "P":
        if "transparency" in img.info:
            img = img.convert("RGBA")
            alpha = np.asarray(img.getchannel("A"), dtype=np.uint8)
            notes.append("converted palette with transparency to RGB + alpha")
        else:
            notes.append("converted palette to RGB")
        img = img.convert("RGB")
    elif mode in ("L", "1"):
        transparency = img.info.get("transparency")
        if mode == "L" and isinstance(transparency, int):
            alpha = np.where(np.asarray(img) == transparency, 0, 255).astype(np.uint8)
        img = img.convert("L").convert("RGB")
        notes.append(f"converted {mode} to RGB")
    elif mode == "CMYK":
        if icc and _icc_colour_space(icc) == b"CMYK":
            from PIL import ImageCms

            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            img = ImageCms.profileToProfile(img, src, ImageCms.createProfile("sRGB"),
                                            outputMode="RGB")
            notes.append("colour-managed CMYK to sRGB with the embedded profile")
        else:
            img = img.convert("RGB")
            notes.append("converted CMYK to RGB (no profile: naive conversion)")
        icc = None  # pixels are sRGB now; the CMYK profile no longer applies
    elif mode.startswith("I") or mode == "F":
        grey = _scale_to_uint8(np.asarray(img), mode, notes)
        if grey.ndim != 2:
            raise UnsupportedImageError(f"unexpected {mode} array shape {grey.shape}")
        rgb = np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
        return rgb, None, icc if icc and _icc_colour_space(icc) == b"RGB " else None
    elif mode in ("YCbCr", "LAB", "HSV"):
        img = img.convert("RGB")
        notes.append(f"converted {mode} to RGB")
    else:
        raise UnsupportedImageError(f"unsupported pixel mode {mode!r}")
    if icc and _icc_colour_space(icc) != b"RGB ":
        notes.append("dropped a non-RGB ICC profile")
        icc = None
    rgb = np.ascontiguousarray(np.asarray(img, dtype=np.uint8))
    return rgb, alpha, icc


def load_image(src: str | os.PathLike | bytes, *, max_pixels: int = 100_000_000,
               name: str | None = None) -> LoadedImage:
    """Decode ``src`` (path or encoded bytes) into an upright RGB ``LoadedImage``.

    ``name`` labels the image in error messages (default: the path, or ``<bytes>``), e.g. the
    file or URI that encoded bytes were read from.

    Raises ``ImageDecodeError`` (empty, truncated, corrupt, not an image),
    ``ImageTooLargeError`` (header says more than ``max_pixels``; checked before decoding),
    ``UnsupportedImageError`` (multi-frame, unknown pixel mode), ``InputError`` (no such file).
    """
    Image, _ = _pil()
    if isinstance(src, (bytes, bytearray, memoryview)):
        name, size = name or "<bytes>", len(src)
        opener = lambda: io.BytesIO(bytes(src))  # noqa: E731
    elif isinstance(src, (str, os.PathLike)):
        path = Path(src)
        name = name or str(path)
        try:
            if path.is_dir():
                raise InputError(f"{name} is a folder, not an image file", hint="pass a file")
            size = path.stat().st_size
        except FileNotFoundError:
            raise InputError(f"no such file: {name}", hint="check the path") from None
        except OSError as e:
            raise InputError(f"cannot read {name}: {e}", hint="check permissions") from None
        opener = lambda: open(path, "rb")  # noqa: E731  PIL reads the header only at first
    else:
        raise UnsupportedImageError(f"load_image takes a path or bytes, got {type(src).__name__}")
    if size == 0:
        raise ImageDecodeError(f"{name} is empty (0 bytes)")

    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            # Our own max_pixels check replaces PIL's global, process-wide bomb warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with opener() as fh, Image.open(fh) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise ImageTooLargeError(
                        f"{name} is {w}x{h} = {w * h:,} pixels, more than max_pixels={max_pixels:,}")
                if w == 0 or h == 0:
                    raise ImageDecodeError(f"{name} has zero size {w}x{h}")
                fmt, mode = img.format or "UNKNOWN", img.mode
                if fmt in ("JPEG", "MPO") and w * h > _JPEG_MAX_PX_PER_BYTE * size:
                    raise ImageDecodeError(
                        f"{name} claims {w}x{h} pixels in only {size:,} bytes: its header is corrupt")
                if getattr(img, "n_frames", 1) > 1:
                    if fmt != "MPO":
                        raise UnsupportedImageError(
                            f"{name} has {img.n_frames} frames ({fmt}); multi-frame images are not "
                            "cloaked",
                            hint="export the frame you need as PNG/JPEG (for video, cloak the frames "
                            "with the video API) so no frame is left unprotected")
                    notes.append(f"MPO with {img.n_frames} frames: used the primary image")
                    fmt = "JPEG"
                img.load()  # full decode happens here; truncation raises OSError
                icc = img.info.get("icc_profile") or None
                exif_obj = img.getexif()
                raw_exif = img.info.get("exif") or None
                upright, had_tag = _transpose_for_orientation(img, exif_obj, notes)
                if had_tag:
                    exif = exif_obj.tobytes() if len(exif_obj) else None
                else:
                    exif = raw_exif if isinstance(raw_exif, bytes) else None
                rgb, alpha, icc = _to_rgb_alpha(upright, icc, notes)
    except (ImageTooLargeError, UnsupportedImageError, ImageDecodeError):
        raise
    except Image.DecompressionBombError as e:
        raise ImageTooLargeError(f"{name}: {e}") from None
    except Image.UnidentifiedImageError:
        raise ImageDecodeError(f"{name} is not an image in a format PIL can read") from None
    except PermissionError as e:
        raise InputError(f"cannot read {name}: {e}", hint="check permissions") from None
    except MemoryError:
        raise ImageTooLargeError(f"{name}: out of memory while decoding") from None
    except Exception as e:  # OSError (truncated), SyntaxError/ValueError (corrupt headers), ...
        raise ImageDecodeError(f"{name} cannot be decoded: {type(e).__name__}: {e}") from None
    return LoadedImage(rgb=rgb, alpha=alpha, format=fmt, mode=mode, exif=exif,
                       icc_profile=icc, notes=notes)


def _check_array(rgb, alpha):
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        got = f"{type(rgb).__name__} {getattr(rgb, 'shape', '')} {getattr(rgb, 'dtype', '')}"
        raise UnsupportedImageError(f"save_image expects HxWx3 uint8 RGB, got {got}")
    if alpha is not None:
        if not isinstance(alpha, np.ndarray) or alpha.dtype != np.uint8 or alpha.shape != rgb.shape[:2]:
            raise UnsupportedImageError(
                f"alpha must be HxW uint8 matching rgb {rgb.shape[:2]}, got "
                f"{getattr(alpha, 'shape', None)} {getattr(alpha, 'dtype', None)}")


def _exif_without_orientation(exif: bytes) -> bytes:
    """Arrays in this SDK are always upright: an orientation tag would rotate them twice."""
    Image, _ = _pil()
    try:
        e = Image.Exif()
        e.load(exif)
    except Exception:
        return exif  # unparsable: pass through as the user gave it
    if e.get(_ORIENTATION_TAG, 1) != 1:
        e[_ORIENTATION_TAG] = 1
        return e.tobytes()
    return exif


def _output_format(format: str | None, path: Path | None) -> str:
    fmt = (format or (FORMAT_BY_SUFFIX.get(path.suffix.lower(), "") if path else "")).upper()
    fmt = {"JPG": "JPEG", "TIF": "TIFF"}.get(fmt, fmt)
    if fmt not in set(FORMAT_BY_SUFFIX.values()):
        what = f"of {path.name!r} " if path else ""
        raise ConfigError(f"cannot tell the output format {what}(format={format!r})",
                          hint="use a .jpg/.png/.webp/.tif/.bmp suffix or pass format=")
    return fmt


def _encoder_input(rgb, fmt, quality, alpha, exif, icc_profile):
    """The PIL image and ``Image.save`` options ``save_image`` and ``encode_image`` share."""
    Image, _ = _pil()
    if alpha is not None and fmt in _ALPHA_FORMATS:
        img = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    elif alpha is not None:
        a = alpha.astype(np.float32)[:, :, None] / 255.0
        flat = np.rint(rgb * a + 255.0 * (1.0 - a)).astype(np.uint8)
        img = Image.fromarray(flat, "RGB")
    else:
        img = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
    kw: dict = {}
    if exif and fmt in _EXIF_FORMATS:
        kw["exif"] = _exif_without_orientation(exif)
    if icc_profile and fmt in _ICC_FORMATS:
        kw["icc_profile"] = icc_profile
    if fmt == "JPEG":
        kw.update(quality=int(quality), subsampling=0 if quality >= 90 else 2)
    elif fmt == "WEBP":
        kw.update(quality=int(quality), lossless=quality >= 100, method=4)
    elif fmt == "TIFF":
        kw.update(compression="tiff_deflate")

    return img, kw


def encode_image(rgb: np.ndarray, format: str, *, quality: int = 95, alpha: np.ndarray | None = None,
                 exif: bytes | None = None, icc_profile: bytes | None = None) -> bytes:
    """``rgb`` (HxWx3 uint8) encoded in memory as ``format`` (JPEG/PNG/WEBP/TIFF/BMP).

    The same encoder settings as ``save_image`` (so the bytes equal the file it writes);
    only the metadata passed in is written.
    """
    _check_array(rgb, alpha)
    fmt = _output_format(format, None)
    if not 1 <= int(quality) <= 100:
        raise ConfigError(f"quality must be 1..100, got {quality}")
    img, kw = _encoder_input(rgb, fmt, quality, alpha, exif, icc_profile)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def save_image(path: str | os.PathLike, rgb: np.ndarray, *, format: str | None = None,
               quality: int = 95, alpha: np.ndarray | None = None, exif: bytes | None = None,
               icc_profile: bytes | None = None, overwrite: bool = False) -> Path:
    """Write ``rgb`` (HxWx3 uint8) atomically to ``path`` and return the path.

    ``format`` defaults from the suffix (JPEG/PNG/WEBP/TIFF/BMP). JPEG uses 4:4:4 chroma
    when ``quality >= 90`` (4:2:0 would smear a fine perturbation); WebP ``quality=100`` is
    lossless. ``alpha`` is kept for PNG/WebP/TIFF; JPEG/BMP get the image flattened over
    white (transparent areas of a PNG often hold black or junk RGB). An EXIF orientation
    other than 1 is reset. Raises ``OutputExistsError`` when the file exists and not
    ``overwrite``; a crash mid-write never leaves a partial file at ``path``.
    """
    _check_array(rgb, alpha)
    path = Path(path)
    fmt = _output_format(format, path)
    if not 1 <= int(quality) <= 100:
        raise ConfigError(f"quality must be 1..100, got {quality}")
    if not path.parent.is_dir():
        raise InputError(f"output folder {path.parent} does not exist", hint="create it first")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists")

    img, kw = _encoder_input(rgb, fmt, quality, alpha, exif, icc_profile)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            img.save(f, format=fmt, **kw)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; match a normal open()
        if overwrite:
            os.replace(tmp, path)
        else:
            try:  # link() fails if the name appeared meanwhile: no check-then-write race
                os.link(tmp, path)
            except FileExistsError:
                raise OutputExistsError(f"{path} already exists") from None
            except OSError:  # filesystem without hard links
                if path.exists():
                    raise OutputExistsError(f"{path} already exists") from None
                os.replace(tmp, path)
    except OutputExistsError:
        raise
    except Exception as e:
        raise InputError(f"cannot write {path}: {type(e).__name__}: {e}",
                         hint="check free space and permissions of the output folder") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path

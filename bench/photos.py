"""Benchmark photos: real LFW faces pasted onto a larger textured canvas (decode excluded).

The canvas is a smooth gradient with mild noise (no faces of its own); each LFW photo
(250 px, face ~110 px) is pasted at native size on a spread-out grid (shrunk only when the
grid cells are smaller, e.g. 5 faces on 640x480), so the detector sees
real faces at a realistic size for a group or portrait photo. ``sized_faces_photo`` instead
pastes faces at chosen sizes (28-200 px: a street photo) with their true boxes, for recall
tests. Needs ../shared/data (or NULLSWAP_DATA_DIR); callers skip when it is absent.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["DATA_DIR", "lfw_photos", "compose_photo", "sized_faces_photo", "RESOLUTIONS", "STREET_SIZES"]

DATA_DIR = Path(os.environ.get("NULLSWAP_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
RESOLUTIONS = {"640x480": (480, 640), "1920x1080": (1080, 1920), "4000x3000": (3000, 4000)}
# Face sizes (shorter box side, px) of the 1080p street photo of issue 12: 28 to 200, geometric.
STREET_SIZES = tuple(int(round(v)) for v in np.geomspace(28, 200, 16))


def lfw_photos(n: int) -> list[np.ndarray] | None:
    """``n`` 250x250 RGB LFW photos of distinct people, or None without the data."""
    from PIL import Image

    root = DATA_DIR / "lfw"
    if not root.is_dir():
        return None
    out = []
    for ident in sorted(p for p in root.iterdir() if p.is_dir()):
        f = ident / f"{ident.name}_0001.jpg"
        if f.is_file():
            out.append(np.asarray(Image.open(f).convert("RGB")))
        if len(out) == n:
            return out
    return None


def compose_photo(h: int, w: int, faces: list[np.ndarray], seed: int = 0) -> np.ndarray:
    """(h, w, 3) uint8 RGB canvas with ``faces`` pasted on a grid (they must fit)."""
    rng = np.random.default_rng(seed)
    canvas = np.empty((h, w, 3), np.uint8)
    x = np.arange(w, dtype=np.float32)[None, :, None]
    lo = np.array([90, 110, 140], np.float32)
    slope = np.array([60, 0, -25], np.float32) / w
    for y0 in range(0, h, 256):  # in bands: a 12 MP float canvas would dominate peak memory
        y = np.arange(y0, min(y0 + 256, h), dtype=np.float32)[:, None, None]
        band = lo + slope * x + np.array([0, 40, -25], np.float32) / h * y
        band = band + rng.normal(0, 4, band.shape).astype(np.float32)
        canvas[y0:y0 + len(y)] = np.clip(band, 0, 255).astype(np.uint8)
    n = len(faces)
    if not n:
        return canvas
    cols = int(np.ceil(np.sqrt(n * w / h)))
    rows = int(np.ceil(n / cols))
    fit = min(1.0, 0.95 * h / rows / faces[0].shape[0], 0.95 * w / cols / faces[0].shape[1])
    for i, f in enumerate(faces):
        if fit < 1.0:  # e.g. 5 faces on 640x480: shrink the photos to fit the grid
            import cv2

            f = cv2.resize(f, None, fx=fit, fy=fit, interpolation=cv2.INTER_AREA)
        r, c = divmod(i, cols)
        fh, fw = f.shape[:2]
        y0 = int((r + 0.5) * h / rows - fh / 2)
        x0 = int((c + 0.5) * w / cols - fw / 2)
        if y0 < 0 or x0 < 0 or y0 + fh > h or x0 + fw > w:
            raise ValueError(f"{n} faces of {fw}x{fh} do not fit a {w}x{h} canvas")
        canvas[y0:y0 + fh, x0:x0 + fw] = f
    return canvas


def _face_box(rgb: np.ndarray) -> np.ndarray | None:
    """(x0, y0, x1, y1) of the one confident, central face of a 250-px LFW photo, else None.

    Found by YuNet at native size (~100 px faces: its most reliable range), so the pasted
    boxes are what the detector reports for the face at a comfortable scale.
    """
    import cv2

    from nullswap_sdk.faces.detect import _load_model_bytes

    global _YUNET
    if _YUNET is None:
        model = np.frombuffer(_load_model_bytes(), np.uint8)
        _YUNET = cv2.FaceDetectorYN.create("onnx", model, np.empty(0, np.uint8), (250, 250), 0.8, 0.3, 50)
    h, w = rgb.shape[:2]
    _YUNET.setInputSize((w, h))
    _, out = _YUNET.detect(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if out is None or len(out) != 1:  # a bystander would be pasted too: skip such photos
        return None
    x, y, bw, bh = out[0, :4]
    if abs(x + bw / 2 - w / 2) > w / 8 or abs(y + bh / 2 - h / 2) > h / 8:
        return None
    return np.array([x, y, x + bw, y + bh], np.float64)


_YUNET = None


def sized_faces_photo(h: int, w: int, sizes=STREET_SIZES, seed: int = 0,
                      margin: float = 1.8) -> tuple[np.ndarray, np.ndarray] | None:
    """(canvas, boxes): real LFW faces of distinct people pasted with shorter box sides ``sizes``.

    Each face is a square crop ``margin`` x its box around it, resized so the box has the
    requested size, placed at a random free spot of the textured canvas (no overlaps).
    ``boxes`` (n, 4) float are the true (x0, y0, x1, y1). None without the LFW data.
    """
    import cv2

    photos = lfw_photos(4 * len(sizes) + 20)
    if photos is None:
        return None
    canvas = compose_photo(h, w, [], seed=seed)
    rng = np.random.default_rng(seed)
    taken = np.zeros((h, w), bool)
    boxes = []
    sources = iter(photos)
    for size in sorted(sizes, reverse=True):  # big ones first: they are the hardest to place
        for src in sources:
            box = _face_box(src)
            if box is not None:
                break
        else:
            raise ValueError("not enough single-face LFW photos")
        side = min(box[2] - box[0], box[3] - box[1])
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        half = min(margin * side / 2, cx, cy, src.shape[1] - cx, src.shape[0] - cy)
        x0, y0 = int(round(cx - half)), int(round(cy - half))
        n = int(round(2 * half))
        crop = src[y0:y0 + n, x0:x0 + n]
        f = size / side
        out = max(1, int(round(n * f)))
        f = out / n  # the exact factor after rounding
        interp = cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC
        patch = cv2.resize(crop, (out, out), interpolation=interp)
        for _ in range(2000):
            py, px = int(rng.integers(0, h - out + 1)), int(rng.integers(0, w - out + 1))
            if not taken[max(0, py - 8):py + out + 8, max(0, px - 8):px + out + 8].any():
                break
        else:
            raise ValueError(f"no free spot for a {out}-px face on {w}x{h}")
        taken[py:py + out, px:px + out] = True
        canvas[py:py + out, px:px + out] = patch
        # Native pixel centre x maps to (x + 0.5) * f - 0.5 in the resized crop.
        bx = ((box[[0, 2]] - x0 + 0.5) * f - 0.5) + px
        by = ((box[[1, 3]] - y0 + 0.5) * f - 0.5) + py
        boxes.append([bx[0], by[0], bx[1], by[1]])
    return canvas, np.array(boxes)

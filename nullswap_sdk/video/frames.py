"""Cloak a stream of frames: track faces, one ``method.perturb`` call per batch, paste back.

Shared by ``cloak_video`` (file to file) and ``cloak_frames`` (live: any iterable of frames,
bounded latency of ``lookahead`` frames).

Temporal stability comes from three things: the tracker's steady alignment (a still face
gets the same alignment matrix frame after frame); ``perturb_every`` = K (default 2), which
runs the method for a track every K-th frame and pastes its last crop-space perturbation at
the current frame's alignment in between (crops are aligned to the face, so consecutive
crop-space perturbations are registered; 1/K of the network cost); and optionally
``temporal`` < 1, a convex blend with the previous frame's perturbation (keeps the L∞ bound
and PSNR floor). Measured on a noisy still scene and a panning clip (docs/RESULTS.md,
"Video"): K = 2 halves the flicker at unchanged protection; blending lowers flicker further
but costs protection under motion (the network's perturbations of consecutive moving frames
are partly uncorrelated, so their average is weaker), hence off by default.
Pixel range is enforced by the paste (it clips the final image), not per crop.

A face that appears between detections is found at the next detection frame; its track is
then followed backwards by optical flow over the earlier frames of the same batch, which are
cloaked too. ``cloak_video`` makes each batch end on a detection frame, so no frame of a new
face is left uncloaked (unless flow loses it); ``cloak_frames`` covers ``lookahead - 1`` frames.
"""
from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Iterator

import numpy as np

from ..errors import ConfigError, UnsupportedImageError
from ..faces.align import align_face, alignment_matrix
from ..faces.detect import Face, FaceDetector
from ..faces.paste import paste_delta
from ..faces.templates import get_template
from .tracker import FaceTracker

__all__ = ["FrameBatchCloaker", "cloak_frames", "rotated_detect", "video_detector"]

_RELIABLE_MIN = 16.0  # px in YuNet's input (faces.detect): one pass finds faces this big ...
_VIDEO_SIDE = 640  # ... in a copy with this long side: video's one-pass schedule


def video_detector(base: FaceDetector, shape: tuple[int, int], min_face_size: float | None) -> FaceDetector:
    """The cloaker's detector, or a twin on video's faster schedule.

    ``None`` = whatever one pass on a 640-px copy finds (16 px there: 32 px at 720p, 48 px
    at 1080p, 96 px at 4K), never below the cloaker's own detector setting: ~15 ms per
    detection at 1080p instead of ~35 ms for the photo default (24 px, two passes). Tracking
    between detections, not per-frame search, carries the faces from frame to frame.
    """
    if min_face_size is None:
        min_face_size = max(base.min_face_size, _RELIABLE_MIN * max(shape) / _VIDEO_SIDE * (1 + 1e-6))
    if (float(min_face_size), base.detect_max_side, base.confirm_small) == (base.min_face_size, _VIDEO_SIDE, False):
        return base
    return FaceDetector(score_threshold=base.score_threshold, nms_threshold=base.nms_threshold,
                        min_face_size=float(min_face_size), max_faces=base.max_faces,
                        detect_max_side=_VIDEO_SIDE, confirm_small=False)


def _unrotate(pts: np.ndarray, k: int, H: int, W: int) -> np.ndarray:
    """Points in ``np.rot90(frame, k)`` -> the same points in the (H, W) coded frame."""
    x, y = pts[..., 0], pts[..., 1]
    if k == 1:
        x, y = W - 1 - y, x
    elif k == 2:
        x, y = W - 1 - x, H - 1 - y
    elif k == 3:
        x, y = y, H - 1 - x
    return np.stack([x, y], -1)


def rotated_detect(detect, rotation: int):
    """Wrap ``detect`` to run on the upright view of frames stored with ``rotation`` degrees
    (counter-clockwise display rotation); faces come back in coded-frame pixels, landmarks in
    upright order, so alignment yields upright crops without rotating whole frames."""
    k = int(round(rotation / 90.0)) % 4
    if k == 0:
        return detect

    def run(rgb: np.ndarray) -> list[Face]:
        H, W = rgb.shape[:2]
        faces = detect(np.ascontiguousarray(np.rot90(rgb, k)))
        out = []
        for f in faces:
            corners = _unrotate(np.array(f.box, np.float64).reshape(2, 2), k, H, W)
            box = (*corners.min(0), *corners.max(0))
            out.append(Face(box=tuple(float(v) for v in box), score=f.score,
                            landmarks=_unrotate(np.asarray(f.landmarks, np.float64), k, H, W)))
        return out

    return run


class FrameBatchCloaker:
    """Cloaks frames in order, a batch at a time. Frames are modified in place.

    cloaker: a ``Cloaker`` (its method, detector, strength and lock are used).
    detect_every, tracker_kw: see ``tracker.FaceTracker``.
    temporal: weight of the new perturbation against the previous frame's (see module doc).
    rotation: display rotation of the frames (detection runs upright).
    min_face_size: see ``video_detector``.
    """

    def __init__(self, cloaker, *, detect_every: int = 5, temporal: float = 1.0, rotation: int = 0,
                 min_face_size: float | None = None, perturb_every: int = 2, **tracker_kw) -> None:
        if cloaker.method is None:
            raise ConfigError("this Cloaker was closed", hint="create a new one with Cloaker.from_pretrained()")
        if not 0.0 < temporal <= 1.0:
            raise ConfigError(f"temporal must be in (0, 1], got {temporal}")
        if perturb_every < 1:
            raise ConfigError(f"perturb_every must be >= 1, got {perturb_every}")
        self.perturb_every = int(perturb_every)
        self.cloaker = cloaker
        self.template = get_template(cloaker.method.template)
        self.detect_every, self.temporal, self.rotation = int(detect_every), float(temporal), int(rotation)
        self.min_face_size = min_face_size
        self.tracker_kw = tracker_kw
        self.tracker: FaceTracker | None = None
        self.seconds: dict[str, float] = defaultdict(float)
        self.frames = self.faces = self.frames_with_faces = self.perturbed = self.backfilled = 0

    def _tracker_for(self, shape) -> FaceTracker:
        H, W = shape[:2]
        upright = (W, H) if int(round(self.rotation / 90.0)) % 2 else (H, W)
        det = video_detector(self.cloaker.detector, upright, self.min_face_size)
        self.detector = det
        return FaceTracker(rotated_detect(det.detect, self.rotation), self.detect_every, **self.tracker_kw)

    def prepare(self, shape) -> FaceTracker:
        """Build the tracker (and the video detector) for frames of ``shape``; idempotent."""
        if self.tracker is None:
            self.tracker = self._tracker_for(shape)
        return self.tracker

    def process(self, frames: list[np.ndarray], times: list[float],
                faces: list[list[Face] | None] | None = None) -> list[np.ndarray]:
        """Cloak ``frames`` (each (H, W, 3) uint8 RGB, consecutive) in place and return them.

        ``faces``: per frame, detections already made for it (keyframes) or None."""
        if not frames:
            return frames
        self.prepare(frames[0].shape)
        lock = getattr(self.cloaker, "_lock", None)
        t0 = time.perf_counter()
        with lock if lock is not None else _Null():
            todo = []  # (frame index, track or None (backfill), M, index into crops or -1: reuse)
            crops = []
            first = self.tracker.frame_index
            boxes: list[list[np.ndarray]] = []  # per frame, the boxes of the tracks cloaked there
            for i, (rgb, t) in enumerate(zip(frames, times)):
                live = self.tracker.update(rgb, t, faces[i] if faces else None)
                for tr in self.tracker.born:  # a new face: cloak it on this batch's earlier frames too
                    for j, lm in self.tracker.backtrack(tr, first).items():
                        cx, cy = lm.mean(0)
                        if any(b[0] <= cx <= b[2] and b[1] <= cy <= b[3] for b in boxes[j - first]):
                            continue  # an older track (lost by the detector) already cloaked it
                        crop, M = align_face(frames[j - first], lm, self.template)
                        todo.append((j - first, None, M, len(crops)))
                        crops.append(crop)
                        self.backfilled += 1
                boxes.append([tr.box.copy() for tr in live])
                for tr in live:
                    if tr.delta is None or tr.delta_age + 1 >= self.perturb_every:
                        crop, M = align_face(rgb, tr.landmarks, self.template)
                        todo.append((i, tr, M, len(crops)))
                        crops.append(crop)
                        tr.delta_age = 0
                    else:
                        todo.append((i, tr, alignment_matrix(tr.landmarks, self.template), -1))
                        tr.delta_age += 1
                    if tr.delta is None:
                        tr.delta = _PENDING  # a later frame of this batch must not reuse "nothing"
            t1 = time.perf_counter()
            deltas = self.cloaker.method.perturb(np.stack(crops)) if crops else []
        t2 = time.perf_counter()
        strength = self.cloaker.strength
        seen = set()
        for i, tr, M, k in todo:
            if k < 0:  # reuse the track's last perturbation at the current alignment
                d = tr.delta
            else:
                d = np.asarray(deltas[k], np.float32)
                if strength != 1.0:
                    d = d * strength
                if tr is not None:
                    if self.temporal < 1.0 and isinstance(tr.delta, np.ndarray):
                        d = self.temporal * d + (1.0 - self.temporal) * tr.delta
                    tr.delta = d
            paste_delta(frames[i], d, M, feather=0.0, out=frames[i])  # the method feathers its delta
            seen.add(i)
        t3 = time.perf_counter()
        self.seconds["track_detect_align"] += t1 - t0
        self.seconds["perturb"] += t2 - t1
        self.seconds["paste"] += t3 - t2
        self.frames += len(frames)
        self.faces += len(todo)
        self.perturbed += len(crops)
        self.frames_with_faces += len(seen)
        return frames


_PENDING = object()


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def cloak_frames(cloaker, frames: Iterable[np.ndarray], *, fps: float = 30.0, lookahead: int = 2,
                 image_format: str = "RGB", detect_every: int = 5, temporal: float = 1.0,
                 perturb_every: int = 2, min_face_size: float | None = None,
                 **tracker_kw) -> Iterator[np.ndarray]:
    """Cloak a live sequence of frames; yields each cloaked frame (a new array, same channel
    order) at most ``lookahead`` frames after it came in. ``fps`` times the frames for
    smoothing. The input arrays are not modified."""
    if lookahead < 1:
        raise ConfigError(f"lookahead must be >= 1, got {lookahead}")
    if not 0.0 < fps < float("inf"):  # fps times the frames: 0 would divide by zero
        raise ConfigError(f"fps must be a positive number, got {fps}")
    fmt = image_format.upper()
    if fmt not in ("RGB", "BGR"):
        raise ConfigError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
    proc = FrameBatchCloaker(cloaker, detect_every=detect_every, temporal=temporal,
                             perturb_every=perturb_every, min_face_size=min_face_size, **tracker_kw)
    buf: list[np.ndarray] = []
    times: list[float] = []
    n, shape0 = 0, None
    for frame in frames:
        if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise UnsupportedImageError(f"frame {n}: expected (H, W, 3) uint8, got "
                                        f"{getattr(frame, 'shape', type(frame).__name__)} {getattr(frame, 'dtype', '')}")
        shape0 = shape0 or frame.shape
        if frame.shape != shape0:
            raise UnsupportedImageError(f"frame {n} is {frame.shape}, earlier frames {shape0}",
                                        hint="all frames of a stream must have one size")
        buf.append(np.ascontiguousarray(frame[..., ::-1] if fmt == "BGR" else frame).copy())
        times.append(n / fps)
        n += 1
        if len(buf) >= lookahead:
            yield from _emit(proc, buf, times, fmt)
            buf, times = [], []
    if buf:
        yield from _emit(proc, buf, times, fmt)


def _emit(proc: FrameBatchCloaker, buf, times, fmt):
    for out in proc.process(buf, times):
        yield np.ascontiguousarray(out[..., ::-1]) if fmt == "BGR" else out

"""Face tracks between detections: detect every N frames, follow faces with optical flow.

Running YuNet on every frame costs 40-200 ms at 720p-1080p on this CPU; pyramidal
Lucas-Kanade on ~30 points per face costs ~1-2 ms a frame. So:

* every ``detect_every`` frames the detector runs and its faces are matched to tracks by box
  IoU (greedy, highest first); unmatched detections start tracks, tracks unmatched for more
  than ``max_misses`` detections end;
* on every frame each track's points (its 5 landmarks and a 5x5 grid over its box) are
  followed by LK flow on a downscaled grey frame, and a RANSAC similarity fitted to them moves
  the landmarks and box (camera pans, zooms and rolls are similarities locally);
* what the crop is aligned with is the One-Euro-smoothed landmark track, held still while it
  moves less than ``still_px`` pixels, so a still face gives the same alignment matrix frame
  after frame and the perturbation does not flicker.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError
from ..faces.detect import Face, box_iou
from .smoothing import OneEuro

__all__ = ["FaceTracker", "Track", "box_iou"]

_GRID = 5  # grid points per side over the box, besides the 5 landmarks
_LK_WIN = (15, 15)
_LK_LEVELS = 3


@dataclass(eq=False)
class Track:
    """One face followed over frames. ``landmarks`` is what the current frame is aligned with."""

    id: int
    raw: np.ndarray  # (5, 2) measurement chain: the last detection moved by optical flow
    box: np.ndarray  # (4,) x0, y0, x1, y1 following ``raw``
    score: float
    filt: OneEuro
    landmarks: np.ndarray  # (5, 2) smoothed, native pixels
    misses: int = 0  # consecutive detections that did not see this face
    lost_flow: bool = False  # optical flow failed on the last frame (kept, not moved)
    delta: np.ndarray | None = field(default=None, repr=False)  # last applied crop perturbation
    delta_age: int = 0  # frames since the method last computed a perturbation for this track

    @property
    def size(self) -> float:
        return float(min(self.box[2] - self.box[0], self.box[3] - self.box[1]))


class FaceTracker:
    """Feed frames in order with ``update(rgb, t)``; it returns the tracks live on that frame.

    detect: ``rgb -> list[Face]`` (e.g. ``FaceDetector.detect``), in this frame's pixels.
    detect_every: run ``detect`` on frame 0, N, 2N, ... (1 = every frame).
    iou_threshold: minimum box IoU to match a detection to a track.
    max_misses: detections a track may miss before it ends (covers a blink of the detector).
    min_cutoff, beta: One-Euro settings (see ``smoothing``).
    still_px: hold the aligned landmarks while the smoothed ones move less than this.
        Defaults measured (bench/video_stability.py): (1, 10, 0.5) flickers as little on a
        still face as (0.8, 2, 0.3) and lags less under camera motion, which protects better
        (a lagging crop puts the perturbation off the attacker's own alignment).
    flow_max_side: optical flow runs on a grey copy with this long side (speed vs precision).
    """

    def __init__(self, detect: Callable[[np.ndarray], list[Face]], detect_every: int = 5, *,
                 iou_threshold: float = 0.3, max_misses: int = 1, min_cutoff: float = 1.0,
                 beta: float = 10.0, still_px: float = 0.5, flow_max_side: int = 640) -> None:
        if detect_every < 1 or max_misses < 0 or flow_max_side < 64:
            raise ConfigError(f"need detect_every >= 1, max_misses >= 0, flow_max_side >= 64; got "
                              f"{detect_every}, {max_misses}, {flow_max_side}")
        self.detect = detect
        self.detect_every = int(detect_every)
        self.iou_threshold = float(iou_threshold)
        self.max_misses = int(max_misses)
        self.min_cutoff, self.beta, self.still_px = float(min_cutoff), float(beta), float(still_px)
        self.flow_max_side = int(flow_max_side)
        self.tracks: list[Track] = []
        self.frame_index = 0
        self.detections_run = 0
        self.tracks_started = 0
        self._prev_grey: np.ndarray | None = None
        self._scale = 1.0
        self.history: deque[tuple[int, np.ndarray]] = deque(maxlen=self.detect_every + 1)  # (index, grey)
        self.born: list[Track] = []  # tracks started by the last ``update`` call

    # -- per frame ---------------------------------------------------------------------------
    def is_keyframe(self, index: int) -> bool:
        return index % self.detect_every == 0

    def update(self, rgb: np.ndarray, t: float, faces: list[Face] | None = None) -> list[Track]:
        """Advance to frame ``rgb`` (HxWx3 uint8) at time ``t`` seconds; returns live tracks.

        ``faces``: detections of this frame made elsewhere (e.g. on the decode thread); used
        on keyframes instead of calling ``detect``."""
        grey = self._grey(rgb)
        self.history.append((self.frame_index, grey))
        self.born = []
        if self.tracks and self._prev_grey is not None and self._prev_grey.shape == grey.shape:
            self._flow(self._prev_grey, grey)
        self._prev_grey = grey
        if self.is_keyframe(self.frame_index):
            self._associate(self.detect(rgb) if faces is None else faces)
            self.detections_run += 1
        self.frame_index += 1
        for tr in self.tracks:
            sm = tr.filt(tr.raw, t, scale=tr.size)
            if np.abs(sm - tr.landmarks).max() >= self.still_px:
                tr.landmarks = sm
        return list(self.tracks)

    def _grey(self, rgb: np.ndarray) -> np.ndarray:
        import cv2

        H, W = rgb.shape[:2]
        self._scale = min(1.0, self.flow_max_side / max(H, W))
        g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        if self._scale < 1.0:
            g = cv2.resize(g, (max(1, round(W * self._scale)), max(1, round(H * self._scale))),
                           interpolation=cv2.INTER_AREA)
        return g

    def _motions(self, prev: np.ndarray, cur: np.ndarray, regions: list[tuple[np.ndarray, np.ndarray]]):
        """For each (landmarks (5, 2), box (4,)) region in ``prev``: the native-pixel
        similarity (A (2, 2), b (2,)) that LK flow says moved it into ``cur``, or None."""
        import cv2

        s = self._scale
        gx, gy = np.meshgrid(np.linspace(0.15, 0.85, _GRID), np.linspace(0.15, 0.85, _GRID))
        pts, owners = [], []
        for k, (lm, box) in enumerate(regions):
            x0, y0, x1, y1 = box
            grid = np.stack([x0 + gx.ravel() * (x1 - x0), y0 + gy.ravel() * (y1 - y0)], 1)
            p = np.concatenate([lm, grid], 0)
            pts.append(p)
            owners += [k] * len(p)
        # Native pixel centre x maps to (x + 0.5) * s - 0.5 in the downscaled frame.
        p0 = ((np.concatenate(pts) + 0.5) * s - 0.5).astype(np.float32).reshape(-1, 1, 2)
        p1, st, _ = cv2.calcOpticalFlowPyrLK(prev, cur, p0, None, winSize=_LK_WIN, maxLevel=_LK_LEVELS,
                                             criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03))
        owners_a = np.asarray(owners)
        ok = st.ravel().astype(bool)
        out = []
        for k in range(len(regions)):
            sel = (owners_a == k) & ok
            M = inl = None
            if sel.sum() >= 6:
                M, inl = cv2.estimateAffinePartial2D(p0[sel], p1[sel], method=cv2.RANSAC,
                                                     ransacReprojThreshold=1.0)
            if M is None or inl is None or inl.sum() < 6:
                out.append(None)
                continue
            # The fit is in downscaled pixels; conjugate it back to native pixels.
            A = M[:, :2]
            b = (M[:, 2] + (A @ np.full(2, 0.5 * s - 0.5)) - np.full(2, 0.5 * s - 0.5)) / s
            out.append((A, b))
        return out

    @staticmethod
    def _move(lm: np.ndarray, box: np.ndarray, A: np.ndarray, b: np.ndarray):
        c = np.array([[box[0], box[1]], [box[2], box[3]]]) @ A.T + b
        scale = float(np.sqrt(abs(np.linalg.det(A))))
        ctr, half = c.mean(0), 0.5 * scale * (box[2:] - box[:2])
        return lm @ A.T + b, np.concatenate([ctr - half, ctr + half])

    def _flow(self, prev: np.ndarray, cur: np.ndarray) -> None:
        """Move every track by a similarity fitted to LK flow of its points (one LK call)."""
        for tr, m in zip(self.tracks, self._motions(prev, cur, [(t.raw, t.box) for t in self.tracks])):
            tr.lost_flow = m is None
            if m is not None:
                tr.raw, tr.box = self._move(tr.raw, tr.box, *m)

    def backtrack(self, track: Track, first_index: int) -> dict[int, np.ndarray]:
        """Landmarks of a track born on a detection frame, followed backwards by flow to the
        earlier frames still in ``history`` (down to ``first_index``): {frame index: (5, 2)}.

        A face that walks in is then cloaked from the first frame it is in, not only from the
        detection that found it, for as many frames as the caller still holds."""
        born = self.frame_index - 1
        greys = dict(self.history)
        lm, box, out = track.raw.copy(), track.box.copy(), {}
        for i in range(born - 1, first_index - 1, -1):
            if i not in greys or i + 1 not in greys:
                break
            m = self._motions(greys[i + 1], greys[i], [(lm, box)])[0]
            if m is None:
                break
            lm, box = self._move(lm, box, *m)
            out[i] = lm.copy()
        return out

    def _associate(self, faces: list[Face]) -> None:
        boxes = np.array([f.box for f in faces], np.float64).reshape(-1, 4)
        iou = box_iou(np.array([t.box for t in self.tracks]).reshape(-1, 4), boxes)
        matched_t, matched_f = set(), set()
        for flat in np.argsort(-iou, axis=None):
            ti, fi = np.unravel_index(flat, iou.shape)
            if iou[ti, fi] < self.iou_threshold:
                break
            if ti in matched_t or fi in matched_f:
                continue
            matched_t.add(ti)
            matched_f.add(fi)
            tr, f = self.tracks[ti], faces[fi]
            tr.raw = np.asarray(f.landmarks, np.float64).copy()
            tr.box, tr.score, tr.misses = boxes[fi].copy(), float(f.score), 0
        keep = []
        for ti, tr in enumerate(self.tracks):
            if ti not in matched_t:
                tr.misses += 1
            if tr.misses <= self.max_misses:
                keep.append(tr)
        for fi, f in enumerate(faces):
            if fi in matched_f:
                continue
            lm = np.asarray(f.landmarks, np.float64).copy()
            filt = OneEuro(self.min_cutoff, self.beta)
            keep.append(Track(id=self.tracks_started, raw=lm, box=boxes[fi].copy(), score=float(f.score),
                              filt=filt, landmarks=lm.copy()))
            self.born.append(keep[-1])
            self.tracks_started += 1
        self.tracks = keep

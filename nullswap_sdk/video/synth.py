"""Synthetic test videos made from still photos: camera motion, noise, rotation, VFR, audio.

For tests and benchmarks only (the tests build their clips with this module; nothing is
downloaded). A scene is a canvas holding one or more photos; the camera is a similarity
(pan, roll, zoom) that moves smoothly over time; optional Gaussian sensor noise makes a
static scene realistic (real cameras never repeat a frame bit for bit).
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

from ._av import require_av

__all__ = ["camera_frames", "make_scene", "write_video"]


def make_scene(photos: Sequence[np.ndarray], width: int, height: int, face_height: float = 0.6) -> np.ndarray:
    """A (height, width, 3) canvas with the photos side by side, each ``face_height`` of it tall."""
    import cv2

    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = np.linspace(40, 200, width, dtype=np.float32)[None, :, None].astype(np.uint8)
    n = len(photos)
    for i, p in enumerate(photos):
        h = int(height * face_height)
        w = min(int(p.shape[1] * h / p.shape[0]), width // n)
        h = int(p.shape[0] * w / p.shape[1])
        r = cv2.resize(p, (w, h), interpolation=cv2.INTER_AREA)
        cx = int((i + 0.5) * width / n)
        x0, y0 = cx - w // 2, (height - h) // 2
        canvas[y0:y0 + h, x0:x0 + w] = r
    return canvas


def camera_frames(scene: np.ndarray, n: int, *, motion: str = "pan", amplitude: float = 0.05,
                  noise: float = 0.0, seed: int = 0) -> Iterator[np.ndarray]:
    """``n`` frames of ``scene`` seen by a moving camera.

    motion: "static", "pan" (translation by ``amplitude`` of the width, plus a slow roll of
    ``amplitude`` * 40 degrees) or "zoom" (scale 1 -> 1 + 2 * amplitude).
    noise: std of additive Gaussian noise, grey levels.
    """
    import cv2

    H, W = scene.shape[:2]
    rng = np.random.default_rng(seed)
    for i in range(n):
        ph = 2 * math.pi * i / max(n, 2)
        if motion == "static":
            M = np.array([[1.0, 0, 0], [0, 1.0, 0]])
        elif motion == "pan":
            M = cv2.getRotationMatrix2D((W / 2, H / 2), amplitude * 40 * math.sin(ph), 1.0)
            M[0, 2] += amplitude * W * math.sin(ph)
            M[1, 2] += 0.5 * amplitude * H * math.sin(2 * ph)
        elif motion == "zoom":
            M = cv2.getRotationMatrix2D((W / 2, H / 2), 0.0, 1.0 + 2 * amplitude * i / max(n - 1, 1))
        else:
            raise ValueError(f"motion must be static, pan or zoom, got {motion!r}")
        f = scene if motion == "static" else cv2.warpAffine(scene, M, (W, H), flags=cv2.INTER_LINEAR,
                                                             borderMode=cv2.BORDER_REFLECT)
        if noise > 0:
            f = np.clip(f + rng.normal(0, noise, f.shape), 0, 255).astype(np.uint8)
        yield np.ascontiguousarray(f)


def write_video(path, frames, *, fps: int = 25, codec: str = "libx264", pix_fmt: str = "yuv420p",
                crf: int = 18, rotation: int = 0, vfr: bool = False, audio: bool = True,
                metadata: dict | None = None) -> Path:
    """Encode upright RGB ``frames``. ``rotation`` (multiple of 90) stores them rotated by
    -rotation with display metadata +rotation, as phones do; ``vfr`` alternates frame
    durations of 1 and 2 ticks of 1/fps; ``audio`` adds a 440 Hz AAC tone as long as the video."""
    av = require_av()
    path = Path(path)
    k = int(round(rotation / 90.0)) % 4
    tb = Fraction(1, fps * 1000)
    out = av.open(str(path), "w")
    out.metadata.update(metadata or {})
    v = None
    pts = 0
    for i, f in enumerate(frames):
        coded = np.ascontiguousarray(np.rot90(f, -k)) if k else f
        if v is None:
            v = out.add_stream(codec, rate=fps)
            v.height, v.width = coded.shape[:2]
            v.pix_fmt = pix_fmt
            v.codec_context.time_base = tb
            v.time_base = tb
            v.codec_context.options = {"crf": str(crf), "preset": "ultrafast"} if codec == "libx264" else {}
            if k:
                v.set_display_rotation(rotation)
            a = out.add_stream("aac", rate=16000, layout="mono") if audio else None
        vf = av.VideoFrame.from_ndarray(coded, format="rgb24")
        vf.pts, vf.time_base = pts, tb
        pts += 1000 * (2 if vfr and i % 2 else 1)
        for p in v.encode(vf):
            out.mux(p)
    if v is None:
        out.close()
        raise ValueError("no frames")
    for p in v.encode():
        out.mux(p)
    if a is not None:
        samples = int(16000 * pts / (fps * 1000))
        tone = (0.1 * np.sin(2 * np.pi * 440 * np.arange(samples) / 16000)).astype(np.float32)
        for s0 in range(0, samples, 1024):
            af = av.AudioFrame.from_ndarray(tone[None, s0:s0 + 1024], format="fltp", layout="mono")
            af.sample_rate, af.pts = 16000, s0
            for p in a.encode(af):
                out.mux(p)
        for p in a.encode():
            out.mux(p)
    out.close()
    return path

"""Detections from other libraries → our ``Face``, so apps can reuse the detector they run.

Accepted, per face:
- our ``Face`` (returned as is);
- an insightface ``Face`` (``insightface.app.common.Face``: a ``dict`` subclass that mirrors
  keys as attributes and answers ``None`` for missing ones) with ``bbox`` (4,) x0, y0, x1, y1,
  ``kps`` (5, 2) and ``det_score``; insightface itself is never imported;
- any mapping with those keys, or with ``box`` / ``landmarks`` / ``score``;
- any object with those attributes.

Landmarks must be the 5 points in insightface/ArcFace order (image-left eye, image-right eye,
nose, image-left mouth corner, image-right mouth corner) in pixel coordinates of the image
passed to ``Cloaker.cloak`` (pixel centres at integers, as cv2 and insightface use). Without a
box, the landmarks' bounding box stands in (only reported, never used for alignment); without
a score, 1.0.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Iterable

import numpy as np

from ..errors import ConfigError
from .detect import Face

__all__ = ["as_face", "as_faces"]

_FIELDS = (("bbox", "box"), ("kps", "landmarks"), ("det_score", "score"))


def _field(obj: Any, names: tuple[str, str]):
    for name in names:
        # Mapping first: an insightface Face answers None to any unknown *attribute*.
        v = obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)
        if v is not None:
            return v
    return None


def as_face(obj: Any) -> Face:
    """One detection (see module docstring) as a ``Face``; ``ConfigError`` if unusable."""
    if isinstance(obj, Face):
        return obj
    box, kps, score = (_field(obj, names) for names in _FIELDS)
    what = type(obj).__name__
    if kps is None:
        raise ConfigError(
            f"face {what} has no 5-point landmarks ('kps' or 'landmarks')",
            hint="pass detections with 5 keypoints (insightface: FaceAnalysis with the detection "
                 "model), or let the Cloaker detect faces (faces=None)")
    try:
        lm = np.asarray(kps, dtype=np.float32).reshape(5, 2)
    except (TypeError, ValueError):
        raise ConfigError(f"face {what}: landmarks must be 5 (x, y) points, got shape "
                          f"{np.shape(kps)}", hint="use the 5-point 'kps', not a 68/106-point set") from None
    if not np.isfinite(lm).all():
        raise ConfigError(f"face {what}: landmarks contain NaN or inf")
    if box is None:
        b = (*lm.min(0), *lm.max(0))
    else:
        b = np.asarray(box, dtype=np.float64).ravel()
        if b.size < 4:
            raise ConfigError(f"face {what}: box must be (x0, y0, x1, y1), got {b.size} values")
        b = b[:4]
    return Face(box=tuple(float(v) for v in b), landmarks=lm,
                score=1.0 if score is None else float(np.asarray(score).ravel()[0]))


def as_faces(faces: Iterable[Any]) -> list[Face]:
    """``as_face`` over a sequence (a single detection by mistake is rejected, not iterated)."""
    if isinstance(faces, (Mapping, Face, np.ndarray)):
        raise ConfigError(f"faces must be a list of detections, got one {type(faces).__name__}",
                          hint="wrap it in a list: faces=[face]")
    return [as_face(f) for f in faces]

"""Named 5-point alignment templates (left eye, right eye, nose, left mouth, right mouth).

Every template is derived from the ArcFace 112x112 template, so crops at different
resolutions and margins stay geometrically consistent and can be composed with one
similarity transform.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

__all__ = ["Template", "ARCFACE_112_POINTS", "TEMPLATES", "get_template", "scaled_arcface"]

# insightface's reference points for a 112x112 ArcFace crop, (x, y) pixels.
ARCFACE_112_POINTS = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)


@dataclass(frozen=True)
class Template:
    """A square crop of ``size`` pixels and the landmark positions inside it."""

    name: str
    size: int
    points: np.ndarray  # (5, 2) float32, pixel coordinates in the crop

    def __post_init__(self) -> None:
        if self.points.shape != (5, 2):
            raise ConfigError(f"template {self.name!r} needs (5, 2) points, got {self.points.shape}")


def scaled_arcface(name: str, size: int, face_fraction: float = 1.0) -> Template:
    """ArcFace layout resized to ``size``; ``face_fraction`` < 1 adds margin around it.

    face_fraction = 1.0 reproduces the ArcFace crop scaled to ``size``; 0.5 makes the
    ArcFace region occupy the central half of the crop.
    """
    scale = size / 112.0 * face_fraction
    offset = size * (1.0 - face_fraction) / 2.0
    return Template(name, size, (ARCFACE_112_POINTS * scale + offset).astype(np.float32))


TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in (
        scaled_arcface("arcface112", 112),
        scaled_arcface("arcface224", 224),  # faceres: ArcFace points x2
        # FaceNet (CASIA, davidsandberg) was trained on looser MTCNN crops than ArcFace.
        # LFW ROC AUC over 1000+1000 pairs by face_fraction: 1.1: 0.985, 1.0: 0.990,
        # 0.9: 0.990, 0.8: 0.982 (0.7: 0.959 on 300+300); 0.9 keeps a little more context.
        scaled_arcface("facenet160", 160, face_fraction=0.9),
        # The cloaker's working crop: margin enough to contain every recogniser's crop.
        scaled_arcface("cloak256", 256, face_fraction=0.7),
    )
}


def get_template(name: str) -> Template:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ConfigError(
            f"unknown alignment template {name!r}", hint=f"use one of {sorted(TEMPLATES)}"
        ) from None

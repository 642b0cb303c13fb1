"""Named 5-point alignment templates (left eye, right eye, nose, left mouth, right mouth).

Every template is derived from the ArcFace 112x112 template, so crops at different
resolutions and margins stay geometrically consistent and can be composed with one
similarity transform.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

__all__ = ["Template", "ARCFACE_112_POINTS", "TEMPLATES", "get_template", "scaled_arcface", "similar_arcface"]

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


def similar_arcface(name: str, size: int, M) -> Template:
    """ArcFace-112 points mapped by the (2, 3) similarity ``M``: a template that is a similarity
    copy of every other one, fitted to an empirical layout rather than a plain rescale."""
    M = np.asarray(M, dtype=np.float64)
    return Template(name, size, (ARCFACE_112_POINTS @ M[:, :2].T + M[:, 2]).astype(np.float32))


# dlib's 150-px chip (get_face_chip_details(shape_5, 150, padding=0.25), what
# compute_face_descriptor(img, shape) embeds), measured, not documented: on 50 LFW photos
# (first photo of training-split identities in sha256 order) YuNet's landmarks mapped into
# dlib's own chip average (x, y) = (46.82, 45.20), (102.13, 45.12), (74.06, 76.82),
# (51.29, 102.42), (98.61, 103.02), per-point std 3.5-8.7 px (dlib's points are eye corners
# and the nose base, YuNet's eye centres and the nose tip: the offset varies with pose).
# dlib150 is the least-squares similarity copy of ArcFace on that mean (scale 1.483, 0.15°;
# RMS 2.4 px from the mean), so it composes with the other templates exactly; against dlib's
# own path on 40 validation photos it does as well as the raw mean (median cosine 0.992
# both). Re-derive: python scripts/derive_dlib_template.py.
DLIB_150 = similar_arcface("dlib150", 150, [[1.4827174, -0.0038292, -8.2136941],
                                            [0.0038292, 1.4827174, -32.3084152]])

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
        DLIB_150,
    )
}


def get_template(name: str) -> Template:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ConfigError(
            f"unknown alignment template {name!r}", hint=f"use one of {sorted(TEMPLATES)}"
        ) from None

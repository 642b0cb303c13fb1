"""Paste a crop-space perturbation back into the full-resolution photo.

Only the *difference* (cloaked crop − clean crop) travels back, so the face keeps its
native detail, and only a region of interest (ROI) around the crop's footprint is touched,
so memory stays O(face) even on 100-megapixel photos. Pixels outside the footprint are
never written: they stay bit-identical.

Feather default (0.0625 of the crop side): in the ``cloak256`` template the widest
recogniser crop (FaceNet 160, face_fraction 0.9) ends 28 px inside the crop edge, so the
16 px smoothstep ramp reaches full strength before any recogniser looks, and hides the seam
of a perturbation that is a few grey levels strong.

Two implementations of the same paste: the fused C++ kernel ``nullswap_sdk.kernels._paste``
(one multi-threaded pass: bilinear warp, feather, add, round, clamp; built by setup.py) and
the NumPy/OpenCV path below, which is the reference and the fallback when the kernel is not
built (logged once). They agree to ≤ 1 grey level inside the ROI and exactly outside it.
"""
from __future__ import annotations

import logging

import numpy as np

from ..errors import ConfigError, MissingDependencyError, UnsupportedImageError
from .align import compose_affine, invert_affine

__all__ = ["feather_mask", "crop_footprint_box", "paste_delta", "native_paste_available"]

log = logging.getLogger(__name__)
_NATIVE: list = []  # [module or None] once probed


def _native_module():
    """The C++ kernel module, or None (logged once: a slower path must never be silent)."""
    if not _NATIVE:
        import importlib

        try:
            _paste = importlib.import_module("nullswap_sdk.kernels._paste")
        except ImportError as e:
            _paste = None
            log.warning("paste-back uses the NumPy/OpenCV fallback: the C++ kernel "
                        "nullswap_sdk.kernels._paste is not built (%s). Reinstall with a C++ compiler "
                        "(`pip install -e .` builds it) for a faster paste.", e)
        _NATIVE.append(_paste)
    return _NATIVE[0]


def native_paste_available() -> bool:
    return _native_module() is not None


def _feather_ramp(size: int, feather: float) -> np.ndarray | None:
    """1-D smoothstep ramp with ``feather_mask = min.outer(ramp, ramp)``; None when feather = 0."""
    if not 0.0 <= feather <= 0.5:
        raise ConfigError(f"feather must be in [0, 0.5] (fraction of the crop side), got {feather}")
    if feather == 0:
        return None
    d = np.minimum(np.arange(size), np.arange(size)[::-1]) + 0.5  # distance to nearest edge
    t = np.clip(d / (feather * size), 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)  # smoothstep: C1, so no visible crease


def feather_mask(size: int, feather: float) -> np.ndarray:
    """(size, size) float32 in [0, 1]: 1 inside, smoothstep to 0 at the crop edge.

    The ramp spans ``feather * size`` pixels measured from the crop's outer edge
    (pixel centres sit 0.5 px inside it). ``feather = 0`` gives a hard all-ones mask.
    """
    ramp = _feather_ramp(size, feather)
    if ramp is None:
        return np.ones((size, size), np.float32)
    return np.minimum.outer(ramp, ramp)


def crop_footprint_box(M: np.ndarray, size: int, image_shape) -> tuple[int, int, int, int]:
    """Integer ROI (x0, y0, x1, y1), end-exclusive, that holds every image pixel the
    (size x size) crop of ``M`` (image → crop) can touch, clipped to the image.

    Empty (x0 == x1 or y0 == y1) when the crop lies entirely outside the image.
    """
    H, W = int(image_shape[0]), int(image_shape[1])
    Minv = invert_affine(M)
    e = size - 0.5  # crop pixel centres run 0..size-1; its outer edge is at -0.5 / size-0.5
    corners = np.array([[-0.5, -0.5], [e, -0.5], [-0.5, e], [e, e]])
    pts = corners @ Minv[:, :2].T + Minv[:, 2]
    # +1 px margin: bilinear weights reach one pixel past the exact footprint.
    x0 = int(np.clip(np.floor(pts[:, 0].min()) - 1, 0, W))
    y0 = int(np.clip(np.floor(pts[:, 1].min()) - 1, 0, H))
    x1 = int(np.clip(np.ceil(pts[:, 0].max()) + 2, 0, W))
    y1 = int(np.clip(np.ceil(pts[:, 1].max()) + 2, 0, H))
    return x0, y0, max(x0, x1), max(y0, y1)


def paste_delta(image: np.ndarray, delta: np.ndarray, M: np.ndarray, *,
                feather: float = 0.0625, antialias: bool = True,
                out: np.ndarray | None = None, native: bool | None = None,
                threads: int = 0) -> np.ndarray:
    """Add a crop-space perturbation to ``image`` and return the uint8 result.

    image: HxWxC uint8, C = 3 (RGB) or 4 (RGBA: alpha is left untouched).
    delta: (S, S, 3) float32, cloaked crop − clean crop in 0..255 units.
    M: (2, 3) map image pixels → crop pixels, as returned by ``align_face``.
    feather: ramp width as a fraction of S (see ``feather_mask``).
    antialias: when the crop is larger than the face in the photo (crop → image shrinks),
        low-pass the delta first so it is resampled, not aliased into coarse noise.
    out: array to write into (may be ``image`` itself for in-place); default a copy.
    native: None uses the C++ kernel when it is built (else the reference path, logged once);
        False forces the NumPy/OpenCV reference; True requires the kernel. A non-C-contiguous
        ``out`` (a strided view) always takes the reference path.
    threads: worker threads of the C++ kernel (0: all cores).

    Only the ROI from ``crop_footprint_box`` is read and written; everywhere the warped,
    feathered delta is exactly 0 the pixel is unchanged. Several faces: call repeatedly,
    passing the previous result.
    """
    import cv2

    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 \
            or image.shape[2] not in (3, 4):
        raise UnsupportedImageError(
            f"paste_delta expects HxWx3 or HxWx4 uint8, got "
            f"{getattr(image, 'shape', type(image).__name__)} {getattr(image, 'dtype', '')}")
    delta = np.asarray(delta, dtype=np.float32)
    if delta.ndim != 3 or delta.shape[0] != delta.shape[1] or delta.shape[2] != 3:
        raise ConfigError(f"delta must be (S, S, 3), got {delta.shape}")
    if not np.isfinite(delta).all():
        raise ConfigError("delta contains NaN or inf")
    if threads < 0:
        raise ConfigError(f"threads must be ≥ 0 (0: all cores), got {threads}")
    if out is None:
        out = image.copy()
    elif out.shape != image.shape or out.dtype != np.uint8:
        raise ConfigError(f"out must be {image.shape} uint8, got {out.shape} {out.dtype}")
    elif out is not image:
        np.copyto(out, image)

    mod = None if native is False else _native_module()
    if native and mod is None:
        raise MissingDependencyError("native=True but the C++ paste kernel is not built",
                                     hint="reinstall with a C++ compiler (`pip install -e .`), or pass native=None")

    S = delta.shape[0]
    x0, y0, x1, y1 = crop_footprint_box(M, S, image.shape)
    if x1 <= x0 or y1 <= y0:
        return out
    ramp = _feather_ramp(S, feather)
    blur_sigma = None
    if antialias:
        # Linear scale image → crop; > 1 means the paste shrinks the delta.
        k = float(np.sqrt(abs(np.linalg.det(np.asarray(M, np.float64)[:, :2]))))
        if k > 1.0 + 1e-6:
            blur_sigma = 0.5 * np.sqrt(k * k - 1.0)  # Gaussian that removes the excess bandwidth
    if mod is not None and out.flags.c_contiguous:
        if blur_sigma is not None:  # the mask must come before the blur: premultiply here
            crop, ramp = _blurred(delta * feather_mask(S, feather)[:, :, None], blur_sigma), None
        else:
            crop = np.ascontiguousarray(delta)
        mod.paste_warp_add(out, crop, ramp, np.ascontiguousarray(M, np.float64), (x0, y0, x1, y1), threads)
        return out

    weighted = delta * feather_mask(S, feather)[:, :, None]
    if blur_sigma is not None:
        weighted = _blurred(weighted, blur_sigma)
    # crop → ROI: invert M, then shift the origin to the ROI's corner.
    to_roi = compose_affine(np.array([[1.0, 0, -x0], [0, 1.0, -y0]]), invert_affine(M))
    warped = cv2.warpAffine(weighted, to_roi, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    roi = out[y0:y1, x0:x1, :3]
    # Float32 holds 0..255 integers exactly, so a zero delta rounds back to the same value.
    warped += roi  # in place: only ROI-sized float temporaries, no more
    np.rint(warped, out=warped)
    np.clip(warped, 0, 255, out=warped)
    roi[...] = warped  # exact: values are integers in 0..255
    return out


def _blurred(crop: np.ndarray, sigma: float) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(crop, (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)

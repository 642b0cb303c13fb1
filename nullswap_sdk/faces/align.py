"""5-point similarity alignment: numpy/cv2 for users, a differentiable torch twin for training.

Coordinate convention (everywhere in this SDK): pixel (row i, column j) has its *centre* at
(x, y) = (j, i); the image covers [-0.5, W - 0.5] x [-0.5, H - 0.5]. This is cv2's
convention for ``warpAffine``/landmarks. A (2, 3) matrix ``M`` maps a source point to a
destination point: ``[x', y'] = M @ [x, y, 1]``.

Border mode: ``align_face`` defaults to ``cv2.BORDER_REFLECT`` (``fedcba|abcdef``) because
(1) a face near the photo's edge then gives the cloaker and recognisers natural image
statistics instead of a hard black bar that a network reacts to, (2) whatever is computed
outside the photo is discarded by paste-back anyway, and (3) it is exactly torch's
``grid_sample(padding_mode="reflection", align_corners=False)``, so the numpy and the
differentiable paths agree up to the border. Pass ``cv2.BORDER_CONSTANT`` (torch
``"zeros"``) to reproduce insightface-style crops that attackers use.
"""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError, UnsupportedImageError
from .templates import Template

__all__ = [
    "estimate_similarity",
    "alignment_matrix",
    "align_face",
    "align_largest_face",
    "invert_affine",
    "compose_affine",
    "transform_points",
    "warp_affine_torch",
]


def estimate_similarity(src_pts: np.ndarray, dst_pts: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection).

    Umeyama (1991): minimises sum ||dst - (s R src + t)||^2. Returns (2, 3) float64 M with
    ``dst ≈ M @ [src, 1]``. Needs N >= 2 distinct points.
    """
    src = np.asarray(src_pts, dtype=np.float64)
    dst = np.asarray(dst_pts, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 2 or src.shape != dst.shape or len(src) < 2:
        raise ConfigError(f"need two (N, 2) point sets with N >= 2, got {src.shape} and {dst.shape}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ConfigError("landmarks contain NaN or inf")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    sc, dc = src - mu_s, dst - mu_d
    var_s = (sc**2).sum() / len(src)
    if var_s < 1e-12:
        raise ConfigError("source points coincide; cannot estimate a similarity")
    cov = dc.T @ sc / len(src)
    U, S, Vt = np.linalg.svd(cov)
    D = np.ones(2)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:  # best fit would be a reflection: forbid it
        D[1] = -1.0
    R = U @ np.diag(D) @ Vt
    scale = (S * D).sum() / var_s
    t = mu_d - scale * R @ mu_s
    return np.hstack([scale * R, t[:, None]])


def _as3(M) -> np.ndarray:
    M = np.asarray(M, dtype=np.float64)
    if M.shape != (2, 3):
        raise ConfigError(f"affine matrix must be (2, 3), got {M.shape}")
    return np.vstack([M, [0.0, 0.0, 1.0]])


def invert_affine(M: np.ndarray) -> np.ndarray:
    """Inverse of a (2, 3) affine map."""
    A = _as3(M)
    if abs(np.linalg.det(A[:2, :2])) < 1e-12:
        raise ConfigError("affine matrix is singular")
    return np.linalg.inv(A)[:2]


def compose_affine(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """The map 'apply B, then A' (i.e. A ∘ B) as (2, 3)."""
    return (_as3(A) @ _as3(B))[:2]


def transform_points(M: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply (2, 3) ``M`` to (N, 2) points."""
    pts = np.asarray(pts, dtype=np.float64)
    return pts @ np.asarray(M, dtype=np.float64)[:, :2].T + np.asarray(M, dtype=np.float64)[:, 2]


def alignment_matrix(landmarks: np.ndarray, template: Template) -> np.ndarray:
    """(2, 3) similarity mapping image pixels to ``template`` crop pixels."""
    return estimate_similarity(np.asarray(landmarks).reshape(5, 2), template.points)


def align_face(rgb: np.ndarray, landmarks: np.ndarray, template: Template,
               border: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Warp the face to ``template``: returns (crop (S, S, C) same dtype as ``rgb``, M).

    ``M`` maps image pixels to crop pixels (keep it for ``paste_delta``). Bilinear
    (INTER_LINEAR); ``border`` defaults to ``cv2.BORDER_REFLECT`` (see module docstring).
    """
    import cv2

    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3:
        raise UnsupportedImageError(
            f"align_face expects an HxWxC array, got {getattr(rgb, 'shape', type(rgb).__name__)}")
    M = alignment_matrix(landmarks, template)
    S = template.size
    crop = cv2.warpAffine(rgb, M, (S, S), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT if border is None else border)
    if crop.ndim == 2:  # cv2 drops a singleton channel axis
        crop = crop[:, :, None]
    return crop, M


def align_largest_face(rgb: np.ndarray, detector, template: Template) -> np.ndarray | None:
    """The largest face ``detector`` finds in ``rgb``, aligned to ``template`` (None: no face).
    For photos that stand for one person (reference photos, target pools)."""
    faces = detector.detect(rgb)
    if not faces:
        return None
    return align_face(rgb, max(faces, key=lambda f: f.size).landmarks, template)[0]


def _pixel_to_norm(h: int, w: int) -> np.ndarray:
    """3x3 map pixel-centre coords → grid_sample coords (align_corners=False).

    Pixel j's centre sits at (2j + 1) / w - 1, so -1 / +1 are the outer *edges*.
    """
    return np.array([[2.0 / w, 0.0, 1.0 / w - 1.0], [0.0, 2.0 / h, 1.0 / h - 1.0], [0, 0, 1.0]])


def warp_affine_torch(img, M, out_size: tuple[int, int], padding_mode: str = "reflection"):
    """Differentiable twin of ``cv2.warpAffine(img, M, (w, h), INTER_LINEAR)``.

    img: (B, C, H, W) float tensor (any range); M: (B, 2, 3) or (2, 3) tensor/array mapping
    SOURCE pixel coords → DEST pixel coords (same convention as cv2, see module docstring);
    out_size: (h, w). Returns (B, C, h, w). Gradients flow to ``img`` and to ``M``.
    padding_mode: "reflection" ↔ cv2.BORDER_REFLECT, "zeros" ↔ BORDER_CONSTANT(0),
    "border" ↔ BORDER_REPLICATE. Agrees with cv2 (float input) to < 0.01 grey levels in
    the tests, borders included; for uint8 input cv2 also rounds its output (±0.5).
    """
    import torch
    import torch.nn.functional as F

    if img.ndim != 4:
        raise ConfigError(f"img must be (B, C, H, W), got {tuple(img.shape)}")
    B, _, H, W = img.shape
    h, w = int(out_size[0]), int(out_size[1])
    if not torch.is_tensor(M):
        M = torch.as_tensor(np.asarray(M))
    M = M.to(device=img.device, dtype=torch.float64 if img.dtype == torch.float64 else torch.float32)
    if M.ndim == 2:
        M = M.unsqueeze(0).expand(B, 2, 3)
    if M.shape != (B, 2, 3):
        raise ConfigError(f"M must be (2, 3) or ({B}, 2, 3), got {tuple(M.shape)}")
    # theta maps normalised DEST → normalised SOURCE: N_src · M^-1 · N_dst^-1, in torch so
    # that M can receive gradients.
    bottom = torch.tensor([0.0, 0.0, 1.0], dtype=M.dtype, device=M.device).expand(B, 1, 3)
    M3 = torch.cat([M, bottom], 1)
    n_src = torch.as_tensor(_pixel_to_norm(H, W), dtype=M.dtype, device=M.device)
    n_dst_inv = torch.as_tensor(np.linalg.inv(_pixel_to_norm(h, w)), dtype=M.dtype, device=M.device)
    theta = (n_src @ torch.linalg.inv(M3) @ n_dst_inv)[:, :2]
    grid = F.affine_grid(theta.to(img.dtype), [B, img.shape[1], h, w], align_corners=False)
    return F.grid_sample(img, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)

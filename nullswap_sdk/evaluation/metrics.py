"""Image-quality and recognition metrics for the acceptance protocol (DESIGN.md §4).

numpy/cv2 only, so evaluation runs without torch. Images are ``HxWx3 uint8`` (colour order
does not matter: every metric here treats the three channels alike). Quality is measured on
uint8 arrays *as saved*, which is why float input is refused rather than guessed at.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from nullswap_sdk.errors import ConfigError, InputError

__all__ = ["psnr", "ssim", "cosine", "top1_identification", "roc_auc", "check_rgb_uint8"]

Box = Sequence[float]

# Wang et al. 2004 constants.
_SSIM_WIN = 11
_SSIM_SIGMA = 1.5
_K1, _K2 = 0.01, 0.03


def check_rgb_uint8(img: np.ndarray, name: str = "img") -> np.ndarray:
    """Return ``img`` as an ndarray after checking it is ``HxWx3 uint8``; raise InputError if not."""
    arr = np.asarray(img)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise InputError(f"{name}: expected shape (H, W, 3), got {arr.shape}",
                         hint="pass an HxWx3 RGB image; convert grayscale/RGBA first")
    if arr.dtype != np.uint8:
        # Float images in [0,1] vs [0,255] would silently give wrong PSNR; refuse instead.
        raise InputError(f"{name}: expected dtype uint8, got {arr.dtype}",
                         hint="convert with np.clip(x, 0, 255).round().astype(np.uint8) "
                              "(metrics are defined on images as saved)")
    return arr


def _pair(a: np.ndarray, b: np.ndarray, box: Box | None) -> tuple[np.ndarray, np.ndarray]:
    a = check_rgb_uint8(a, "a")
    b = check_rgb_uint8(b, "b")
    if a.shape != b.shape:
        raise ConfigError(f"image shapes differ: a {a.shape} vs b {b.shape}",
                          hint="compare the cloaked photo with the clean photo at the same size")
    if box is None:
        return a, b
    h, w = a.shape[:2]
    if len(box) != 4:
        raise ConfigError(f"box must be (x0, y0, x1, y1), got {box!r}")
    # Detector boxes are float and often poke past the border: take every pixel the box
    # touches, clipped to the image, and refuse only if nothing is left.
    x0 = max(0, int(np.floor(box[0])))
    y0 = max(0, int(np.floor(box[1])))
    x1 = min(w, int(np.ceil(box[2])))
    y1 = min(h, int(np.ceil(box[3])))
    if x1 <= x0 or y1 <= y0:
        raise ConfigError(f"box {tuple(box)} is empty inside a {w}x{h} image",
                          hint="boxes are (x0, y0, x1, y1) in pixels, x1 > x0 and y1 > y0")
    return a[y0:y1, x0:x1], b[y0:y1, x0:x1]


def psnr(a: np.ndarray, b: np.ndarray, *, box: Box | None = None,
         data_range: float = 255) -> float:
    """Peak signal-to-noise ratio in dB over all pixels and channels (inside ``box`` if given).

    ``box`` is ``(x0, y0, x1, y1)``, end-exclusive, clipped to the image. Identical → ``inf``.
    """
    a, b = _pair(a, b, box)
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    if mse == 0:
        return float("inf")
    return float(10.0 * np.log10(float(data_range) ** 2 / mse))


def _gaussian_1d(size: int = _SSIM_WIN, sigma: float = _SSIM_SIGMA) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x ** 2) / (2 * sigma ** 2))
    return g / g.sum()  # outer(g, g) then sums to 1, as MATLAB's fspecial('gaussian', 11, 1.5)


def ssim(a: np.ndarray, b: np.ndarray, *, box: Box | None = None) -> float:
    """Structural similarity (Wang et al. 2004), the standard parameterisation.

    Convention, stated exactly:
      * L = 255, C1 = (0.01 L)^2, C2 = (0.03 L)^2;
      * 11x11 Gaussian window, sigma 1.5, normalised to sum 1; weighted local means,
        (biased, weighted) variances and covariance: sigma_x^2 = E_w[x^2] - mu_x^2;
      * SSIM map = (2 mu_x mu_y + C1)(2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2));
      * "valid" region only: windows that lie wholly inside the image (or ``box``), so no
        padding enters; the map is (H-10)x(W-10) per channel;
      * computed independently on each of the 3 channels (no luma conversion), mean of the
        map per channel, then the mean of the 3 channels.
    The region must be at least 11x11; identical images give exactly 1.0.
    """
    a, b = _pair(a, b, box)
    h, w = a.shape[:2]
    if h < _SSIM_WIN or w < _SSIM_WIN:
        raise ConfigError(f"SSIM needs a region of at least {_SSIM_WIN}x{_SSIM_WIN}, got {w}x{h}",
                          hint="use a larger box, or PSNR for tiny regions")
    g = _gaussian_1d()
    c1 = (_K1 * 255.0) ** 2
    c2 = (_K2 * 255.0) ** 2
    r = _SSIM_WIN // 2
    x = a.astype(np.float64)
    y = b.astype(np.float64)

    def filt(z: np.ndarray) -> np.ndarray:
        # Border mode is irrelevant: the crop below keeps only windows with no padded pixel.
        return cv2.sepFilter2D(z, cv2.CV_64F, g, g, borderType=cv2.BORDER_REFLECT)[r:h - r, r:w - r]

    mu_x, mu_y = filt(x), filt(y)
    sxx = filt(x * x) - mu_x * mu_x
    syy = filt(y * y) - mu_y * mu_y
    sxy = filt(x * y) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2)
    per_channel = (num / den).reshape(-1, 3).mean(axis=0)
    return float(per_channel.mean())


def _as_2d(x: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ConfigError(f"{name}: expected a 2-D (N, D) array, got shape {arr.shape}",
                          hint="stack embeddings into one (N, D) array; use x[None] for a single one")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name} contains NaN or inf", hint="check the recogniser's output")
    return arr


def _unit(x: np.ndarray) -> np.ndarray:
    # A zero embedding has no direction; give it cosine 0 with everything instead of NaN.
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two ``(N, D)`` arrays → ``(N,)`` float64."""
    a = _as_2d(a, "a")
    b = _as_2d(b, "b")
    if a.shape != b.shape:
        raise ConfigError(f"embedding shapes differ: a {a.shape} vs b {b.shape}",
                          hint="cosine pairs row i of a with row i of b; both must be (N, D)")
    return np.sum(_unit(a) * _unit(b), axis=1)


def top1_identification(gallery_emb: np.ndarray, gallery_ids: Sequence, probe_emb: np.ndarray,
                        probe_ids: Sequence) -> float:
    """Fraction of probes whose nearest gallery entry (max cosine) carries the probe's id.

    Ties go to the first gallery row (numpy argmax). Protection = 1 - this on cloaked probes.
    """
    g = _as_2d(gallery_emb, "gallery_emb")
    p = _as_2d(probe_emb, "probe_emb")
    gids = np.asarray(gallery_ids)
    pids = np.asarray(probe_ids)
    if g.shape[0] == 0 or p.shape[0] == 0:
        raise ConfigError(f"empty gallery or probe set: gallery {g.shape}, probes {p.shape}")
    if g.shape[1] != p.shape[1]:
        raise ConfigError(f"embedding widths differ: gallery D={g.shape[1]} vs probes D={p.shape[1]}",
                          hint="embed gallery and probes with the same recogniser")
    if gids.shape != (g.shape[0],) or pids.shape != (p.shape[0],):
        raise ConfigError(f"ids must be 1-D with one per row: gallery_ids {gids.shape} for "
                          f"{g.shape[0]} rows, probe_ids {pids.shape} for {p.shape[0]} rows")
    nearest = np.argmax(_unit(p) @ _unit(g).T, axis=1)
    return float(np.mean(gids[nearest] == pids))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing the mean of the ranks they span (as scipy's 'average')."""
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts + 1
    return (first + (counts - 1) / 2.0)[inv.reshape(-1)]


def roc_auc(scores: Sequence[float], labels: Sequence) -> float:
    """Area under the ROC curve for "higher score = positive", via the Mann-Whitney U statistic.

    Equals P(score_pos > score_neg) + 0.5 P(score_pos == score_neg) over all pos/neg pairs.
    ``labels`` are booleans or 0/1; both classes must be present.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    lab = np.asarray(labels).reshape(-1)
    if s.shape != lab.shape:
        raise ConfigError(f"scores {s.shape} and labels {lab.shape} differ in length")
    if not np.all(np.isfinite(s)):
        raise InputError("scores contain NaN or inf", hint="check the similarity computation")
    if not np.all(np.isin(lab, [0, 1])):
        raise ConfigError("labels must be boolean or 0/1", hint="use True for the positive class")
    pos = lab.astype(bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        raise ConfigError(f"AUC needs both classes, got {n_pos} positives and {n_neg} negatives")
    ranks = _average_ranks(s)
    u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))

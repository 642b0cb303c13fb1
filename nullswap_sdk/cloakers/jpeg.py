"""Differentiable JPEG: the loss a shared photo suffers, inside the optimisation loop.

Used by training (EOT over the saved photo) and by per-image PGD (``PGDConfig.jpeg_p``): a
perturbation optimised through JPEG keeps its effect after it (DESIGN.md §4: luminance-only
PGD lost half its gain after JPEG q75 when optimised without it).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError

__all__ = ["jpeg_approx", "jpeg_quant_tables"]

# JPEG standard (ITU T.81 Annex K) base quantisation tables, row-major 8x8.
_Q_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], np.float64).reshape(8, 8)
_Q_CHROMA = np.full((8, 8), 99.0)
_Q_CHROMA[:4, :4] = np.array([[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]])


def jpeg_quant_tables(quality: int) -> tuple[np.ndarray, np.ndarray]:
    """(luma, chroma) tables at ``quality`` with the IJG (libjpeg) scaling that cv2/PIL use."""
    if not 1 <= quality <= 100:
        raise ConfigError(f"JPEG quality must be in [1, 100], got {quality}")
    s = 5000.0 / quality if quality < 50 else 200.0 - 2.0 * quality
    return tuple(np.clip(np.floor((q * s + 50.0) / 100.0), 1, 255) for q in (_Q_LUMA, _Q_CHROMA))


def _dct_matrix(device, dtype) -> torch.Tensor:
    k = torch.arange(8, dtype=torch.float64)[:, None]
    n = torch.arange(8, dtype=torch.float64)[None, :]
    d = torch.cos((2 * n + 1) * k * math.pi / 16) * math.sqrt(2.0 / 8)
    d[0] /= math.sqrt(2.0)
    return d.to(device=device, dtype=dtype)


def _round(x: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "ste":  # exact rounding forward, identity gradient backward
        return x + (torch.round(x) - x).detach()
    if mode == "cubic":  # Shin & Song (2017): round(x) + (x − round(x))³, smooth gradient
        r = torch.round(x).detach()
        return r + (x - r) ** 3
    raise ConfigError(f"rounding must be 'ste' or 'cubic', got {mode!r}")


def _blocks_dct(p: torch.Tensor, q: torch.Tensor, D: torch.Tensor, rounding: str) -> torch.Tensor:
    """8x8 block DCT → quantise (q: (B, 8, 8)) → dequantise → IDCT of a (B, H, W) plane."""
    B, H, W = p.shape
    b = p.reshape(B, H // 8, 8, W // 8, 8).permute(0, 1, 3, 2, 4)
    c = D @ b @ D.T
    qq = q[:, None, None]
    c = _round(c / qq, rounding) * qq
    return (D.T @ c @ D).permute(0, 1, 3, 2, 4).reshape(B, H, W)


def jpeg_approx(x: torch.Tensor, quality, rounding: str = "ste", offset: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Differentiable JPEG (baseline, YCbCr 4:2:0) of float (B, 3, H, W) RGB in [0, 255].

    ``quality``: int or (B,) ints. ``offset``: shift of the 8x8 grid (a crop rarely starts on
    the photo's block grid). Close to cv2's encoder (chroma upsampling and
    integer DCT differ; measured 46-49 dB vs cv2 at q30-95 on an LFW face, while JPEG itself
    is 35-45 dB from the original): the aim is the right kind of loss, not bit-exactness.
    """
    B, C, H, W = x.shape
    if C != 3:
        raise ConfigError(f"jpeg_approx expects RGB (B, 3, H, W), got {tuple(x.shape)}")
    qs = [int(quality)] * B if np.isscalar(quality) else [int(v) for v in quality]
    tabs = [jpeg_quant_tables(q) for q in qs]
    ql = torch.as_tensor(np.stack([t[0] for t in tabs]), dtype=x.dtype, device=x.device)
    qc = torch.as_tensor(np.stack([t[1] for t in tabs]), dtype=x.dtype, device=x.device)
    oy, ox = offset[0] % 8, offset[1] % 8
    Hp, Wp = -(-(H + oy) // 16) * 16, -(-(W + ox) // 16) * 16
    xp = F.pad(x, (ox, Wp - W - ox, oy, Hp - H - oy), mode="replicate")
    r, g, b = xp[:, 0], xp[:, 1], xp[:, 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b - 128.0
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b
    D = _dct_matrix(x.device, x.dtype)
    y = _blocks_dct(y, ql, D, rounding) + 128.0
    chroma = F.avg_pool2d(torch.stack([cb, cr], 1), 2)
    chroma = torch.stack([_blocks_dct(chroma[:, i], qc, D, rounding) for i in range(2)], 1)
    chroma = F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False)
    cb, cr = chroma[:, 0], chroma[:, 1]
    out = torch.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], 1)
    return out[:, :, oy:oy + H, ox:ox + W].clamp(0.0, 255.0)

"""Where a perturbation can hide: a per-pixel texture weight (a simple JND-style mask).

People see a change on flat skin (cheeks, forehead) long before the same change in hair,
brows, beard or eyes (contrast masking). ``texture_weight`` is high where the local luminance
varies and low where it is flat, normalised to mean 1 over the face so a budget scaled by it
spends the same total energy, only elsewhere. Differentiable-free (computed from the clean
image), cheap (two box filters), and defined at whatever resolution it is given.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError

__all__ = ["texture_weight", "default_radius", "TEXTURE_MAX"]

_LUMA = (0.299, 0.587, 0.114)
TEXTURE_MAX = 3.0  # largest weight: a texture-weighted bound reaches at most 3x its flat value


def _box(x: torch.Tensor, r: int) -> torch.Tensor:
    # Border windows average only the pixels inside (no Pad op: one AveragePool in ONNX).
    return F.avg_pool2d(x, 2 * r + 1, stride=1, padding=r, count_include_pad=False)


def default_radius(size: int) -> int:
    """Local window half-size for a ``size``-px face crop: 4 px at 256, the scale of skin
    pores and hair strands there."""
    return max(1, round(size / 64))


def texture_weight(x: torch.Tensor, power: float = 1.0, lo: float = 0.3, hi: float = TEXTURE_MAX,
                   radius: int | None = None, floor: float = 2.0,
                   mask: torch.Tensor | None = None, detail: float = 0.0) -> torch.Tensor:
    """(B, 1, H, W) weight of float (B, 3, H, W) RGB [0, 255]: (local luminance std + floor)
    ** power, normalised to mean 1 (weighted by ``mask`` when given), clipped to [lo, hi].

    ``radius``: local window half-size (default ``default_radius(W)``). ``floor`` (grey levels) keeps sensor-noise-level
    texture from counting as texture. ``power`` 0 gives a flat weight of 1.
    ``detail`` in [0, 1]: how much of the measure is the local RMS of the luminance's fine
    detail (luminance minus its 3x3 mean) rather than its std: std^(1 − detail) · RMS^detail.
    The std also counts smooth shading (the sides of the nose, the eye sockets) as texture, yet
    shading masks nothing: level max's perturbation, given budget there, showed as soft dark
    blotches on a large face. A linear ramp has no detail at all.
    """
    if not 0.0 <= detail <= 1.0:
        raise ConfigError(f"texture detail share must be in [0, 1], got {detail}")
    if power == 0:
        return x.new_ones(x.shape[0], 1, *x.shape[2:])
    r = radius if radius is not None else default_radius(int(x.shape[-1]))
    w = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    y = (x * w).sum(1, keepdim=True)
    measure = None
    if detail < 1:
        m1, m2 = _box(y, r), _box(y * y, r)
        measure = (m2 - m1 * m1).clamp_min(0).sqrt()  # local std
    if detail > 0:
        fine = _box((y - _box(y, 1)) ** 2, r).sqrt()
        measure = fine if measure is None else measure ** (1 - detail) * fine ** detail
    t = measure + floor if power == 1 else (measure + floor) ** power
    m = mask if mask is not None else torch.ones_like(t)
    t = t / ((t * m).sum(dim=(2, 3), keepdim=True) / m.sum(dim=(2, 3), keepdim=True).clamp_min(1e-6))
    return t.clamp(lo, hi)

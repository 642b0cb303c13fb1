"""Temporal stability of a cloak: how much the applied perturbation changes between frames.

``flicker`` = mean over consecutive frame pairs of mean |p_t - p_{t-1}| (grey levels) over
the pixels the cloak touched in either frame, where p = cloaked - clean (int16). On a static
scene an ideal video cloak gives ~0; a per-frame random perturbation gives ~its own size.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

__all__ = ["perturbation_flicker"]


def perturbation_flicker(clean: Iterable[np.ndarray], cloaked: Iterable[np.ndarray]) -> dict:
    """{"flicker": mean |Δp| between frames, "magnitude": mean |p|, both over touched pixels,
    "frames": pairs counted}."""
    prev = None
    diffs, mags = [], []
    for c, k in zip(clean, cloaked):
        p = k.astype(np.int16) - c.astype(np.int16)
        touched_now = np.abs(p).max(-1) > 0
        if touched_now.any():
            mags.append(float(np.abs(p[touched_now]).mean()))
        if prev is not None:
            touched = touched_now | (np.abs(prev).max(-1) > 0)
            if touched.any():
                diffs.append(float(np.abs(p[touched] - prev[touched]).mean()))
        prev = p
    return {"flicker": float(np.mean(diffs)) if diffs else 0.0,
            "magnitude": float(np.mean(mags)) if mags else 0.0, "frames": len(diffs)}

"""One-Euro filter (Casiez et al., CHI 2012) for landmark tracks.

Why One-Euro rather than a plain EMA: a fixed EMA either leaves detector jitter on a still
face (flicker in the aligned crop, so in the perturbation) or lags a moving one (the
perturbation slides off the face). One-Euro lowers its cutoff when the face is still and
raises it with speed. Speed is measured in face sizes per second, so the same settings work
for a 40 px face and a 400 px one; timestamps come from the video, so variable frame rate
is handled.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["OneEuro"]


def _alpha(cutoff_hz: float, dt: float) -> float:
    tau = 1.0 / (2.0 * math.pi * cutoff_hz)
    return 1.0 / (1.0 + tau / dt)


class OneEuro:
    """Smooths an array signal sampled at irregular times.

    min_cutoff: Hz at rest (lower = steadier, more lag when starting to move).
    beta: how fast the cutoff rises with speed (per face-size/second).
    d_cutoff: Hz of the filter on the speed estimate itself.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 10.0, d_cutoff: float = 1.0) -> None:
        self.min_cutoff, self.beta, self.d_cutoff = float(min_cutoff), float(beta), float(d_cutoff)
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t: float | None = None

    def reset(self, x: np.ndarray, t: float) -> np.ndarray:
        self._x = np.array(x, np.float64)
        self._dx = np.zeros_like(self._x)
        self._t = float(t)
        return self._x.copy()

    def __call__(self, x: np.ndarray, t: float, scale: float = 1.0) -> np.ndarray:
        """Filtered value of ``x`` at time ``t`` (seconds); ``scale`` = face size in px."""
        if self._x is None or self._t is None:
            return self.reset(x, t)
        dt = float(t) - self._t
        if dt <= 0:  # repeated or out-of-order timestamp: treat as one frame at 30 fps
            dt = 1.0 / 30.0
        x = np.asarray(x, np.float64)
        dx = (x - self._x) / dt
        a_d = _alpha(self.d_cutoff, dt)
        self._dx = a_d * dx + (1.0 - a_d) * self._dx
        speed = float(np.abs(self._dx).max()) / max(scale, 1.0)
        a = _alpha(self.min_cutoff + self.beta * speed, dt)
        self._x = a * x + (1.0 - a) * self._x
        self._t = float(t)
        return self._x.copy()

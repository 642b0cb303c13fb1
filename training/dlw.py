"""Dynamic Loss Weighting over the c recogniser losses, exactly as DESIGN.md §1 (paper §3.3):

    σ_i²  = variance of L_i over the last k iterations (this one included)
    Δ_i   = max((L_i(t−1) − L_i(t)) / (L_i(t−1) + ε), −1)          relative progress
    β(t_e) = min(β_init + γ·t_e, β*)                                  t_e = epoch
    w_i   = max(1 / max(α·σ_i² + β(t_e)·(1 + Δ_i), ε_d), ε_w)
    ŵ_i   = c · w_i / Σ_j w_j                                         (Σ ŵ = c)

A noisy loss (large σ²) and a fast-improving one (large Δ) get less weight; a stalled or
worsening one (Δ ≤ 0) gets more. Weights are plain floats: they never carry gradients.
Mode "mean" returns ŵ_i = 1 (a plain average scaled to the same total c): the ablation.
"""
from __future__ import annotations

from collections import deque

import numpy as np

from nullswap_sdk.errors import ConfigError

from .config import DLWConfig

__all__ = ["DynamicLossWeighting", "beta_schedule"]


def beta_schedule(epoch: float, cfg: DLWConfig) -> float:
    return min(cfg.beta_init + cfg.gamma * epoch, cfg.beta_max)


class DynamicLossWeighting:
    """Call ``update(losses, epoch)`` once per iteration with the current L_i values."""

    def __init__(self, n: int, cfg: DLWConfig | None = None) -> None:
        self.cfg = cfg = cfg or DLWConfig()
        if n < 1:
            raise ConfigError(f"DLW needs at least one loss, got {n}")
        if cfg.k < 2:
            raise ConfigError(f"dlw.k must be ≥ 2 (a variance needs two values), got {cfg.k}")
        if cfg.mode not in ("dlw", "mean"):
            raise ConfigError(f"dlw.mode must be 'dlw' or 'mean', got {cfg.mode!r}")
        self.n = n
        self.history: deque[np.ndarray] = deque(maxlen=cfg.k)
        self.last: dict[str, list[float]] = {}

    def update(self, losses, epoch: float) -> np.ndarray:
        """Record this iteration's losses and return the normalised weights ŵ (sum = n)."""
        cur = np.asarray([float(v) for v in losses], dtype=np.float64)
        if cur.shape != (self.n,):
            raise ConfigError(f"expected {self.n} losses, got {cur.shape[0] if cur.ndim else 'a scalar'}")
        if not np.isfinite(cur).all():
            raise ConfigError(f"non-finite loss values {cur.tolist()}", hint="lower the learning rate")
        prev = self.history[-1] if self.history else None
        self.history.append(cur)
        if self.cfg.mode == "mean":
            w_hat = np.ones(self.n)
            self.last = {"weights": w_hat.tolist()}
            return w_hat
        c = self.cfg
        hist = np.stack(self.history)
        var = hist.var(axis=0) if len(hist) >= 2 else np.zeros(self.n)
        delta = np.zeros(self.n) if prev is None else np.maximum((prev - cur) / (prev + c.eps), -1.0)
        beta = beta_schedule(epoch, c)
        w = np.maximum(1.0 / np.maximum(c.alpha * var + beta * (1.0 + delta), c.eps_d), c.eps_w)
        w_hat = self.n * w / w.sum()
        self.last = {"weights": w_hat.tolist(), "var": var.tolist(), "delta": delta.tolist(), "beta": beta}
        return w_hat

    def state_dict(self) -> dict:
        return {"history": [h.tolist() for h in self.history], "n": self.n}

    def load_state_dict(self, state: dict) -> None:
        if state.get("n") != self.n:
            raise ConfigError(f"DLW state has {state.get('n')} losses, this run has {self.n}",
                              hint="resume with the same recognisers")
        self.history.clear()
        for h in state["history"][-self.cfg.k:]:
            self.history.append(np.asarray(h, dtype=np.float64))

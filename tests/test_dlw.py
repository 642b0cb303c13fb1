"""Dynamic Loss Weighting (DESIGN.md §1), checked against the formula by hand."""
from __future__ import annotations

import numpy as np
import pytest

from nullswap_sdk.errors import ConfigError
from training.config import DLWConfig
from training.dlw import DynamicLossWeighting, beta_schedule


def test_weights_sum_to_c():
    rng = np.random.default_rng(0)
    dlw = DynamicLossWeighting(3, DLWConfig())
    for t in range(50):
        w = dlw.update(0.5 + 0.1 * rng.random(3), epoch=t // 10)
        assert w.shape == (3,) and np.isclose(w.sum(), 3.0) and (w > 0).all()


def test_matches_formula():
    cfg = DLWConfig(alpha=3.0, gamma=0.1, k=3, beta_init=0.5, beta_max=2.0, eps=1e-8, eps_d=1e-2, eps_w=1e-2)
    dlw = DynamicLossWeighting(2, cfg)
    hist = [[0.9, 0.8], [0.8, 0.8], [0.7, 0.9], [0.6, 0.85]]
    for h in hist:
        w = dlw.update(h, epoch=4)
    last3 = np.array(hist[-3:])
    var = last3.var(0)
    delta = np.maximum((np.array(hist[-2]) - np.array(hist[-1])) / (np.array(hist[-2]) + 1e-8), -1)
    beta = min(0.5 + 0.1 * 4, 2.0)
    raw = np.maximum(1 / np.maximum(3.0 * var + beta * (1 + delta), 1e-2), 1e-2)
    assert np.allclose(w, 2 * raw / raw.sum())
    assert np.allclose(dlw.last["var"], var) and np.isclose(dlw.last["beta"], beta)


def test_hand_computed_values():
    """Worked by hand, not by re-running the formula: α = 1, k = 2, epoch 0 (β = 0.5).
    L1: 0.8 → 0.6, so σ1² = 0.01 (population variance of {0.8, 0.6}), Δ1 = 0.2/0.8 = 0.25,
    w1 = 1/(0.01 + 0.5·1.25) = 1/0.635; L2: 0.5 → 0.5, σ2² = 0, Δ2 = 0, w2 = 1/0.5 = 2.
    ŵ = 2·w/Σw = (0.881057, 1.118943). Epoch 3 (β = 0.8): w1 = 1/1.01, w2 = 1.25 →
    ŵ = (0.883978, 1.116022)."""
    cfg = DLWConfig(alpha=1.0, gamma=0.1, k=2, beta_init=0.5, beta_max=2.0, eps=0.0)
    dlw = DynamicLossWeighting(2, cfg)
    assert np.allclose(dlw.update([0.8, 0.5], epoch=0), [1.0, 1.0])  # first step: σ² = Δ = 0
    assert np.allclose(dlw.update([0.6, 0.5], epoch=0), [0.881057, 1.118943], atol=1e-6)
    dlw = DynamicLossWeighting(2, cfg)
    dlw.update([0.8, 0.5], epoch=3)
    assert np.allclose(dlw.update([0.6, 0.5], epoch=3), [0.883978, 1.116022], atol=1e-6)


def test_noisy_loss_gets_less_weight():
    rng = np.random.default_rng(1)
    dlw = DynamicLossWeighting(2, DLWConfig(alpha=10.0))
    ws = []
    for _ in range(200):  # same mean, loss 0 noisy; zero-mean noise so Δ averages out
        ws.append(dlw.update([0.6 + 0.15 * rng.standard_normal(), 0.6 + 0.001 * rng.standard_normal()], 0))
    assert np.mean(ws[30:], axis=0)[0] < np.mean(ws[30:], axis=0)[1]


def test_stalled_loss_gets_more_weight():
    dlw = DynamicLossWeighting(2, DLWConfig())
    for t in range(40):  # loss 0 improves 3 % per step, loss 1 is stuck
        w = dlw.update([0.9 * 0.97 ** t, 0.7], 0)
    assert w[1] > w[0]
    w = dlw.update([0.9 * 0.97 ** 40, 0.75], 0)  # getting worse: Δ < 0 → even more weight
    assert w[1] > 1.0


def test_beta_schedule():
    cfg = DLWConfig(beta_init=0.5, gamma=0.1, beta_max=2.0)
    assert beta_schedule(0, cfg) == 0.5
    assert np.isclose(beta_schedule(5, cfg), 1.0)
    assert beta_schedule(100, cfg) == 2.0


def test_delta_clipped_and_floors():
    cfg = DLWConfig(alpha=0.0, eps_d=0.5, eps_w=0.1)
    dlw = DynamicLossWeighting(2, cfg)
    dlw.update([1.0, 1.0], 0)
    w = dlw.update([5.0, 1.0], 0)  # Δ0 = −4 → clipped to −1 → β·0 = 0 → denominator floored at ε_d
    assert np.isclose(dlw.last["delta"][0], -1.0)
    assert np.allclose(w, 2 * np.array([2.0, 2.0]) / 4.0)  # 1/0.5 = 2 vs 1/(0.5·1) = 2


def test_plain_average_mode():
    dlw = DynamicLossWeighting(3, DLWConfig(mode="mean"))
    for t in range(5):
        w = dlw.update([0.1 * t, 0.5, 0.9 - 0.1 * t], 0)
        assert np.array_equal(w, np.ones(3))


def test_state_round_trip_and_errors():
    a = DynamicLossWeighting(2)
    for t in range(10):
        a.update([0.5 + 0.01 * t, 0.4], 0)
    b = DynamicLossWeighting(2)
    b.load_state_dict(a.state_dict())
    assert np.allclose(a.update([0.3, 0.4], 1), b.update([0.3, 0.4], 1))
    with pytest.raises(ConfigError):
        a.update([0.1], 0)
    with pytest.raises(ConfigError):
        a.update([float("nan"), 0.1], 0)
    with pytest.raises(ConfigError):
        DynamicLossWeighting(2).load_state_dict(DynamicLossWeighting(3).state_dict())

"""Metrics against straightforward references (direct loops / brute force) on odd shapes."""
from __future__ import annotations

import math

import numpy as np
import pytest

from nullswap_sdk.errors import ConfigError, InputError
from nullswap_sdk.evaluation.metrics import cosine, psnr, roc_auc, ssim, top1_identification


def _img(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _smooth(h, w, seed=0):
    # Natural-ish image: smooth gradients + mild texture, so SSIM is not dominated by noise.
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 200 / w, yy * 200 / h, (xx + yy) * 100 / (h + w)], -1) + 20
    noise = np.random.default_rng(seed).normal(0, 10, (h, w, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _noisy(img, std, seed=1):
    n = np.random.default_rng(seed).normal(0, std, img.shape)
    return np.clip(img + n, 0, 255).round().astype(np.uint8)


# ---------- references written from the definitions ----------

def _ref_psnr(a, b):
    mse = sum((int(x) - int(y)) ** 2 for x, y in zip(a.ravel(), b.ravel())) / a.size
    return 10 * math.log10(255 ** 2 / mse)


def _ref_ssim(a, b):
    """Wang et al. 2004 by direct loops: every 11x11 window fully inside, per channel."""
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5 ** 2))
    w = np.outer(g, g)
    w /= w.sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    h, wd = a.shape[:2]
    chans = []
    for c in range(3):
        vals = []
        for i in range(h - 10):
            for j in range(wd - 10):
                x = a[i:i + 11, j:j + 11, c].astype(np.float64)
                y = b[i:i + 11, j:j + 11, c].astype(np.float64)
                mx, my = (w * x).sum(), (w * y).sum()
                vx = (w * (x - mx) ** 2).sum()
                vy = (w * (y - my) ** 2).sum()
                cxy = (w * (x - mx) * (y - my)).sum()
                vals.append(((2 * mx * my + c1) * (2 * cxy + c2))
                            / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2)))
        chans.append(np.mean(vals))
    return float(np.mean(chans))


# ---------- PSNR ----------

@pytest.mark.parametrize("shape", [(37, 53), (1, 1), (16, 9)])
def test_psnr_matches_reference(shape):
    a = _img(*shape, seed=2)
    b = _noisy(a, 12)
    if np.array_equal(a, b):
        b = a ^ 1
    assert psnr(a, b) == pytest.approx(_ref_psnr(a, b), rel=1e-12)


def test_psnr_identical_is_inf_and_box_restricts():
    a = _img(37, 53)
    assert psnr(a, a.copy()) == math.inf
    b = a.copy()
    b[30:, 40:] ^= 0xFF  # change only the bottom-right corner
    assert psnr(a, b, box=(0, 0, 40, 30)) == math.inf
    assert psnr(a, b, box=(40, 30, 53, 37)) == pytest.approx(_ref_psnr(a[30:, 40:], b[30:, 40:]))
    # Boxes poking outside the image are clipped; float boxes cover every touched pixel.
    assert psnr(a, b, box=(39.5, 29.2, 999, 999)) == pytest.approx(_ref_psnr(a[29:, 39:], b[29:, 39:]))


def test_psnr_data_range():
    a = _img(37, 53)
    b = _noisy(a, 5)
    assert psnr(a, b, data_range=1) == pytest.approx(psnr(a, b) - 20 * math.log10(255))


def test_shape_mismatch_and_bad_input():
    a = _img(37, 53)
    with pytest.raises(ConfigError, match=r"\(37, 53, 3\).*\(53, 37, 3\)"):
        psnr(a, _img(53, 37))
    with pytest.raises(ConfigError):
        ssim(a, _img(36, 53))
    with pytest.raises(InputError, match="uint8"):
        psnr(a.astype(np.float32), a.astype(np.float32))
    with pytest.raises(InputError, match=r"\(H, W, 3\)"):
        psnr(a[..., 0], a[..., 0])
    with pytest.raises(ConfigError, match="empty"):
        psnr(a, a, box=(10, 10, 10, 20))


# ---------- SSIM ----------

@pytest.mark.parametrize("shape,std", [((13, 17), 15), ((24, 19), 40), ((11, 11), 5)])
def test_ssim_matches_loop_reference(shape, std):
    a = _smooth(*shape, seed=3)
    b = _noisy(a, std, seed=4)
    assert ssim(a, b) == pytest.approx(_ref_ssim(a, b), abs=1e-9)


def test_ssim_reference_on_box():
    a = _smooth(37, 53, seed=5)
    b = _noisy(a, 20, seed=6)
    box = (7, 3, 30, 20)
    assert ssim(a, b, box=box) == pytest.approx(_ref_ssim(a[3:20, 7:30], b[3:20, 7:30]), abs=1e-9)


def test_ssim_properties():
    a = _smooth(37, 53)
    assert ssim(a, a.copy()) == 1.0
    s_small, s_big = ssim(a, _noisy(a, 5)), ssim(a, _noisy(a, 30))
    assert 1.0 > s_small > s_big > 0.0
    # Symmetric in its arguments.
    b = _noisy(a, 10)
    assert ssim(a, b) == pytest.approx(ssim(b, a), abs=1e-12)
    with pytest.raises(ConfigError, match="11x11"):
        ssim(a, a, box=(0, 0, 10, 30))


# ---------- recognition metrics ----------

def test_cosine_rowwise():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(7, 5)), rng.normal(size=(7, 5))
    ref = [float(x @ y / np.linalg.norm(x) / np.linalg.norm(y)) for x, y in zip(a, b)]
    np.testing.assert_allclose(cosine(a, b), ref, rtol=1e-12)
    np.testing.assert_allclose(cosine(a, 3 * a), 1.0)
    assert cosine(np.zeros((1, 5)), b[:1])[0] == 0.0  # zero vector: 0, not NaN
    with pytest.raises(ConfigError, match=r"\(7, 5\).*\(7, 4\)"):
        cosine(a, b[:, :4])


def test_top1_identification():
    rng = np.random.default_rng(1)
    gallery = rng.normal(size=(6, 8))
    gids = np.array(["a", "b", "c", "d", "e", "f"])
    probes = gallery[[0, 1, 2, 3]] + 0.01 * rng.normal(size=(4, 8))
    assert top1_identification(gallery, gids, probes, ["a", "b", "c", "d"]) == 1.0
    assert top1_identification(gallery, gids, probes, ["a", "b", "x", "x"]) == 0.5
    # Scale of an embedding must not matter (cosine, not Euclidean).
    assert top1_identification(gallery * 100, gids, probes * 0.01, ["a", "b", "c", "d"]) == 1.0
    with pytest.raises(ConfigError):
        top1_identification(gallery, gids[:5], probes, ["a", "b", "c", "d"])


def _ref_auc(s, y):
    pos = [v for v, t in zip(s, y) if t]
    neg = [v for v, t in zip(s, y) if not t]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(5))
def test_roc_auc_matches_pairwise_count(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 60))
    y = rng.integers(0, 2, n).astype(bool)
    y[0], y[1] = True, False
    s = rng.integers(0, 6, n) / 5.0  # coarse values → many ties
    assert roc_auc(s, y) == pytest.approx(_ref_auc(s, y), abs=1e-12)


def test_roc_auc_edges():
    assert roc_auc([0.1, 0.9], [0, 1]) == 1.0
    assert roc_auc([0.9, 0.1], [0, 1]) == 0.0
    assert roc_auc([0.5, 0.5, 0.5], [1, 0, 1]) == 0.5
    with pytest.raises(ConfigError, match="both classes"):
        roc_auc([0.1, 0.2], [1, 1])
    with pytest.raises(InputError):
        roc_auc([0.1, float("nan")], [1, 0])

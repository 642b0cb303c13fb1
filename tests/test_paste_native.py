"""The C++ paste-back kernel vs the NumPy/OpenCV reference path (nullswap_sdk.faces.paste)."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from nullswap_sdk.errors import ConfigError
from nullswap_sdk.faces import paste as paste_mod
from nullswap_sdk.faces.paste import crop_footprint_box, native_paste_available, paste_delta

needs_native = pytest.mark.skipif(not native_paste_available(),
                                  reason="C++ kernel nullswap_sdk.kernels._paste not built (pip install -e .)")


def _similarity(scale: float, angle_deg: float, tx: float, ty: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    c, s = scale * np.cos(a), scale * np.sin(a)
    return np.array([[c, -s, tx], [s, c, ty]])


# (H, W, C, S, M image→crop, feather): enlarging and shrinking pastes (the latter blurs
# first), rotations, crops hanging over every image edge, RGBA.
CASES = [
    (97, 131, 3, 64, _similarity(0.7, 17.0, -20.0, 5.0), 0.0625),
    (120, 83, 4, 48, _similarity(1.9, -33.0, 10.0, -30.0), 0.1),  # shrink → antialias blur
    (64, 64, 3, 40, _similarity(0.5, 90.0, 30.0, -5.0), 0.0),
    (75, 210, 3, 37, _similarity(0.33, -170.0, 70.0, 60.0), 0.25),  # odd crop, hangs off
    (301, 199, 3, 64, _similarity(0.25, 5.0, -10.0, -12.0), 0.0625),  # face larger than crop
]


@needs_native
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}x{c[1]}x{c[2]}-S{c[3]}-f{c[5]}")
def test_native_matches_reference(case):
    H, W, C, S, M, feather = case
    rng = np.random.default_rng(H * W)
    img = rng.integers(0, 256, (H, W, C), dtype=np.uint8)
    img[::7, ::5, :3] = 255  # saturated pixels exercise the clamp
    img[3::11, 2::9, :3] = 0
    delta = rng.normal(0, 6.0, (S, S, 3)).astype(np.float32)
    ref = paste_delta(img, delta, M, feather=feather, native=False)
    got = paste_delta(img, delta, M, feather=feather, native=True, threads=3)
    x0, y0, x1, y1 = crop_footprint_box(M, S, img.shape)
    assert x1 > x0 and y1 > y0
    diff = np.abs(got.astype(int) - ref.astype(int))
    assert diff.max() <= 1, f"max diff {diff.max()}"
    assert (diff > 0).mean() < 0.02  # off-by-one only at rounding ties of OpenCV's 1/32-px grid
    outside = np.ones((H, W), bool)
    outside[y0:y1, x0:x1] = False
    np.testing.assert_array_equal(got[outside], img[outside])
    np.testing.assert_array_equal(got[..., 3:], img[..., 3:])  # alpha untouched
    assert (got != img).any()  # the paste did something


@needs_native
def test_native_threads_and_in_place_agree():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (257, 263, 3), dtype=np.uint8)
    delta = rng.normal(0, 5.0, (96, 96, 3)).astype(np.float32)
    M = _similarity(0.45, 23.0, -15.0, 8.0)
    one = paste_delta(img, delta, M, native=True, threads=1)
    inplace = img.copy()
    assert paste_delta(inplace, delta, M, native=True, threads=4, out=inplace) is inplace
    np.testing.assert_array_equal(inplace, one)
    np.testing.assert_array_equal(paste_delta(img, np.zeros_like(delta), M, native=True), img)


def test_non_contiguous_out_uses_reference_path():
    rng = np.random.default_rng(1)
    big = rng.integers(0, 256, (80, 160, 3), dtype=np.uint8)
    view = big[:, ::2]  # strided: the kernel needs C-contiguous rows, so the reference runs
    delta = rng.normal(0, 5.0, (32, 32, 3)).astype(np.float32)
    M = _similarity(0.6, 10.0, 0.0, 0.0)
    expect = paste_delta(np.ascontiguousarray(view), delta, M, native=False)
    paste_delta(view, delta, M, out=view)
    np.testing.assert_array_equal(view, expect)


def test_fallback_is_logged_once(monkeypatch, caplog):
    import sys

    monkeypatch.setitem(sys.modules, "nullswap_sdk.kernels._paste", None)  # import now fails
    monkeypatch.setattr(paste_mod, "_NATIVE", [])
    img = np.zeros((40, 40, 3), np.uint8)
    delta = np.full((16, 16, 3), 3.0, np.float32)
    with caplog.at_level(logging.WARNING, logger="nullswap_sdk.faces.paste"):
        a = paste_delta(img, delta, _similarity(0.5, 0.0, 0.0, 0.0))
        paste_delta(img, delta, _similarity(0.5, 0.0, 0.0, 0.0))
    msgs = [r.getMessage() for r in caplog.records if "fallback" in r.getMessage()]
    assert len(msgs) == 1 and "_paste" in msgs[0]
    assert a.max() == 3
    with pytest.raises(Exception, match="not built"):
        paste_delta(img, delta, _similarity(0.5, 0.0, 0.0, 0.0), native=True)


def test_threads_must_be_non_negative():
    with pytest.raises(ConfigError, match="threads"):
        paste_delta(np.zeros((8, 8, 3), np.uint8), np.zeros((4, 4, 3), np.float32), np.eye(2, 3), threads=-1)

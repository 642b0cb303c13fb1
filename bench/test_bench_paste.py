"""Paste-back latency: the fused C++ kernel vs the NumPy/OpenCV reference path.

    python3 -m pytest bench/test_bench_paste.py --benchmark-columns=median,iqr,rounds

One face per frame, 256-px crop (the Cloaker's ``cloak256``), feather 0.0625, rotated 12°;
its footprint in the frame is ~40 % of the frame height (a close-up, the costly case).
"""
from __future__ import annotations

import numpy as np
import pytest

from nullswap_sdk.faces.paste import native_paste_available, paste_delta

FRAMES = {"1080p": (1080, 1920), "12MP": (3000, 4000)}
S = 256


def _case(name: str):
    H, W = FRAMES[name]
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    delta = rng.normal(0, 4.0, (S, S, 3)).astype(np.float32)
    side = 0.4 * H  # footprint side in frame pixels
    k, a = S / side, np.deg2rad(12.0)
    c, s = k * np.cos(a), k * np.sin(a)
    cx, cy = W / 2, H / 2  # crop centre sits on the frame centre
    M = np.array([[c, -s, 0.0], [s, c, 0.0]])
    M[:, 2] = (S - 1) / 2 - M[:, :2] @ [cx, cy]
    return img, delta, M


IMPLS = {"opencv_numpy": dict(native=False), "cpp_1thread": dict(native=True, threads=1),
         "cpp_all_threads": dict(native=True, threads=0)}


@pytest.mark.parametrize("frame", list(FRAMES))
@pytest.mark.parametrize("impl", list(IMPLS))
def test_paste(benchmark, frame, impl):
    if IMPLS[impl].get("native") and not native_paste_available():
        pytest.skip("C++ kernel not built")
    img, delta, M = _case(frame)
    benchmark.group = f"paste {frame}"
    # in place (out=img), as the Cloaker and the video loop paste: no full-frame copy is timed
    benchmark.pedantic(paste_delta, args=(img, delta, M), kwargs=dict(out=img, **IMPLS[impl]),
                       rounds=15, warmup_rounds=2, iterations=1)

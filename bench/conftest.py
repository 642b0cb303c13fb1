"""Shared benchmark fixtures. Run: ``OMP_NUM_THREADS=1 python3 -m pytest bench/ --benchmark-only``.

One thread everywhere (torch here; ONNX Runtime and YuNet default to it or are pinned by the
backend): the reference machine has 2 cores, one of them taken by a training job.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from photos import compose_photo, lfw_photos  # noqa: E402

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass

MODEL = "nullswap-net"  # the shipped network, named so that a PGD default can never sneak in


@pytest.fixture(scope="session")
def cloaker():
    from nullswap_sdk import Cloaker

    with Cloaker.from_pretrained(MODEL) as c:
        yield c


@pytest.fixture(scope="session")
def photo():
    """photo(size, n_faces) -> (h, w, 3) uint8 canvas with n real LFW faces; skips without data."""
    cache: dict = {}

    def make(hw: tuple[int, int], n: int):
        key = (hw, n)
        if key not in cache:
            faces = lfw_photos(n)
            if faces is None:
                pytest.skip("LFW data (../shared/data/lfw) not available")
            cache[key] = compose_photo(*hw, faces)
        return cache[key]

    return make

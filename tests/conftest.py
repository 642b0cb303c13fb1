"""Shared fixtures: real research data is optional; tests needing it skip cleanly."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# Two OpenMP threads on a 2-core machine that is also running anything else spin-wait
# badly (measured: PGD 27 s vs 1.3 s per face). Tests pin torch to one thread.
try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass

DATA_DIR = Path(os.environ.get("NULLSWAP_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


def data_path(*parts: str) -> Path:
    p = DATA_DIR.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"research data not available: {p}")
    return p


@pytest.fixture(scope="session")
def lfw_photo_path() -> Path:
    """A real 250x250 LFW photo with one face."""
    return data_path("lfw", "Aaron_Eckhart", "Aaron_Eckhart_0001.jpg")


@pytest.fixture(scope="session")
def lfw_rgb(lfw_photo_path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(lfw_photo_path).convert("RGB"))


@pytest.fixture(scope="session")
def celeba_photo_path() -> Path:
    root = data_path("celeba-wild")
    return sorted(root.glob("*/*.jpg"))[0]

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


def lfw_face_tiles(n: int, size: int = 160) -> list[np.ndarray]:
    """``n`` centre crops (size x size RGB) of distinct LFW identities, one face each.

    LFW photos are 250 px with the face roughly centred; a 160 px centre crop drops most
    background people. Skips the test when the data is absent.
    """
    from PIL import Image

    root = data_path("lfw")
    tiles = []
    for ident in sorted(p for p in root.iterdir() if p.is_dir()):
        photo = ident / f"{ident.name}_0001.jpg"
        if photo.is_file():
            rgb = np.asarray(Image.open(photo).convert("RGB"))
            o0, o1 = (rgb.shape[0] - size) // 2, (rgb.shape[1] - size) // 2
            tiles.append(np.ascontiguousarray(rgb[o0:o0 + size, o1:o1 + size]))
        if len(tiles) == n:
            return tiles
    pytest.skip(f"only {len(tiles)} LFW identities available, need {n}")


def compose_grid(tiles: list[np.ndarray], cols: int) -> np.ndarray:
    """Tiles laid out row-major in a grid: one photo with ``len(tiles)`` faces."""
    size = tiles[0].shape[0]
    rows = -(-len(tiles) // cols)
    canvas = np.full((rows * size, cols * size, 3), 128, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        canvas[r * size:(r + 1) * size, c * size:(c + 1) * size] = t
    return canvas


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster (2 CPUs) for the whole test run; skips without the [ray] extra."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    # A loaded 2-core box can take > 5 s to start Serve's HTTP proxy; the default readiness
    # check then kills it (seen once in a clean-clone CI run beside a training job). Workers
    # inherit these from the driver when ray.init starts the local cluster.
    for var in ("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S"):
        os.environ.setdefault(var, "60")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()

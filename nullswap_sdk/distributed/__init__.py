"""Cloak photo collections on a Ray cluster with Ray Data (needs the ``[ray]`` extra).

>>> from nullswap_sdk.distributed import cloak_dataset, BatchConfig
>>> report = cloak_dataset("photos/", "cloaked/", config=BatchConfig(workers=2), address="local")
>>> report.summary()
'1200/1200 image(s) written, 1187 face(s) cloaked, 31 without faces, 0 failed, 0 skipped'

Images are read with ``ray.data.read_binary_files`` (local folders, or ``s3://``, ``gs://``,
``abfs://`` ... URIs that pyarrow filesystems handle), cloaked by ``map_batches`` on a pool of
actors that each load one ``Cloaker`` once (``num_gpus`` fractions on GPU nodes), and written
atomically to a tree that mirrors the input. Importing this package loads no Ray.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .config import BatchConfig
from .report import BatchReport, ImageOutcome

if TYPE_CHECKING:
    from .run import cloak_dataset, connect, run_batch

__all__ = ["BatchConfig", "BatchReport", "ImageOutcome", "cloak_dataset", "run_batch", "connect"]


def __getattr__(name: str):
    if name in ("cloak_dataset", "run_batch", "connect"):
        from . import run

        return getattr(run, name)
    raise AttributeError(f"module 'nullswap_sdk.distributed' has no attribute {name!r}")

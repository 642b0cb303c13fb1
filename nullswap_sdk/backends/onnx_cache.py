"""The ONNX graph that the ONNX Runtime backends run, built from the weights on first use.

Nothing ships besides the safetensors weights: the graph is exported by
``nullswap_sdk.export.onnx`` into ``$NULLSWAP_CACHE_DIR/onnx`` (default ``~/.cache/nullswap``),
under a name keyed by the weights' sha256, the export format, the precision, the opset and
a hash of the network/exporter source and torch version, so new weights or changed code
never reuse a stale graph. Writes are atomic (unique
temporary file, then rename): processes racing on a cold cache each export and the last
rename wins with the same bytes. An unwritable cache only costs a re-export (~1–2 s) per
process; a cached file that fails to parse or names other weights is rebuilt.
"""
from __future__ import annotations

import hashlib
import logging
import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the network package imports this one
    from ..network.model import NullSwapNet


__all__ = ["cache_dir", "cached_onnx", "onnx_cache_path"]

log = logging.getLogger(__name__)
SHA_KEY = "nullswap.weights_sha256"


def cache_dir() -> Path:
    return Path(os.environ.get("NULLSWAP_CACHE_DIR") or Path.home() / ".cache" / "nullswap")


@lru_cache(maxsize=1)
def _code_key() -> str:
    """Hash of the code that defines the graph (network + exporter) and torch's version: an
    edited forward pass must not reuse a graph exported from the old one."""
    import torch

    from ..export import onnx as export_onnx_module
    from ..network import model as model_module

    h = hashlib.sha256(torch.__version__.encode())
    for mod in (model_module, export_onnx_module):
        h.update(Path(mod.__file__).read_bytes())
    return h.hexdigest()[:12]


def onnx_cache_path(weights_sha256: str, precision: str) -> Path:
    from ..export.onnx import DEFAULT_OPSET, EXPORT_FORMAT

    name = f"{weights_sha256[:32]}-{EXPORT_FORMAT}-{precision}-opset{DEFAULT_OPSET}-{_code_key()}.onnx"
    return cache_dir() / "onnx" / name


def _valid(data: bytes, weights_sha256: str) -> bool:
    import onnx

    try:
        proto = onnx.load_from_string(data)
    except Exception:  # noqa: BLE001 - a foreign or damaged file: rebuild rather than fail
        return False
    return {p.key: p.value for p in proto.metadata_props}.get(SHA_KEY) == weights_sha256


def cached_onnx(model: NullSwapNet, weights_sha256: str | None, precision: str = "fp32") -> bytes:
    """Serialized ONNX model of ``model``; cached on disk when ``weights_sha256`` names its file
    (an in-memory model has no stable key, so it is exported afresh)."""
    from ..export.onnx import export_onnx

    if weights_sha256 is None:
        return export_onnx(model, precision=precision)
    path = onnx_cache_path(weights_sha256, precision)
    if path.is_file():
        data = path.read_bytes()
        if _valid(data, weights_sha256):
            return data
        log.warning("rebuilding the damaged or mismatched ONNX cache entry %s", path)
    data = export_onnx(model, precision=precision, metadata={SHA_KEY: weights_sha256})
    try:
        from ..export._files import atomic_write_bytes

        atomic_write_bytes(path, data)
        log.info("cached the ONNX graph at %s", path)
    except OSError as e:
        log.warning("cannot write the ONNX cache %s (%s); set NULLSWAP_CACHE_DIR to a writable folder", path, e)
    return data

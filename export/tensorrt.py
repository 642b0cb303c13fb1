"""Build a TensorRT engine from the exported ONNX graph (``nullswap export tensorrt``).

UNVERIFIED: written against the public ``tensorrt`` Python API (8.6 and 10.x spellings),
but TensorRT cannot be installed on this project's machines and is absent from the GPU
machine, so no engine has been built with this code yet. It stays unverified until a
machine with TensorRT runs it (``tests/test_export.py`` then builds and compares an engine).
Only the pure-Python parts (cache key, dependency guard) are tested here.

The engine has one optimisation profile for the dynamic batch (min/opt/max) and is cached
under a key of everything that makes an engine non-portable: the ONNX bytes' sha256, the
TensorRT version, the GPU name, the precision and the profile. With ``fp16`` the builder
may pick fp16 kernels, except for reductions, which are pinned to fp32 (the PSNR budget's
mean of squares over 3·S² values can overflow fp16). A timing cache file, reused across
builds, makes rebuilds (new weights, other profiles) much faster.

The SDK itself runs TensorRT through ONNX Runtime's TensorRT provider (``backend="tensorrt"``),
which builds and caches its own engine; this builder is for deployments that run TensorRT
directly (trtexec, Triton Inference Server, C++).
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, MissingDependencyError, ModelFormatError
from ._files import atomic_write_bytes, sha256_bytes

__all__ = ["EngineProfile", "build_engine", "engine_cache_key", "import_tensorrt"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineProfile:
    """Batch sizes of the optimisation profile (the crop size comes from the graph)."""

    min_batch: int = 1
    opt_batch: int = 4
    max_batch: int = 16

    def __post_init__(self) -> None:
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ConfigError(f"need 1 ≤ min ≤ opt ≤ max batch, got {self.min_batch}/{self.opt_batch}/{self.max_batch}")


def import_tensorrt():
    try:
        import tensorrt
    except ImportError as e:
        raise MissingDependencyError(
            "TensorRT's Python package is not installed",
            hint="install NVIDIA TensorRT for your CUDA version (pip install tensorrt on a CUDA machine), "
                 "or run the network with backend='onnxruntime' / 'torch'") from e
    return tensorrt


def engine_cache_key(onnx_sha256: str, trt_version: str, gpu_name: str, precision: str,
                     profile: EngineProfile = EngineProfile()) -> str:
    """File-name-safe key of an engine: an engine only runs where all of these match."""
    if precision not in ("fp32", "fp16"):
        raise ConfigError(f"precision must be 'fp32' or 'fp16', got {precision!r}")
    if not re.fullmatch(r"[0-9a-f]{64}", onnx_sha256):
        raise ConfigError(f"onnx_sha256 must be 64 hex digits, got {onnx_sha256!r}")
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", gpu_name).strip("-").lower() or "gpu"
    ver = re.sub(r"[^0-9A-Za-z.]+", "-", trt_version)
    p = profile
    return f"{onnx_sha256[:16]}-trt{ver}-{gpu}-{precision}-b{p.min_batch}.{p.opt_batch}.{p.max_batch}"


def _gpu_name() -> str:
    import torch

    if not torch.cuda.is_available():
        raise ConfigError("building a TensorRT engine needs a CUDA GPU", hint="run the build on the target GPU machine")
    return torch.cuda.get_device_name()


def _pin_reductions_fp32(trt, network) -> int:
    pinned = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type == trt.LayerType.REDUCE:
            layer.precision = trt.float32
            layer.set_output_type(0, trt.float32)
            pinned += 1
    return pinned


def build_engine(onnx_path: str | os.PathLike, *, precision: str = "fp16", profile: EngineProfile = EngineProfile(),
                 cache_dir: str | os.PathLike | None = None, out: str | os.PathLike | None = None,
                 timing_cache: str | os.PathLike | None = None, workspace_gib: float = 2.0) -> Path:
    """Serialized engine for ``onnx_path``: returned from ``cache_dir`` when its key matches,
    else built, written there (atomically) and, if given, copied to ``out``."""
    trt = import_tensorrt()
    from .onnx import INPUT_NAME

    data = Path(onnx_path).read_bytes()
    key = engine_cache_key(sha256_bytes(data), trt.__version__, _gpu_name(), precision, profile)
    from ..backends.onnx_cache import cache_dir as default_cache

    cdir = Path(cache_dir) if cache_dir is not None else default_cache() / "tensorrt"
    cached = cdir / f"{key}.engine"
    if cached.is_file():
        log.info("engine cache hit: %s", cached)
        return atomic_write_bytes(out, cached.read_bytes()) if out else cached

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = int(trt.__version__.split(".")[0])
    # TensorRT 10 networks are always explicit-batch; 8.x needs the flag.
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(data):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelFormatError(f"TensorRT cannot parse {onnx_path}: {errors}",
                               hint="re-export with `nullswap export onnx` (fp32) and check the opset")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if precision == "fp16":
        if not builder.platform_has_fast_fp16:
            log.warning("this GPU has no fast fp16; the fp16 engine may be no faster than fp32")
        config.set_flag(trt.BuilderFlag.FP16)
        if _pin_reductions_fp32(trt, network):
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    inp = network.get_input(0)
    if inp.name != INPUT_NAME:
        raise ModelFormatError(f"graph input is {inp.name!r}, expected {INPUT_NAME!r}",
                               hint="build from a graph written by `nullswap export onnx`")
    _, c, h, w = inp.shape
    opt = builder.create_optimization_profile()
    opt.set_shape(inp.name, (profile.min_batch, c, h, w), (profile.opt_batch, c, h, w), (profile.max_batch, c, h, w))
    config.add_optimization_profile(opt)

    tpath = Path(timing_cache) if timing_cache else cdir / "timing.cache"
    tcache = config.create_timing_cache(tpath.read_bytes() if tpath.is_file() else b"")
    config.set_timing_cache(tcache, ignore_mismatch=False)

    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise ModelFormatError(f"TensorRT failed to build an engine for {onnx_path} (see its log above)")
    atomic_write_bytes(tpath, bytes(config.get_timing_cache().serialize()))
    atomic_write_bytes(cached, bytes(engine))
    log.info("built TensorRT engine %s", cached)
    return atomic_write_bytes(out, bytes(engine)) if out else cached

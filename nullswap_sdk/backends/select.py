"""Choosing and building a backend: explicit requests are strict, ``auto`` falls back.

``auto`` tries, in order, on a GPU: tensorrt (ONNX Runtime's TensorRT provider), triton,
torch (CUDA), onnxruntime (CUDA provider); on a CPU: onnxruntime (fastest there: ~2.7× eager
torch for this net), then torch. A candidate whose hardware or optional package (CUDA,
TensorRT, triton) is missing is skipped quietly (logged at INFO). A candidate that fails to
build, or whose required package (e.g. onnxruntime) is missing, is a *fallback*: logged once per process as a warning and recorded in ``Selection.fallback_from``
(``Cloaker.__repr__`` shows it). An explicit backend never falls back: it raises.
The GPU order is a design choice, not yet measured on a GPU.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import BackendUnavailableError, ConfigError, NullSwapError
from .base import Runner, require_cuda_for_fp16, resolve_device

if TYPE_CHECKING:  # the network package imports this one
    from ..network.model import NullSwapNet

__all__ = ["AUTO_ORDER", "BACKENDS", "Selection", "available_backends", "create_runner"]

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime", "tensorrt", "triton")
AUTO_ORDER = {"cuda": ("tensorrt", "triton", "torch", "onnxruntime"), "cpu": ("onnxruntime", "torch")}
_warned: set[tuple[str, str]] = set()


@dataclass
class Selection:
    runner: Runner
    requested: str
    fallback_from: str | None = None
    skipped: dict[str, str] = field(default_factory=dict)  # backend -> why it was passed over


def _build(name: str, model: NullSwapNet, device: str, *, weights_sha256: str | None, precision: str,
           threads: int, max_batch: int) -> Runner:
    if name == "torch":
        from .torch_backend import TorchRunner

        return TorchRunner(model, device, precision)
    if name == "triton":
        from .triton_backend import TritonRunner

        return TritonRunner(model, device, precision)
    from .onnx_cache import cache_dir, cached_onnx
    from .ort_backend import OrtRunner, ort_providers

    # Probe the provider before the (1–2 s) export so that a missing one is skipped cheaply.
    ort_providers(name, device, size=model.cfg.size, max_batch=max_batch, precision=precision)
    # TensorRT gets the fp32 graph and its own fp16 flag; ONNX Runtime's CUDA provider the fp16 graph.
    graph_precision = "fp32" if name == "tensorrt" else precision
    data = cached_onnx(model, weights_sha256, graph_precision)
    return OrtRunner(data, backend=name, device=device, precision=precision, threads=threads,
                     size=model.cfg.size, max_batch=max_batch, trt_cache=str(cache_dir() / "tensorrt"))


def create_runner(model: NullSwapNet, backend: str = "auto", device: str | None = None, *,
                  weights_sha256: str | None = None, precision: str = "fp32", threads: int = 1,
                  max_batch: int = 16) -> Selection:
    """Build the runner for ``backend`` ("auto" or one of ``BACKENDS``) on ``device``
    (None: a CUDA GPU when torch sees one, else the CPU)."""
    if backend != "auto" and backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}", hint=f"choose 'auto' or one of {BACKENDS}")
    dev = resolve_device(device)
    require_cuda_for_fp16(precision, dev)  # a bad request fails before any export work
    kw = {"weights_sha256": weights_sha256, "precision": precision, "threads": threads, "max_batch": max_batch}
    if backend != "auto":
        try:
            return Selection(_build(backend, model, dev, **kw), backend)
        except NullSwapError:
            raise
        except Exception as e:  # noqa: BLE001 - e.g. ORT dropping a provider it cannot load
            raise BackendUnavailableError(f"backend {backend!r} failed to start on {dev}: {type(e).__name__}: {e}",
                                          hint="use backend='auto' (falls back to one that runs) or "
                                               "check the runtime's installation (`nullswap info`)") from e
    skipped: dict[str, str] = {}
    failed: list[str] = []
    for name in AUTO_ORDER["cuda" if dev.startswith("cuda") else "cpu"]:
        try:
            runner = _build(name, model, dev, **kw)
        except BackendUnavailableError as e:
            skipped[name] = e.message
            log.info("backend %s skipped: %s", name, e.message)
            continue
        except ConfigError:
            raise  # the request itself is wrong (e.g. fp16 on a CPU): no backend can fix it
        except Exception as e:  # noqa: BLE001 - present but broken here: fall back to the next one
            skipped[name] = f"failed: {e}"
            failed.append(name)
            if (name, dev) not in _warned:
                _warned.add((name, dev))
                log.warning("backend %r failed on %s (%s); falling back to the next backend", name, dev, e)
            continue
        return Selection(runner, "auto", failed[0] if failed else None, skipped)
    raise BackendUnavailableError(f"no backend can run on {dev}: {skipped}",
                                  hint="reinstall the SDK (bash scripts/install.sh), or pass device='cpu'")


def available_backends() -> dict[str, str]:
    """``"backend@device"`` → "available" or why not, without building anything (``nullswap info``)."""
    import torch

    try:
        import onnxruntime as ort

        providers = ort.get_available_providers()
    except ImportError:
        providers = []
    cuda = torch.cuda.is_available()
    no_gpu = "no CUDA GPU visible to torch"
    out = {"torch@cpu": "available",
           "onnxruntime@cpu": "available" if "CPUExecutionProvider" in providers else "onnxruntime not installed",
           "torch@cuda": "available" if cuda else no_gpu}
    for name, provider in (("onnxruntime@cuda", "CUDAExecutionProvider"), ("tensorrt@cuda", "TensorrtExecutionProvider")):
        out[name] = no_gpu if not cuda else ("available" if provider in providers else f"onnxruntime lacks {provider}")
    if not cuda:
        out["triton@cuda"] = no_gpu
    else:
        import importlib.util

        found = importlib.util.find_spec("nullswap_sdk.kernels.triton_net") is not None
        out["triton@cuda"] = "available" if found else "nullswap_sdk.kernels.triton_net not installed"
    return out

"""ONNX Runtime backends: "onnxruntime" (CPU provider, or CUDA with onnxruntime-gpu) and
"tensorrt" (ONNX Runtime's TensorRT provider, which builds and caches the engine itself).

Session options: ``threads`` intra-op threads (default 1: one face is ~8 ms on one thread,
and a photo has few faces; raise it for batch work on a dedicated machine), one inter-op
thread, no spin-waiting (spinning threads starve everything else on small shared machines),
deterministic compute, all graph optimisations. The CUDA and TensorRT paths need
onnxruntime-gpu and are unverified on this project's machines (none has it).
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import BackendUnavailableError, MissingDependencyError
from .base import require_cuda_for_fp16

__all__ = ["OrtRunner", "ort_providers"]


def _ort():
    try:
        import onnxruntime as ort
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise MissingDependencyError("onnxruntime is required for the onnxruntime backends") from e
    return ort


def ort_providers(backend: str, device: str, *, size: int, max_batch: int, precision: str,
                  trt_cache: str | None = None) -> list:
    """Provider list for ``InferenceSession``; raises ``BackendUnavailableError`` when this
    onnxruntime build lacks the provider that ``backend``/``device`` need."""
    available = _ort().get_available_providers()
    if device == "cpu":
        if backend == "tensorrt":
            raise BackendUnavailableError("the tensorrt backend needs a CUDA GPU",
                                          hint="use backend='auto' or 'onnxruntime' on the CPU")
        return ["CPUExecutionProvider"]
    dev_id = int(device.split(":")[1])
    wanted = "TensorrtExecutionProvider" if backend == "tensorrt" else "CUDAExecutionProvider"
    if wanted not in available:
        raise BackendUnavailableError(f"this onnxruntime build has no {wanted} (it has {available})",
                                      hint="pip install onnxruntime-gpu (with TensorRT libraries for 'tensorrt'), "
                                           "or use backend='auto'")
    cuda = ("CUDAExecutionProvider", {"device_id": dev_id, "cudnn_conv_algo_search": "DEFAULT"})
    if backend != "tensorrt":
        return [cuda, "CPUExecutionProvider"]
    def shape(b: int) -> str:
        return f"crops:{b}x3x{size}x{size}"

    trt = {"device_id": dev_id, "trt_fp16_enable": precision == "fp16",
           "trt_profile_min_shapes": shape(1), "trt_profile_opt_shapes": shape(min(4, max_batch)),
           "trt_profile_max_shapes": shape(max_batch)}
    if trt_cache:
        trt.update({"trt_engine_cache_enable": True, "trt_engine_cache_path": trt_cache,
                    "trt_timing_cache_enable": True, "trt_timing_cache_path": trt_cache})
    return [("TensorrtExecutionProvider", trt), cuda, "CPUExecutionProvider"]


class OrtRunner:
    def __init__(self, onnx_model: bytes, *, backend: str = "onnxruntime", device: str = "cpu",
                 precision: str = "fp32", threads: int = 1, size: int = 128, max_batch: int = 16,
                 trt_cache: str | None = None) -> None:
        from ..export.onnx import INPUT_NAME, OUTPUT_NAME

        require_cuda_for_fp16(precision, device)
        ort = _ort()
        providers = ort_providers(backend, device, size=size, max_batch=max_batch, precision=precision,
                                  trt_cache=trt_cache)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.intra_op_num_threads = max(1, int(threads))
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.use_deterministic_compute = True
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self.session = ort.InferenceSession(onnx_model, opts, providers=providers)
        first = providers[0] if isinstance(providers[0], str) else providers[0][0]
        if first not in self.session.get_providers():  # ORT drops a provider that fails to load
            raise RuntimeError(f"onnxruntime could not load {first} (session has {self.session.get_providers()})")
        self.backend, self.device, self.io_device, self.precision = backend, device, "cpu", precision
        self.provider = first
        self.threads = opts.intra_op_num_threads
        self._io = (INPUT_NAME, OUTPUT_NAME)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        (y,) = self.session.run([self._io[1]], {self._io[0]: arr})
        return torch.from_numpy(y)

    def close(self) -> None:
        self.session = None  # ORT frees the session (threads, arenas) when the last reference goes

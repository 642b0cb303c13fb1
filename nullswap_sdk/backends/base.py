"""The contract between ``NetworkCloaker`` and an inference backend, and device parsing."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from ..errors import BackendUnavailableError, ConfigError

__all__ = ["PRECISIONS", "Runner", "require_cuda_for_fp16", "resolve_device"]

PRECISIONS = ("fp32", "fp16")


@runtime_checkable
class Runner(Protocol):
    """Runs ``NullSwapNet.perturbation`` on working crops.

    ``__call__(x)``: x float32 (B, 3, S, S) RGB [0, 255] on ``io_device`` → float32
    perturbation of the same shape on ``io_device``. ``device`` is where the net computes
    (ONNX Runtime takes host arrays, so its ``io_device`` is "cpu" whatever its provider).
    """

    backend: str  # "torch" | "onnxruntime" | "tensorrt" | "triton"
    device: str  # "cpu" | "cuda:N"
    io_device: str
    precision: str

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...

    def close(self) -> None:
        """Release sessions/engines/graphs; the runner must not be called afterwards."""
        ...


def resolve_device(device: str | None) -> str:
    """None → "cuda:0" when torch sees a GPU, else "cpu"; "cuda" → "cuda:0"; validated."""
    if device is None:
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    dev = str(device).lower()
    if dev == "cpu":
        return dev
    if dev == "cuda" or (dev.startswith("cuda:") and dev[5:].isdigit()):
        if not torch.cuda.is_available():
            raise BackendUnavailableError(f"device {device!r} requested but torch sees no CUDA GPU",
                                          hint="pass device=None or 'cpu', or install a CUDA build of torch")
        dev = "cuda:0" if dev == "cuda" else dev
        if int(dev[5:]) >= torch.cuda.device_count():
            raise ConfigError(f"{device!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
        return dev
    raise ConfigError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")


def require_cuda_for_fp16(precision: str, device: str) -> None:
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp16" and not device.startswith("cuda"):
        raise ConfigError("precision='fp16' is for GPUs; on a CPU it is slower and less exact",
                          hint="use precision='fp32' on the CPU")

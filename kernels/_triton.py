"""Shared guards for the Triton kernels: import check, interpreter detection, input validation."""
from __future__ import annotations

import os

from ..errors import ConfigError, MissingDependencyError

try:
    import triton
    import triton.language as tl
except ImportError as e:  # the kernel modules re-raise this as a typed error on import
    raise MissingDependencyError(
        f"the Triton kernels need the `triton` package ({e})",
        hint="install it on Linux x86-64 with `pip install triton==3.6.0` (or the `gpu` extra), "
             "or use the torch/ONNX backends") from e

__all__ = ["triton", "tl", "interpreting", "check_tensor", "next_pow2"]


def interpreting() -> bool:
    """True when Triton runs kernels on the CPU (must be set before triton is imported)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def next_pow2(n: int) -> int:
    return 1 << max(int(n) - 1, 0).bit_length()


def check_tensor(name: str, t, *, ndim: int | None = None, dtypes=None, device=None,
                 shape: tuple | None = None):
    """Validate a kernel argument; raises ConfigError that names the expected value."""
    import torch

    if not torch.is_tensor(t):
        raise ConfigError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if ndim is not None and t.ndim != ndim:
        raise ConfigError(f"{name} must have {ndim} dims, got shape {tuple(t.shape)}")
    if shape is not None and any(s is not None and s != a for s, a in zip(shape, t.shape)):
        want = tuple("*" if s is None else s for s in shape)
        raise ConfigError(f"{name} must have shape {want}, got {tuple(t.shape)}")
    if dtypes is not None and t.dtype not in dtypes:
        raise ConfigError(f"{name} must be one of {[str(d) for d in dtypes]}, got {t.dtype}",
                          hint="cast with .float() or .half()")
    if device is not None and t.device != device:
        raise ConfigError(f"{name} is on {t.device}, expected {device}",
                          hint="move every kernel argument to the same device")
    if not t.is_cuda and not interpreting():
        raise ConfigError(f"{name} is on {t.device}; Triton kernels need a CUDA tensor",
                          hint="move it with .cuda(), or set TRITON_INTERPRET=1 before importing "
                               "triton to run the kernels (slowly) on the CPU")
    if not t.is_contiguous():
        raise ConfigError(f"{name} must be contiguous", hint="call .contiguous() first")
    return t

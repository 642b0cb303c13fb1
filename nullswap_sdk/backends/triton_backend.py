"""Triton backend: the fused kernels of ``nullswap_sdk.kernels.triton_net`` (CUDA only).

The kernels module is imported lazily so that this package imports on machines without a
GPU; requesting this backend there raises ``BackendUnavailableError``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..errors import BackendUnavailableError

if TYPE_CHECKING:  # the network package imports this one
    from ..network.model import NullSwapNet

__all__ = ["TritonRunner"]


class TritonRunner:
    backend = "triton"

    def __init__(self, model: NullSwapNet, device: str, precision: str = "fp32",
                 cuda_graphs: bool = True) -> None:
        if not device.startswith("cuda"):
            raise BackendUnavailableError("the triton backend needs a CUDA GPU; this device is "
                                          f"{device!r}", hint="use backend='auto', 'onnxruntime' or 'torch'")
        try:
            from ..kernels.triton_net import TritonNullSwapNet
        except ImportError as e:
            raise BackendUnavailableError(f"the triton kernels cannot be imported ({e})",
                                          hint="install the GPU extra: pip install 'nullswap-sdk[gpu]'") from e
        if model.cfg.luminance or model.cfg.texture or model.cfg.universal or model.cfg.coarse_width:
            raise BackendUnavailableError("the triton kernels do not implement luminance/texture/universal"
                                          "/coarse networks yet",
                                          hint="use backend='auto' (falls back to torch), or 'torch'")
        # fp16: float16 activations inside the fused Cloaking Block, fp32 accumulation and budget
        act = torch.float16 if precision == "fp16" else torch.float32
        self.net = TritonNullSwapNet(model.eval().to(device), cuda_graphs=cuda_graphs, act_dtype=act)
        self.device = self.io_device = device
        self.precision = precision

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.perturbation(x)  # no_grad and CUDA-graph replay inside

    def close(self) -> None:
        self.net = None

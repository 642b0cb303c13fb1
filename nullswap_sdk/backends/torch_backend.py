"""PyTorch eager backend (CPU or CUDA): the reference every other backend is compared with."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .base import require_cuda_for_fp16

if TYPE_CHECKING:  # the network package imports this one
    from ..network.model import NullSwapNet

__all__ = ["TorchRunner"]


class TorchRunner:
    backend = "torch"

    def __init__(self, model: NullSwapNet, device: str, precision: str = "fp32") -> None:
        require_cuda_for_fp16(precision, device)
        self.model = model.eval().to(device)
        self.device = self.io_device = device
        self.precision = precision

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.precision == "fp16":
            # autocast keeps the budget's reductions (mean of squares) in float32
            with torch.autocast("cuda", dtype=torch.float16):
                return self.model.perturbation(x).float()
        return self.model.perturbation(x)

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]

"""The contract between the Cloaker (detect/align/paste) and a cloaking method."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["CloakMethod"]


@runtime_checkable
class CloakMethod(Protocol):
    """Computes identity perturbations on aligned face crops.

    ``template`` names the working crop (see ``faces.templates``); the Cloaker aligns
    every face to it and pastes the returned perturbation back at native resolution.
    """

    name: str
    template: str

    def perturb(self, crops: np.ndarray) -> np.ndarray:
        """``crops``: (B, S, S, 3) uint8 RGB -> (B, S, S, 3) float32 perturbation in
        pixel units (cloaked − clean); ``crops + delta`` stays within [0, 255]."""
        ...

    def describe(self) -> dict:
        """JSON-able description: method, config, recognisers (for reports and ``repr``)."""
        ...

"""Random-noise baseline at a matched PSNR: tells how much of any protection is just noise."""
from __future__ import annotations

import hashlib

import numpy as np

from ..faces.templates import get_template
from ..faces.paste import feather_mask

__all__ = ["NoiseCloaker"]


class NoiseCloaker:
    """Gaussian noise under the same feather mask, scaled to ``psnr`` dB on the crop.

    The seed is derived from the crop bytes, so output is deterministic per image.
    """

    name = "noise"

    def __init__(self, psnr: float = 41.0, template: str = "cloak256", feather: float = 0.0625) -> None:
        self.psnr = float(psnr)
        self.template = template
        self._mask = feather_mask(get_template(template).size, feather)[..., None]

    def describe(self) -> dict:
        return {"method": "noise", "config": {"psnr": self.psnr, "template": self.template}}

    def perturb(self, crops: np.ndarray) -> np.ndarray:
        out = np.empty(crops.shape, np.float32)
        target_mse = 255.0**2 / 10 ** (self.psnr / 10)
        for i, crop in enumerate(crops):
            seed = int.from_bytes(hashlib.sha256(crop.tobytes()).digest()[:8], "little")
            n = np.random.default_rng(seed).standard_normal(crop.shape).astype(np.float32) * self._mask
            n *= np.sqrt(target_mse / max(float(np.mean(n**2)), 1e-12))
            out[i] = np.clip(crop + n, 0, 255) - crop
        return out

"""``NetworkCloaker``: the trained NullSwap network behind the ``CloakMethod`` protocol, and
its weights file format (safetensors; the ``NetworkConfig`` rides in the metadata).

The Cloaker aligns faces to ``cfg.template`` (e.g. cloak256); the network works on that crop
resized to ``cfg.size``. Both are the same geometry (``working_template``), so the resize is
exact: area-downsample in, bilinear-upsample the *perturbation* out, then clamp so
``crop + delta`` stays in [0, 255] at the Cloaker's resolution.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, MissingDependencyError, ModelFormatError, ModelNotFoundError
from ..faces.templates import get_template
from .model import NetworkConfig, NullSwapNet, count_params

__all__ = ["NetworkCloaker", "save_network", "load_network", "WEIGHTS_FORMAT"]

WEIGHTS_FORMAT = "nullswap-net-v1"


def _safetensors():
    try:
        from safetensors.torch import load_file, save_file
        from safetensors import safe_open
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise MissingDependencyError("safetensors is required to read/write network weights") from e
    return load_file, save_file, safe_open


def save_network(model: NullSwapNet, path: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Write eval-ready weights (BN running stats and buffers included), atomically."""
    _, save_file, _ = _safetensors()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": WEIGHTS_FORMAT, "network_config": model.cfg.to_json()}
    meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()})
    state = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(state, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path


def load_network(path: str | os.PathLike, device: str = "cpu") -> tuple[NullSwapNet, dict]:
    """(model in eval mode, metadata) from a weights file written by ``save_network``."""
    load_file, _, safe_open = _safetensors()
    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"network weights not found at {path}",
                                 hint="train with `python -m training.train` or pass the shipped file")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != WEIGHTS_FORMAT or "network_config" not in meta:
        raise ModelFormatError(f"{path} is not a NullSwap network file (format={meta.get('format')!r})",
                               hint=f"expected safetensors metadata format={WEIGHTS_FORMAT!r}")
    model = NullSwapNet(NetworkConfig.from_json(meta["network_config"]))
    state = load_file(str(path))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelFormatError(f"{path}: missing tensors {missing[:5]}, unexpected {unexpected[:5]}",
                               hint="the file and this SDK version disagree on the architecture")
    return model.eval().to(device), meta


class NetworkCloaker:
    """Implements ``CloakMethod`` with one forward pass of the trained network.

    ``perturb`` takes (B, S, S, 3) uint8 RGB crops aligned to ``self.template`` and returns the
    float32 (cloaked − crop) perturbation, deterministic (eval mode, fixed adaptive noise).
    """

    name = "nullswap-net"

    def __init__(self, weights: str | os.PathLike | None = None, *, model: NullSwapNet | None = None,
                 device: str = "cpu", batch_size: int = 16) -> None:
        if (weights is None) == (model is None):
            raise ConfigError("pass exactly one of weights (a .safetensors path) or model")
        self.weights = None if weights is None else str(weights)
        self.metadata: dict = {}
        if model is None:
            model, self.metadata = load_network(weights, device)
        self.model = model.eval().to(device)
        self.device = device
        self.batch_size = int(batch_size)
        self.template = model.cfg.template
        self._crop_size = get_template(self.template).size

    def describe(self) -> dict:
        return {"method": "network", "name": self.name, "weights": self.weights,
                "config": asdict(self.model.cfg), "params": count_params(self.model),
                "trained": {k: v for k, v in self.metadata.items() if k not in ("format", "network_config")}}

    @torch.no_grad()
    def _run(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) float [0, 255] at the crop size → perturbation at the crop size."""
        s, S = self.model.cfg.size, x.shape[-1]
        xs = x if S == s else F.interpolate(x, size=(s, s), mode="area" if S > s else "bilinear",
                                            align_corners=None if S > s else False)
        d = self.model.perturbation(xs)
        if S != s:
            d = F.interpolate(d, size=(S, S), mode="bilinear", align_corners=False)
        return (x + d).clamp(0.0, 255.0) - x

    def perturb(self, crops: np.ndarray) -> np.ndarray:
        S = self._crop_size
        if not isinstance(crops, np.ndarray) or crops.ndim != 4 or crops.shape[1:] != (S, S, 3) \
                or crops.dtype != np.uint8:
            raise ConfigError(
                f"{self.name} expects (B, {S}, {S}, 3) uint8 crops, got "
                f"{getattr(crops, 'shape', type(crops).__name__)} {getattr(crops, 'dtype', '')}",
                hint=f"align faces with template {self.template!r}")
        out = np.empty(crops.shape, np.float32)
        for i in range(0, len(crops), self.batch_size):
            x = torch.from_numpy(crops[i:i + self.batch_size]).permute(0, 3, 1, 2).float().to(self.device)
            out[i:i + len(x)] = self._run(x).permute(0, 2, 3, 1).cpu().numpy()
        return out

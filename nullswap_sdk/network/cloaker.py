"""``NetworkCloaker``: the trained NullSwap network behind the ``CloakMethod`` protocol, and
its weights file format (safetensors; the ``NetworkConfig`` rides in the metadata).

The Cloaker aligns faces to ``cfg.template`` (e.g. cloak256); the network works on that crop
resized to ``cfg.size``. Both are the same geometry (``working_template``), so the resize is
exact: area-downsample in, bilinear-upsample the *perturbation* out, then clamp so
``crop + delta`` stays in [0, 255] at the Cloaker's resolution. The net itself runs through
an inference backend (``nullswap_sdk.backends``: torch, onnxruntime, tensorrt, triton).
Host backends resize with OpenCV (measured ~7× faster than torch's interpolate on one CPU
thread: 0.8 vs 5.8 ms per 256² crop); GPU backends resize with torch on the device.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..backends import create_runner
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

    ``backend``: "auto" (the best that runs here; see ``nullswap_sdk.backends.select``) or one
    of "torch", "onnxruntime", "tensorrt", "triton". ``device``: None (a CUDA GPU when torch
    sees one), "cpu", "cuda[:N]". ``precision``: "fp32", or "fp16" on a GPU. ``threads``:
    ONNX Runtime intra-op threads. ``batch_size``: crops per backend call.
    """

    name = "nullswap-net"

    def __init__(self, weights: str | os.PathLike | None = None, *, model: NullSwapNet | None = None,
                 backend: str = "auto", device: str | None = None, precision: str = "fp32",
                 threads: int = 1, batch_size: int = 16) -> None:
        if (weights is None) == (model is None):
            raise ConfigError("pass exactly one of weights (a .safetensors path) or model")
        self.weights = None if weights is None else str(weights)
        self.metadata: dict = {}
        sha = None
        if model is None:
            from ..models import sha256_file

            model, self.metadata = load_network(weights)
            sha = sha256_file(Path(weights))  # keys the backend's ONNX/TensorRT caches
        self.model = model.eval()
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be ≥ 1, got {batch_size}")
        self.selection = create_runner(self.model, backend, device, weights_sha256=sha, precision=precision,
                                       threads=threads, max_batch=self.batch_size)
        self.runner = self.selection.runner
        self.backend, self.device = self.runner.backend, self.runner.device
        self.fallback_from = self.selection.fallback_from
        self.template = model.cfg.template
        self._crop_size = get_template(self.template).size

    def describe(self) -> dict:
        return {"method": "network", "name": self.name, "weights": self.weights,
                "backend": self.backend, "device": self.device, "precision": self.runner.precision,
                "fallback_from": self.fallback_from,
                "config": asdict(self.model.cfg), "params": count_params(self.model),
                "trained": {k: v for k, v in self.metadata.items() if k not in ("format", "network_config")}}

    def close(self) -> None:
        """Release the backend (ONNX Runtime session, CUDA graphs); perturb fails afterwards."""
        if self.runner is not None:
            self.runner.close()
            self.runner = None

    def _run_host(self, crops: np.ndarray) -> np.ndarray:
        """(B, S, S, 3) uint8 → float32 perturbation, resizing with OpenCV (host backends)."""
        s, S = self.model.cfg.size, crops.shape[1]
        x = crops.astype(np.float32)
        xs = x if S == s else np.stack(
            [cv2.resize(c, (s, s), interpolation=cv2.INTER_AREA if S > s else cv2.INTER_LINEAR) for c in x])
        d = self.runner(torch.from_numpy(np.ascontiguousarray(xs.transpose(0, 3, 1, 2)))).numpy()
        d = d.transpose(0, 2, 3, 1)
        if S != s:  # INTER_LINEAR is half-pixel bilinear, as torch's align_corners=False
            d = np.stack([cv2.resize(np.ascontiguousarray(di), (S, S), interpolation=cv2.INTER_LINEAR) for di in d])
        return np.clip(x + d, 0.0, 255.0) - x

    @torch.no_grad()
    def _run_device(self, crops: np.ndarray) -> np.ndarray:
        """The same on the backend's device with torch (GPU backends)."""
        x = torch.from_numpy(crops).to(self.runner.io_device).permute(0, 3, 1, 2).float()
        s, S = self.model.cfg.size, x.shape[-1]
        xs = x if S == s else F.interpolate(x, size=(s, s), mode="area" if S > s else "bilinear",
                                            align_corners=None if S > s else False)
        d = self.runner(xs.contiguous())
        if S != s:
            d = F.interpolate(d, size=(S, S), mode="bilinear", align_corners=False)
        return ((x + d).clamp(0.0, 255.0) - x).permute(0, 2, 3, 1).cpu().numpy()

    def perturb(self, crops: np.ndarray) -> np.ndarray:
        S = self._crop_size
        if not isinstance(crops, np.ndarray) or crops.ndim != 4 or crops.shape[1:] != (S, S, 3) \
                or crops.dtype != np.uint8:
            raise ConfigError(
                f"{self.name} expects (B, {S}, {S}, 3) uint8 crops, got "
                f"{getattr(crops, 'shape', type(crops).__name__)} {getattr(crops, 'dtype', '')}",
                hint=f"align faces with template {self.template!r}")
        if self.runner is None:
            raise ConfigError("this NetworkCloaker was closed", hint="create a new one")
        run = self._run_host if self.runner.io_device == "cpu" else self._run_device
        out = np.empty(crops.shape, np.float32)
        for i in range(0, len(crops), self.batch_size):
            out[i:i + self.batch_size] = run(crops[i:i + self.batch_size])
        return out

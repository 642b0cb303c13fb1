"""Recognisers as differentiable torch modules (and an ONNX Runtime runner for parity/eval)."""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ConfigError, MissingDependencyError
from .registry import RecogniserConfig, get_recogniser_config, verified_file

if TYPE_CHECKING:
    import torch

__all__ = ["load_recogniser", "normalise_numpy", "OnnxRuntimeRecogniser"]

_CACHE: dict[tuple[str, str], "torch.nn.Module"] = {}
_LOCK = threading.Lock()


def _torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - torch is a hard dependency
        raise MissingDependencyError("torch is required for recogniser modules") from e
    return torch


def _build_net(cfg: RecogniserConfig):
    path = verified_file(cfg)
    if cfg.loader == "onnx-torch":
        from .onnx_torch import load_onnx_as_torch

        return load_onnx_as_torch(path)
    if cfg.loader == "facenet-pb":
        from .facenet import load_facenet_pb

        return load_facenet_pb(path)
    if cfg.loader == "facenet-keras-h5":
        from .keras_h5 import load_facenet_keras_h5

        return load_facenet_keras_h5(path)
    if cfg.loader == "dlib":
        from .dlib_resnet import load_dlib_resnet

        return load_dlib_resnet(path)
    if cfg.loader == "dlib-torch":
        from .dlib_torch import load_dlib_resnet_torch

        return load_dlib_resnet_torch(path)
    raise ConfigError(f"recogniser {cfg.name!r}: unknown loader {cfg.loader!r}",
                      hint="use 'onnx-torch', 'facenet-pb', 'facenet-keras-h5', 'dlib' or 'dlib-torch'")


def _make_wrapper_cls():
    torch = _torch()

    class Recogniser(torch.nn.Module):
        """Aligned float32 BCHW RGB in [0, 255] at ``cfg.input_size`` -> (B, D) embeddings."""

        def __init__(self, cfg: RecogniserConfig, net: torch.nn.Module) -> None:
            super().__init__()
            self.cfg = cfg
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s = self.cfg.input_size
            if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != s or x.shape[3] != s:
                raise ConfigError(
                    f"{self.cfg.name}: expected (B, 3, {s}, {s}), got {tuple(x.shape)}",
                    hint=f"align faces with template {self.cfg.template!r} first",
                )
            if self.cfg.normalisation == "arcface":
                x = (x - 127.5) / 128.0
            elif self.cfg.normalisation == "prewhiten":
                mean = x.mean(dim=(1, 2, 3), keepdim=True)
                std = x.std(dim=(1, 2, 3), keepdim=True, unbiased=False)
                std = std.clamp_min(1.0 / float(np.sqrt(x[0].numel())))
                x = (x - mean) / std
            return self.net(x)

        def extra_repr(self) -> str:
            return f"name={self.cfg.name}, input_size={self.cfg.input_size}, dim={self.cfg.embedding_dim}"

    return Recogniser


_WRAPPER = None


def load_recogniser(name: str | RecogniserConfig, device: str = "cpu") -> "torch.nn.Module":
    """Load (once per process and device) a frozen recogniser in eval mode.

    Parameters have ``requires_grad=False``; gradients still flow to the input.
    """
    global _WRAPPER
    cfg = name if isinstance(name, RecogniserConfig) else get_recogniser_config(name)
    key = (repr(cfg), str(device))
    with _LOCK:
        if key not in _CACHE:
            if _WRAPPER is None:
                _WRAPPER = _make_wrapper_cls()
            module = _WRAPPER(cfg, _build_net(cfg)).eval().to(device)
            for p in module.parameters():
                p.requires_grad_(False)
            _CACHE[key] = module
        return _CACHE[key]


def normalise_numpy(cfg: RecogniserConfig, x: np.ndarray) -> np.ndarray:
    """The wrapper's normalisation on float32 NCHW RGB [0, 255] numpy input."""
    x = x.astype(np.float32, copy=False)
    if cfg.normalisation == "arcface":
        return (x - 127.5) / 128.0
    if cfg.normalisation == "prewhiten":
        mean = x.mean(axis=(1, 2, 3), keepdims=True)
        std = np.maximum(x.std(axis=(1, 2, 3), keepdims=True), 1.0 / np.sqrt(x[0].size))
        return ((x - mean) / std).astype(np.float32)  # the float64 floor would promote
    return x


def _clean_onnx_bytes(path) -> bytes:
    """The model with graph inputs that are unused or backed by initializers removed.

    Converted graphs (SFace) declare their weights as overridable inputs; ORT then demands
    values for them and cannot fold constants. Only the data input should remain.
    """
    import onnx

    model = onnx.load(str(path))
    g = model.graph
    inits = {i.name for i in g.initializer}
    used = {name for n in g.node for name in n.input}
    keep = [i for i in g.input if i.name not in inits and i.name in used]
    del g.input[:]
    g.input.extend(keep)
    return model.SerializeToString()


class OnnxRuntimeRecogniser:
    """Runs an ONNX recogniser with ONNX Runtime (reference runtime; no gradients)."""

    def __init__(self, cfg: RecogniserConfig, threads: int | None = 1) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise MissingDependencyError("onnxruntime is required to run ONNX recognisers") from e
        if cfg.loader != "onnx-torch":
            raise ConfigError(f"{cfg.name!r} is not an ONNX model", hint="use load_recogniser() for torch")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
        # Spinning threads starve everything else on small (2-core) machines.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.cfg = cfg
        self.session = ort.InferenceSession(_clean_onnx_bytes(verified_file(cfg)), opts,
                                            providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self._fixed_batch = isinstance(inp.shape[0], int)  # e.g. SFace is exported at batch 1

    def __call__(self, aligned_rgb: np.ndarray) -> np.ndarray:
        """``aligned_rgb``: (B, 3, S, S) float32 RGB [0, 255] -> (B, D) float32."""
        x = normalise_numpy(self.cfg, aligned_rgb)
        if self._fixed_batch:
            outs = [self.session.run(None, {self.input_name: x[i : i + 1]})[0] for i in range(len(x))]
            return np.concatenate(outs).reshape(len(x), -1)
        return self.session.run(None, {self.input_name: x})[0].reshape(len(x), -1)

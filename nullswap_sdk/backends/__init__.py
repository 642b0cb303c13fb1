"""Inference backends for the NullSwap network: torch, onnxruntime, tensorrt, triton.

``create_runner(model, backend="auto", device=None)`` picks and builds one (see ``select``);
the ``Runner`` it returns maps working crops to perturbations. Heavy modules (onnxruntime,
the Triton kernels) load only when their backend is built.
"""
from .base import Runner, resolve_device
from .select import AUTO_ORDER, BACKENDS, Selection, available_backends, create_runner

__all__ = ["AUTO_ORDER", "BACKENDS", "Runner", "Selection", "available_backends", "create_runner", "resolve_device"]

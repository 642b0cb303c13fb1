"""Skip-gradient attacks (SGM, Wu et al. 2020): decay the gradient through residual branches.

A residual block computes ``x + f(x)``. Backpropagating through it, the attack's gradient is the
sum of the skip path's and the branch's; scaling the branch's share by ``gamma`` < 1 leans the
attack on the low-level features the skip connections carry, which recognisers trained on other
data share, and less on one network's deep quirks. The forward pass, hence every embedding and
cosine, is unchanged: only the direction of the input gradient moves.

Works on both kinds of surrogate module: any module with a ``residual_grad`` attribute — ONNX
graphs replayed by ``onnx_torch`` (residual ``Add`` nodes found from the graph), the native
Inception-ResNet-v1 (``facenet``, ``facenet-keras``) and dlib's ResNet (``dlib-torch``) — reads
it in its forward pass. SFace is a plain conv stack: nothing to scale. Measured in the lab
(docs/RESULTS.md, session 11): at 0.5 on SFace + FaceNet it transferred slightly worse.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from ..errors import ConfigError

__all__ = ["scale_grad", "skip_gradient", "has_residuals"]


class _GradScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, gamma: float) -> torch.Tensor:
        ctx.gamma = gamma
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        return g * ctx.gamma, None


def scale_grad(x: torch.Tensor, gamma: float) -> torch.Tensor:
    """``x`` unchanged; its gradient multiplied by ``gamma`` on the way back."""
    return x if gamma == 1.0 else _GradScale.apply(x, gamma)


def _residual_modules(model: nn.Module) -> list[nn.Module]:
    net = getattr(model, "net", model)
    return [m for m in net.modules() if hasattr(m, "residual_grad")]


def has_residuals(model: nn.Module) -> bool:
    """Whether ``model`` has residual branches a skip gradient can scale (SFace, a plain conv
    stack, has none)."""
    return any(getattr(m, "has_residuals", True) for m in _residual_modules(model))


@contextmanager
def skip_gradient(model: nn.Module, gamma: float) -> Iterator[nn.Module]:
    """Within the block, gradients through every residual branch of ``model`` (a ``Recogniser``
    wrapper or a bare network) are multiplied by ``gamma`` in [0, 1]; 1 leaves it untouched."""
    if not 0.0 <= gamma <= 1.0:
        raise ConfigError(f"skip-gradient gamma={gamma} outside [0, 1]", hint="0.5 halves each residual branch's share")
    if gamma == 1.0:
        yield model
        return
    if not has_residuals(model):
        raise ConfigError(f"skip gradient: {type(getattr(model, 'net', model)).__name__} has no residual connection",
                          hint="use it on residual recognisers (facenet, facenet-keras, mobilefacenet; sface has none)")
    mods = _residual_modules(model)
    old = [m.residual_grad for m in mods]
    try:
        for m in mods:
            m.residual_grad = gamma
        yield model
    finally:
        for m, g in zip(mods, old):
            m.residual_grad = g

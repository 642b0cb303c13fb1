"""Surrogate dropout: random dropout on a recogniser's convolution outputs while attacking it.

Each forward pass then runs a slightly different network, so an attack (PGD or the cloaking
network's training loss) must fool an ensemble of thinned surrogates rather than the exact
weights: the perturbation leans less on any one feature and transfers better to recognisers it
never saw (DFANet, Zhong & Deng 2020). Measured in the transfer lab (training/lab.py).

Works on both kinds of surrogate module: ONNX graphs replayed by ``onnx_torch`` (through their
``post_op`` hook on ``Conv``) and native torch networks (forward hooks on ``nn.Conv2d``).
"""
from __future__ import annotations

import math
from contextlib import ExitStack, contextmanager
from typing import Iterator

import torch
from torch import nn

from ..errors import ConfigError
from .onnx_torch import OnnxGraphModule

__all__ = ["conv_dropout", "calibrate_dropout", "MAX_DROPOUT"]

MAX_DROPOUT = 0.5  # beyond this the thinned surrogate no longer recognises anyone


def _dropper(p: float, gen: torch.Generator | None):
    keep = 1.0 - p

    def drop(t: torch.Tensor) -> torch.Tensor:
        # bernoulli_ with an explicit generator: reproducible, unlike F.dropout's global RNG.
        m = torch.empty(t.shape, dtype=t.dtype, device=t.device)
        # A CPU generator cannot drive CUDA sampling: the device's own RNG then (not bit-reproducible).
        m.bernoulli_(keep, generator=gen if gen is None or gen.device == t.device else None)
        return t * m / keep

    return drop


@contextmanager
def conv_dropout(model: nn.Module, p: float, gen: torch.Generator | None = None) -> Iterator[nn.Module]:
    """Within the block, every convolution output of ``model`` (a ``Recogniser`` wrapper or a
    bare network) is multiplied by a fresh Bernoulli(1 − p) mask scaled by 1 / (1 − p).
    ``p == 0`` leaves the model untouched."""
    if not 0.0 <= p <= MAX_DROPOUT:
        raise ConfigError(f"surrogate dropout p={p} outside [0, {MAX_DROPOUT}]",
                          hint="calibrate it with calibrate_dropout; 0 disables it")
    if p == 0:
        yield model
        return
    net = getattr(model, "net", model)
    drop = _dropper(p, gen)
    graphs = [m for m in net.modules() if isinstance(m, OnnxGraphModule)]
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    if not graphs and not convs:
        raise ConfigError(f"surrogate dropout: {type(net).__name__} has no convolution to drop",
                          hint="use it on convolutional recognisers only")
    with ExitStack() as stack:
        for g in graphs:
            stack.enter_context(g.hook_op("Conv", drop))
        for c in convs:
            stack.callback(c.register_forward_hook(lambda _m, _i, out: drop(out)).remove)
        yield model


def calibrate_dropout(fidelity_at, target: float, lo: float = 1e-4, hi: float = MAX_DROPOUT, iters: int = 8) -> float:
    """The dropout rate at which a surrogate keeps ``target`` fidelity, by bisection on log p.

    ``fidelity_at(p)`` returns the mean cosine between thinned and exact embeddings of real
    faces (decreasing in p). Recognisers differ by an order of magnitude here (measured on 16
    validation crops at p = 0.05: FaceNet 0.91, SFace 0.67, MobileFaceNet 0.36), so one rate for
    all would either leave FaceNet exact or leave the MobileFaceNets recognising no one.
    """
    if not 0.0 < target < 1.0:
        raise ConfigError(f"dropout fidelity target {target} outside (0, 1)", hint="0.8-0.95 is the useful range")
    if fidelity_at(hi) >= target:
        return hi
    a, b = math.log(lo), math.log(hi)
    for _ in range(iters):
        mid = (a + b) / 2
        if fidelity_at(math.exp(mid)) >= target:
            a = mid
        else:
            b = mid
    return math.exp(a)

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


# Masks are windows of one fixed buffer of uniform integers, at offsets drawn from the caller's
# generator: drawing fresh Bernoulli masks (bernoulli_ with a generator) took a third of a PGD
# step on a CPU (~1.1 ms per 200k-element FaceNet activation against 0.01 ms for the multiply;
# torch.rand is no cheaper). Each mask is still i.i.d. Bernoulli(1 − p) element-wise; masks of
# different calls are shifted copies of one random sequence. The buffer is the same on every
# device, so CUDA masks are reproducible too.
_POOL_SIZE = 1 << 22
_POOL_LEVELS = 1 << 24  # mask resolution: p in steps of 6e-8
_POOL_SEED = 0x5EED
_POOLS: dict[torch.device, torch.Tensor] = {}
# The pool turned into ready-to-multiply masks (0 or 1 / keep) per (device, dtype, keep): one
# multiply per activation instead of compare + cast + multiply + divide, which were ~4 of the
# passes over the large early activations of an attack step. Few rates are live at once (one per
# surrogate); calibration's bisection makes more, so the oldest are dropped.
_SCALED: dict[tuple[torch.device, torch.dtype, int], torch.Tensor] = {}
_SCALED_MAX = 6


def _pool(device: torch.device) -> torch.Tensor:
    buf = _POOLS.get(device)
    if buf is None:
        g = torch.Generator().manual_seed(_POOL_SEED)
        buf = torch.randint(0, _POOL_LEVELS, (_POOL_SIZE,), generator=g, dtype=torch.int32).to(device)
        _POOLS[device] = buf
    return buf


def _window(buf: torch.Tensor, shape: torch.Size, gen: torch.Generator | None) -> torch.Tensor:
    """``shape`` elements of a pool-sized buffer: windows at random offsets (several for a tensor
    larger than half the pool); a view, no copy, when one window covers it."""
    n = math.prod(shape)
    chunk = _POOL_SIZE // 2
    offs = torch.randint(0, _POOL_SIZE - chunk + 1, (-(-n // chunk),), generator=gen).tolist()
    parts = [buf[o:o + min(chunk, n - i * chunk)] for i, o in enumerate(offs)]
    return (parts[0] if len(parts) == 1 else torch.cat(parts)).view(shape)


def _keep_mask(shape: torch.Size, keep: float, device: torch.device, gen: torch.Generator | None) -> torch.Tensor:
    """Boolean mask, True with probability ``keep``."""
    if math.prod(shape) == 0:
        return torch.ones(shape, dtype=torch.bool, device=device)
    return _window(_pool(device), shape, gen) < round(keep * _POOL_LEVELS)


def _scaled_mask(shape: torch.Size, keep: float, device: torch.device, dtype: torch.dtype,
                 gen: torch.Generator | None) -> torch.Tensor:
    """``_keep_mask(...).to(dtype) / keep``, read from the scaled pool: the same windows at the
    same generator-drawn offsets, hence the same mask, in one multiply's worth of memory traffic."""
    if math.prod(shape) == 0:
        return torch.full(shape, 1.0 / keep, dtype=dtype, device=device)
    level = round(keep * _POOL_LEVELS)
    key = (device, dtype, level)
    buf = _SCALED.get(key)
    if buf is None:
        buf = (_pool(device) < level).to(dtype) / keep
        while len(_SCALED) >= _SCALED_MAX:
            del _SCALED[next(iter(_SCALED))]
        _SCALED[key] = buf
    return _window(buf, shape, gen)


def _dropper(p: float, gen: torch.Generator | None):
    keep = 1.0 - p
    if gen is not None and gen.device.type != "cpu":
        raise ConfigError("surrogate dropout draws its mask offsets from a CPU generator",
                          hint="pass torch.Generator() (CPU) or None")

    def drop(t: torch.Tensor) -> torch.Tensor:
        return t * _scaled_mask(t.shape, keep, t.device, t.dtype, gen)

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

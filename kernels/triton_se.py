"""Squeeze-and-excitation gate from the conv kernel's pooled partial sums: one program per image.

mean = Σ partials / HW → relu(W1·mean + b1) → sigmoid(W2·h + b2). The result feeds the next
conv's SE-combine prologue, so the gated map itself is never written to memory.
"""
from __future__ import annotations

import torch

from ..errors import ConfigError
from ._triton import check_tensor, next_pow2, tl, triton

__all__ = ["se_gate", "se_gate_reference"]


@triton.jit
def _se_kernel(part_ptr, C, HID, inv_hw, w1_ptr, b1_ptr, w2_ptr, b2_ptr, s_ptr,
               NPT: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_H: tl.constexpr):
    b = tl.program_id(0)
    c = tl.arange(0, BLOCK_C)
    cm = c < C
    acc = tl.zeros((BLOCK_C,), dtype=tl.float32)
    for t in range(0, NPT):  # NPT constexpr: see triton_conv's loop bound
        acc += tl.load(part_ptr + (b * NPT + t) * C + c, mask=cm, other=0.0)
    mean = acc * inv_hw
    h = tl.arange(0, BLOCK_H)
    hm = h < HID
    wm = hm[:, None] & cm[None, :]
    w1 = tl.load(w1_ptr + h[:, None] * C + c[None, :], mask=wm, other=0.0)  # W1[h, c]
    hid = tl.sum(w1 * mean[None, :], axis=1) + tl.load(b1_ptr + h, mask=hm, other=0.0)
    hid = tl.where(hm, tl.maximum(hid, 0.0), 0.0)
    w2 = tl.load(w2_ptr + c[None, :] * HID + h[:, None], mask=wm, other=0.0)  # W2[c, h]
    z = tl.sum(w2 * hid[:, None], axis=0) + tl.load(b2_ptr + c, mask=cm, other=0.0)
    tl.store(s_ptr + b * C + c, tl.sigmoid(z), mask=cm)


def se_gate(partials: torch.Tensor, hw: int, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor,
            b2: torch.Tensor) -> torch.Tensor:
    """partials: (B, n_tiles, C) fp32 channel sums over an HW-pixel map; w1 (HID, C), b1 (HID,),
    w2 (C, HID), b2 (C,) fp32 (the SE's two 1x1 convs). Returns the gate (B, C) fp32."""
    check_tensor("partials", partials, ndim=3, dtypes=(torch.float32,))
    B, npt, C = partials.shape
    dev = partials.device
    check_tensor("w1", w1, ndim=2, dtypes=(torch.float32,), device=dev)
    hid = w1.shape[0]
    check_tensor("w1", w1, shape=(hid, C))
    check_tensor("b1", b1, shape=(hid,), dtypes=(torch.float32,), device=dev)
    check_tensor("w2", w2, shape=(C, hid), dtypes=(torch.float32,), device=dev)
    check_tensor("b2", b2, shape=(C,), dtypes=(torch.float32,), device=dev)
    if hw <= 0:
        raise ConfigError(f"hw must be > 0, got {hw}")
    s = torch.empty((B, C), device=dev, dtype=torch.float32)
    _se_kernel[(B,)](partials, C, hid, 1.0 / hw, w1, b1, w2, b2, s,
                     NPT=npt, BLOCK_C=max(16, next_pow2(C)), BLOCK_H=max(16, next_pow2(hid)), num_warps=1)
    return s


def se_gate_reference(sums: torch.Tensor, hw: int, w1, b1, w2, b2) -> torch.Tensor:
    """sums: (B, C) channel sums (the partials already added up)."""
    h = torch.relu(sums / hw @ w1.T + b1)
    return torch.sigmoid(h @ w2.T + b2)

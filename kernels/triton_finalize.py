"""Per-image PSNR budget, add and clamp: the last, element-wise step of the network.

Each program re-adds its image's few Σd² partials (written by the final conv's epilogue)
instead of waiting for a separate reduction launch, then returns
``clamp(x + scale·d, 0, 255) − x`` — the perturbation that ``NullSwapNet.perturbation`` returns.
"""
from __future__ import annotations

import torch

from ..errors import ConfigError
from ._triton import check_tensor, tl, triton

__all__ = ["finalize", "finalize_reference", "BUDGETS"]

BUDGETS = {"none": 0, "cap": 1, "fixed": 2}  # NetworkConfig.budget; "none": psnr_floor is None


@triton.jit
def _finalize_kernel(x_ptr, d_ptr, part_ptr, out_ptr, N, inv_n, max_mse, EPS,
                     NPART: tl.constexpr, MODE: tl.constexpr, BLOCK: tl.constexpr, BLOCK_R: tl.constexpr):
    pid = tl.program_id(0)
    b = tl.program_id(1)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    m = offs < N
    x = tl.load(x_ptr + b * N + offs, mask=m, other=0.0).to(tl.float32)
    d = tl.load(d_ptr + b * N + offs, mask=m, other=0.0)
    if MODE != 0:
        r = tl.arange(0, BLOCK_R)
        tot = tl.zeros((BLOCK_R,), dtype=tl.float32)
        for r0 in range(0, NPART, BLOCK_R):  # NPART constexpr: see triton_conv's loop bound
            tot += tl.load(part_ptr + b * NPART + r0 + r, mask=r0 + r < NPART, other=0.0)
        mse = tl.sum(tot, axis=0) * inv_n
        if MODE == 1:  # cap: scale down only when over budget
            d = d * tl.minimum(tl.sqrt(max_mse / (mse + 1e-12)), 1.0)
        else:  # fixed: normalise to the budget's energy, then bound smoothly by eps
            z = d * tl.sqrt(max_mse / (mse + 1e-8))
            d = EPS * (2.0 * tl.sigmoid(2.0 * (z * (1.0 / EPS))) - 1.0)
    y = tl.minimum(tl.maximum(x + d, 0.0), 255.0) - x
    tl.store(out_ptr + b * N + offs, y, mask=m)


def finalize(x: torch.Tensor, d: torch.Tensor, partials: torch.Tensor | None, *, budget: str,
             psnr_floor: float | None, eps: float, block: int = 1024) -> torch.Tensor:
    """x: (B, 3, S, S) fp32/fp16 in [0, 255]; d: (B, 3, S, S) fp32 bounded (``cap``/``none``) or
    masked raw (``fixed``) output; partials: (B, n, ·) fp32 whose per-image sum is Σd²
    (None for ``none``). Returns the perturbation (B, 3, S, S) fp32."""
    if budget not in BUDGETS:
        raise ConfigError(f"budget must be one of {list(BUDGETS)}, got {budget!r}")
    check_tensor("x", x, ndim=4, dtypes=(torch.float32, torch.float16))
    check_tensor("d", d, shape=tuple(x.shape), dtypes=(torch.float32,), device=x.device)
    mode = BUDGETS[budget]
    if mode:
        if psnr_floor is None or psnr_floor <= 0:
            raise ConfigError(f"budget {budget!r} needs psnr_floor > 0, got {psnr_floor}")
        check_tensor("partials", partials, dtypes=(torch.float32,), device=x.device)
        if partials.shape[0] != x.shape[0]:
            raise ConfigError(f"partials must start with the batch size {x.shape[0]}, got {tuple(partials.shape)}")
    B = x.shape[0]
    n = x[0].numel()
    max_mse = 255.0 ** 2 / 10.0 ** (psnr_floor / 10.0) if mode else 0.0
    npart = partials[0].numel() if mode else 0
    out = torch.empty(x.shape, device=x.device, dtype=torch.float32)
    _finalize_kernel[(triton.cdiv(n, block), B)](
        x, d, partials if mode else d, out, n, 1.0 / n, max_mse, float(eps),
        NPART=npart, MODE=mode, BLOCK=block, BLOCK_R=64, num_warps=4)
    return out


def finalize_reference(x, d, sums, *, budget, psnr_floor, eps, block=None):
    """sums: (B,) Σd² per image (None for ``none``)."""
    x = x.float()
    if budget != "none":
        max_mse = 255.0 ** 2 / 10.0 ** (psnr_floor / 10.0)
        mse = (sums / x[0].numel()).reshape(-1, 1, 1, 1)
        if budget == "cap":
            d = d * torch.clamp(torch.sqrt(max_mse / (mse + 1e-12)), max=1.0)
        else:
            z = d * torch.sqrt(max_mse / (mse + 1e-8))
            d = eps * (2.0 * torch.sigmoid(2.0 * (z * (1.0 / eps))) - 1.0)
    return torch.clamp(x + d, 0.0, 255.0) - x

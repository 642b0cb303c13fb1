"""Direct (implicit-GEMM) convolution with fused prologues and epilogues, for the Cloaking Block.

One kernel covers every conv of the block (stride 1, 'same' padding, k = 1 or 3):

* prologue (per input element, before the GEMM): two concatenated sources A and B, each with a
  scalar affine ``v·mul + add`` (γ-scale of the perturbation map; ``x/127.5 − 1`` of the raw
  input), or for A the SE-ResBlock combine ``relu(A·se[b, c] + skip)``. Padding is applied
  *after* the affine, as in the reference (a padded ``xn`` is 0, not −1).
* epilogue: + bias (BatchNorm folded in), ReLU on the first ``relu_channels`` outputs (lets one
  launch compute a ReLU'd body conv and a linear skip projection side by side), optional
  depth-to-space ×2 store (sub-pixel DeConv), per-tile channel sums for the SE pooling, or the
  network's bounded output ``eps·tanh(raw)·mask`` with per-tile Σd² for the per-image PSNR cap.

fp16 or fp32 activations; accumulation is always fp32 (fp32 dots use IEEE, not TF32, so the
result matches the PyTorch reference closely). ``conv2d_fused_reference`` is the PyTorch twin.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ._triton import check_tensor, interpreting, next_pow2, tl, triton

__all__ = ["conv2d_fused", "conv2d_fused_reference", "EPILOGUES"]

# epilogue name → kernel code. "bound": eps·tanh(raw)·mask + Σd²; "mask": raw·mask + Σu²
# (budget "fixed" normalises it later); "bound_nosum": no PSNR cap, so no sums.
EPILOGUES = {"none": 0, "bound": 1, "mask": 2, "bound_nosum": 3}
_FLOATS = (torch.float32, torch.float16)


@triton.jit
def _conv_kernel(a_ptr, a_bs, CA, a_mul, a_add,
                 b_ptr, b_bs, CB, b_mul, b_add,
                 se_ptr, skip_ptr, skip_bs,
                 w_ptr, bias_ptr, mask_ptr,
                 out_ptr, out_bs, part_ptr,
                 H, W, COUT, RELU_LIMIT, EPS,
                 K: tl.constexpr, KS: tl.constexpr, HAS_B: tl.constexpr, SE_IN: tl.constexpr, SHUFFLE: tl.constexpr,
                 POOL: tl.constexpr, EPI: tl.constexpr, FP16: tl.constexpr,
                 BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_CO: tl.constexpr):
    pid_p = tl.program_id(0)
    pid_c = tl.program_id(1)
    b = tl.program_id(2)
    HW = H * W
    p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    pmask = p < HW
    oh = p // W
    ow = p % W
    co = pid_c * BLOCK_CO + tl.arange(0, BLOCK_CO)
    cmask = co < COUT
    KK: tl.constexpr = KS * KS
    PAD: tl.constexpr = KS // 2
    acc = tl.zeros((BLOCK_P, BLOCK_CO), dtype=tl.float32)
    # K (loop bound) is constexpr: under NumPy ≥ 2.4 the interpreter cannot range() over a
    # runtime scalar (it is a 1-element array there); on a GPU it unrolls per conv anyway.
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        kmask = k < K
        ci = k // KK
        r = k % KK
        ih = oh[:, None] + (r // KS)[None, :] - PAD
        iw = ow[:, None] + (r % KS)[None, :] - PAD
        inb = pmask[:, None] & kmask[None, :] & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        sp = ih * W + iw
        in_a = inb & (ci < CA)[None, :]
        v = tl.load(a_ptr + b * a_bs + ci[None, :] * HW + sp, mask=in_a, other=0.0).to(tl.float32)
        if SE_IN:
            s = tl.load(se_ptr + b * CA + ci, mask=kmask & (ci < CA), other=0.0)
            sk = tl.load(skip_ptr + b * skip_bs + ci[None, :] * HW + sp, mask=in_a, other=0.0).to(tl.float32)
            v = tl.maximum(v * s[None, :] + sk, 0.0)
        else:
            v = v * a_mul + a_add
        v = tl.where(in_a, v, 0.0)
        if HAS_B:
            in_b = inb & (ci >= CA)[None, :]
            vb = tl.load(b_ptr + b * b_bs + (ci - CA)[None, :] * HW + sp, mask=in_b, other=0.0).to(tl.float32)
            v = tl.where(in_b, vb * b_mul + b_add, v)
        wt = tl.load(w_ptr + co[None, :] * K + k[:, None], mask=kmask[:, None] & cmask[None, :], other=0.0)
        if FP16:
            acc = tl.dot(v.to(tl.float16), wt, acc)
        else:
            acc = tl.dot(v, wt, acc, input_precision="ieee")

    y = acc + tl.load(bias_ptr + co, mask=cmask, other=0.0)[None, :]
    y = tl.where((co < RELU_LIMIT)[None, :], tl.maximum(y, 0.0), y)
    valid = pmask[:, None] & cmask[None, :]
    n_pt = tl.num_programs(0)
    if EPI == 0:
        if SHUFFLE:  # conv channel co → output channel co // 4 at sub-pixel (co % 4) // 2, co % 2
            sub = co % 4
            oy = 2 * oh[:, None] + (sub // 2)[None, :]
            ox = 2 * ow[:, None] + (sub % 2)[None, :]
            off = (co // 4)[None, :] * (4 * HW) + oy * (2 * W) + ox
        else:
            off = co[None, :] * HW + p[:, None]
        tl.store(out_ptr + b * out_bs + off, y.to(out_ptr.dtype.element_ty), mask=valid)
        if POOL:
            tl.store(part_ptr + (b * n_pt + pid_p) * COUT + co, tl.sum(tl.where(valid, y, 0.0), axis=0),
                     mask=cmask)
    else:
        m = tl.load(mask_ptr + p, mask=pmask, other=0.0)[:, None]
        if EPI == 2:
            d = y * m
        else:  # tanh as 2·sigmoid(2x) − 1: libdevice.tanh fails in the interpreter
            d = EPS * (2.0 * tl.sigmoid(2.0 * y) - 1.0) * m
        tl.store(out_ptr + b * out_bs + co[None, :] * HW + p[:, None], d, mask=valid)
        if EPI != 3:
            tl.store(part_ptr + (b * n_pt + pid_p) * COUT + co, tl.sum(tl.where(valid, d * d, 0.0), axis=0),
                     mask=cmask)


def _batch_stride(name: str, t: torch.Tensor, H: int, W: int) -> int:
    """Channel planes must be dense; the batch stride may skip channels (a slice of a wider map)."""
    if t.stride(3) != 1 or t.stride(2) != W or t.stride(1) != H * W:
        raise ConfigError(f"{name} must have dense (C, H, W) planes, got strides {t.stride()}",
                          hint="pass a channel slice of a contiguous NCHW tensor, or call .contiguous()")
    return t.stride(0)


def _validate(a, weight, bias, b, se, skip, mask, ksize, shuffle, epilogue, relu_channels):
    import torch as _t

    if ksize not in (1, 3):
        raise ConfigError(f"ksize must be 1 or 3, got {ksize}")
    if epilogue not in EPILOGUES:
        raise ConfigError(f"epilogue must be one of {list(EPILOGUES)}, got {epilogue!r}")
    if a.ndim != 4:
        raise ConfigError(f"a must be (B, C, H, W), got {tuple(a.shape)}")
    if a.dtype not in _FLOATS:
        raise ConfigError(f"a must be float32 or float16, got {a.dtype}", hint="cast with .float() or .half()")
    if not a.is_cuda and not interpreting():
        check_tensor("a", a.contiguous())  # raises the CPU-without-interpreter error
    B, CA, H, W = a.shape
    dev = a.device
    CB = 0
    if b is not None:
        if b.ndim != 4 or b.shape[0] != B or b.shape[2:] != a.shape[2:]:
            raise ConfigError(f"b must be (B={B}, C, {H}, {W}), got {tuple(b.shape)}")
        check_tensor("b", b, dtypes=_FLOATS, device=dev)
        CB = b.shape[1]
    cin = CA + CB
    check_tensor("weight", weight, ndim=2, dtypes=(a.dtype,), device=dev)
    cout = weight.shape[0]
    if weight.shape[1] != cin * ksize * ksize:
        raise ConfigError(f"weight must be (Cout, {cin}·{ksize}·{ksize}={cin * ksize * ksize}), "
                          f"got {tuple(weight.shape)}", hint="flatten a (Cout, Cin, k, k) weight with .reshape(Cout, -1)")
    check_tensor("bias", bias, shape=(cout,), dtypes=(_t.float32,), device=dev)
    if (se is None) != (skip is None):
        raise ConfigError("se and skip come together (SE-ResBlock combine prologue)")
    if se is not None:
        check_tensor("se", se, shape=(B, CA), dtypes=(_t.float32,), device=dev)
        if skip.shape != a.shape or skip.dtype not in _FLOATS or skip.device != dev:
            raise ConfigError(f"skip must be {tuple(a.shape)} float on {dev}, got {tuple(skip.shape)} {skip.dtype}")
    if shuffle and (cout % 4 or epilogue != "none"):
        raise ConfigError(f"shuffle needs Cout divisible by 4 and epilogue 'none', got {cout}, {epilogue!r}")
    if epilogue != "none":
        if mask is None:
            raise ConfigError(f"epilogue {epilogue!r} needs the feather mask")
        check_tensor("mask", mask, shape=(H, W), dtypes=(_t.float32,), device=dev)
    if not 0 <= relu_channels <= cout:
        raise ConfigError(f"relu_channels must be in [0, {cout}], got {relu_channels}")
    return B, CA, CB, H, W, cout


def conv2d_fused(a: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, *, ksize: int = 3,
                 b: torch.Tensor | None = None, a_affine: tuple[float, float] = (1.0, 0.0),
                 b_affine: tuple[float, float] = (1.0, 0.0), se: torch.Tensor | None = None,
                 skip: torch.Tensor | None = None, relu_channels: int = 0, shuffle: bool = False,
                 pool: bool = False, epilogue: str = "none", eps: float = 8.0,
                 mask: torch.Tensor | None = None, block_p: int | None = None):
    """Launch the fused conv. Returns ``(out, partials)``; ``partials`` is None unless ``pool``
    or a summing epilogue is on, else (B, n_tiles, Cout) fp32 whose sum over dim 1 is the
    per-image channel sum of the output (``pool``) or of its square (epilogue).

    a: (B, CA, H, W) fp32/fp16 (dense planes; may be a channel slice); b: optional (B, CB, H, W)
    concatenated after a; weight: (Cout, (CA+CB)·k·k) in a's dtype; bias: (Cout,) fp32.
    Output: a's dtype, (B, Cout, H, W) or (B, Cout/4, 2H, 2W) with ``shuffle``; fp32 with an epilogue.
    """
    # The interpreter pays per program and per loop step, not per element: bigger tiles there.
    block_p = block_p or (256 if interpreting() else 64)
    block_k = 64 if interpreting() else 32
    if block_p < 16 or block_p & (block_p - 1):
        raise ConfigError(f"block_p must be a power of two ≥ 16, got {block_p}")
    B, CA, CB, H, W, cout = _validate(a, weight, bias, b, se, skip, mask, ksize, shuffle, epilogue,
                                      relu_channels)
    a_bs = _batch_stride("a", a, H, W)
    b_bs = _batch_stride("b", b, H, W) if b is not None else 0
    skip_bs = _batch_stride("skip", skip, H, W) if skip is not None else 0
    code = EPILOGUES[epilogue]
    out_dtype = torch.float32 if code else a.dtype
    shape = (B, cout // 4, 2 * H, 2 * W) if shuffle else (B, cout, H, W)
    out = torch.empty(shape, device=a.device, dtype=out_dtype)
    block_co = max(16, min(64, next_pow2(cout)))
    grid = (triton.cdiv(H * W, block_p), triton.cdiv(cout, block_co), B)
    summing = pool or code in (1, 2)
    part = torch.empty((B, grid[0], cout), device=a.device, dtype=torch.float32) if summing else None
    _conv_kernel[grid](
        a, a_bs, CA, float(a_affine[0]), float(a_affine[1]),
        b if b is not None else a, b_bs, CB, float(b_affine[0]), float(b_affine[1]),
        se if se is not None else bias, skip if skip is not None else a, skip_bs,
        weight, bias, mask if mask is not None else bias,
        out, out[0].numel(), part if part is not None else bias,
        H, W, cout, int(relu_channels), float(eps),
        K=(CA + CB) * ksize * ksize, KS=ksize, HAS_B=b is not None, SE_IN=se is not None, SHUFFLE=shuffle, POOL=pool, EPI=code,
        FP16=a.dtype == torch.float16, BLOCK_P=block_p, BLOCK_K=block_k, BLOCK_CO=block_co, num_warps=4)
    return out, part


def conv2d_fused_reference(a, weight, bias, *, ksize=3, b=None, a_affine=(1.0, 0.0), b_affine=(1.0, 0.0),
                           se=None, skip=None, relu_channels=0, shuffle=False, pool=False,
                           epilogue="none", eps=8.0, mask=None, block_p=None):
    """PyTorch twin of ``conv2d_fused`` in fp32. Returns ``(out, sums)`` with sums (B, Cout)
    (what the kernel's partials add up to) or None."""
    xa = a.float()
    xa = torch.relu(xa * se[:, :, None, None] + skip.float()) if se is not None else xa * a_affine[0] + a_affine[1]
    inp = xa if b is None else torch.cat([xa, b.float() * b_affine[0] + b_affine[1]], 1)
    w4 = weight.float().reshape(weight.shape[0], inp.shape[1], ksize, ksize)
    y = F.conv2d(inp, w4, bias, padding=ksize // 2)
    if relu_channels:
        y = torch.cat([torch.relu(y[:, :relu_channels]), y[:, relu_channels:]], 1)
    sums = y.sum((2, 3)) if pool else None
    if shuffle:
        y = F.pixel_shuffle(y, 2)
    if epilogue == "none":
        return y.to(a.dtype), sums
    d = y * mask if epilogue == "mask" else eps * (2.0 * torch.sigmoid(2.0 * y) - 1.0) * mask
    return d, (None if epilogue == "bound_nosum" else (d * d).sum((2, 3)))

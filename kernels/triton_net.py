"""``TritonNullSwapNet``: NullSwapNet with its Cloaking Block run by fused Triton kernels.

The identity/perturbation and feature branches stay in PyTorch (cuDNN at S/4); the Cloaking
Block — γ·pert ⊕ feat → SE-ResBlock → DeConv → ConvBlock → DeConv → ⊕ xn → tail → bounded,
feathered, PSNR-capped output, add, clamp — runs as 8 launches:

  1 conv3x3 [γ·pert, feat] → [relu(BN(body1)), BN(skip 1x1)]   (skip embedded as a centre tap)
  2 conv3x3 body2 + BN, per-tile channel sums for the SE pool
  3 SE gate (B, w)
  4 DeConv conv with prologue relu(body2·gate + skip), depth-to-space store, BN, ReLU
  5 ConvBlock        6 DeConv (depth-to-space)
  7 tail conv with prologue [h, x/127.5 − 1], ReLU      8 tail conv, ReLU
  9 final conv + bias, epilogue eps·tanh·mask and Σd² per tile
 10 PSNR scale, add, clamp, − x

BatchNorm is folded into the conv weights when the wrapper is built, so the wrapper is a
snapshot: rebuild it after changing the model's weights. ``cloaking_reference`` is the
pure-PyTorch twin of the block (the model's own modules), used by tests and benchmarks.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..network.model import DeConv, NullSwapNet, SEResBlock
from ._triton import interpreting
from .triton_conv import conv2d_fused
from .triton_finalize import finalize
from .triton_se import se_gate

__all__ = ["TritonNullSwapNet", "fold_conv_bn", "cloaking_reference"]


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d | None, repeat: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight (Cout, Cin, k, k), bias (Cout,)) fp32 of conv → BN(eval). ``repeat`` = 4 for a
    sub-pixel DeConv, whose BN channel c covers conv channels 4c..4c+3."""
    w = conv.weight.detach().float()
    b = conv.bias.detach().float() if conv.bias is not None else torch.zeros(w.shape[0], device=w.device)
    if bn is None:
        return w.clone(), b.clone()
    s = bn.weight.detach().float() / torch.sqrt(bn.running_var.float() + bn.eps)
    shift = bn.bias.detach().float() - bn.running_mean.float() * s
    s, shift = s.repeat_interleave(repeat), shift.repeat_interleave(repeat)
    return w * s[:, None, None, None], b * s + shift


def cloaking_reference(model: NullSwapNet, pert: torch.Tensor, feat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """PyTorch Cloaking Block: (noised perturbation map, feature map, raw input) → perturbation,
    exactly ``model.perturbation(x)`` given the two branch outputs."""
    c = model.cfg
    xn = x * (1.0 / 127.5) - 1.0
    h = model.fuse(torch.cat([model.gamma * pert, feat], 1))
    raw = model.tail(torch.cat([h, xn], 1))
    d = c.eps * (2.0 * torch.sigmoid(2.0 * raw) - 1.0) * model.mask
    if c.psnr_floor is not None:
        max_mse = 255.0 ** 2 / 10.0 ** (c.psnr_floor / 10.0)
        if c.budget == "fixed":
            u = raw * model.mask
            z = u * torch.sqrt(max_mse / (u.pow(2).mean(dim=(1, 2, 3), keepdim=True) + 1e-8))
            d = c.eps * (2.0 * torch.sigmoid(2.0 * (z * (1.0 / c.eps))) - 1.0)
        else:
            mse = d.pow(2).mean(dim=(1, 2, 3), keepdim=True)
            d = d * torch.clamp(torch.sqrt(max_mse / (mse + 1e-12)), max=1.0)
    return torch.clamp(x + d, 0.0, 255.0) - x


class TritonNullSwapNet:
    """Inference wrapper with the contract of ``NullSwapNet.perturbation``.

    model: a NullSwapNet in eval mode (its BN statistics and fixed noise are what is folded).
    cuda_graphs: capture the whole forward once per batch size on CUDA and replay it (cuts the
        ~30 launches' CPU overhead that dominates batch-1 latency); ignored on the CPU.
    act_dtype: float32 or float16 activations inside the Cloaking Block (fp32 accumulation).
    """

    def __init__(self, model: NullSwapNet, cuda_graphs: bool = True, act_dtype: torch.dtype = torch.float32) -> None:
        if not isinstance(model, NullSwapNet):
            raise ConfigError(f"TritonNullSwapNet wraps a NullSwapNet, got {type(model).__name__}")
        if model.training:
            raise ConfigError("the model is in training mode (batch-stat BN, fresh noise)",
                              hint="call model.eval() before wrapping it")
        if act_dtype not in (torch.float32, torch.float16):
            raise ConfigError(f"act_dtype must be torch.float32 or torch.float16, got {act_dtype}")
        dev = next(model.parameters()).device
        if dev.type != "cuda" and not interpreting():
            raise ConfigError(f"the model is on {dev}; the Triton kernels need CUDA",
                              hint="call model.cuda(), or set TRITON_INTERPRET=1 before importing triton")
        if model.cfg.luminance or model.cfg.texture or model.cfg.universal or model.cfg.coarse_width:
            raise ConfigError("the fused kernels implement the RGB, flat-budget network (luminance=False, "
                              "texture=0, universal=False, coarse_width=0)", hint="use the torch or onnxruntime backend for this model")
        fuse = list(model.fuse)
        if not (isinstance(fuse[0], SEResBlock) and isinstance(fuse[1], DeConv) and isinstance(fuse[3], DeConv)
                and not isinstance(fuse[0].skip, nn.Identity)):
            raise ConfigError("unexpected Cloaking Block layout", hint="this wrapper matches nullswap_sdk's NullSwapNet")
        self.model, self.cuda_graphs, self.act_dtype = model, cuda_graphs, act_dtype
        self.cfg = model.cfg
        self._graphs: dict[int, tuple] = {}
        with torch.no_grad():
            self._fold(model)

    def _fold(self, m: NullSwapNet) -> None:
        se_blk, de1, cb, de2 = m.fuse
        flat = lambda w: w.reshape(w.shape[0], -1).to(self.act_dtype).contiguous()  # noqa: E731
        body_w, body_b = fold_conv_bn(se_blk.body[0], se_blk.body[1])
        skip_w, skip_b = fold_conv_bn(se_blk.skip[0], se_blk.skip[1])
        skip_w3 = torch.zeros(skip_w.shape[0], skip_w.shape[1], 3, 3, device=skip_w.device)
        skip_w3[:, :, 1, 1] = skip_w[:, :, 0, 0]  # 1x1 conv as the centre tap of a 3x3 one
        self.w = m.cfg.width
        self.k1 = (flat(torch.cat([body_w, skip_w3])), torch.cat([body_b, skip_b]).contiguous())
        w2, b2 = fold_conv_bn(se_blk.body[3], se_blk.body[4])
        self.k2 = (flat(w2), b2.contiguous())
        fc1, fc2 = se_blk.se[0], se_blk.se[2]  # 1x1 convs with bias: plain matrices
        self.se = tuple(t.detach().float().reshape(t.shape[0], -1).contiguous() for t in (fc1.weight, fc2.weight))
        self.se = (self.se[0], fc1.bias.detach().float().contiguous(), self.se[1], fc2.bias.detach().float().contiguous())
        w, b = fold_conv_bn(de1[0], de1[2], repeat=4)
        self.k4 = (flat(w), b.contiguous())
        w, b = fold_conv_bn(cb[0], cb[1])
        self.k5 = (flat(w), b.contiguous())
        w, b = fold_conv_bn(de2[0], de2[2], repeat=4)
        self.k6 = (flat(w), b.contiguous())
        self.tail = [(flat(w), b.contiguous()) for w, b in
                     (fold_conv_bn(m.tail[0][0], m.tail[0][1]), fold_conv_bn(m.tail[1][0], m.tail[1][1]),
                      fold_conv_bn(m.tail[2], None))]
        self.gamma = float(m.gamma.detach())
        self.mask = m.mask[0, 0].float().contiguous()

    def cloaking_block(self, pert: torch.Tensor, feat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Triton Cloaking Block: the same contract as ``cloaking_reference`` (without the model)."""
        c, w, dt = self.cfg, self.w, self.act_dtype
        pert, feat = pert.to(dt).contiguous(), feat.to(dt).contiguous()
        q = pert.shape[-1]
        y1, _ = conv2d_fused(pert, *self.k1, b=feat, a_affine=(self.gamma, 0.0), relu_channels=w)
        y2, part = conv2d_fused(y1[:, :w], *self.k2, pool=True)
        gate = se_gate(part, q * q, *self.se)
        h, _ = conv2d_fused(y2, *self.k4, se=gate, skip=y1[:, w:], relu_channels=self.k4[0].shape[0], shuffle=True)
        h, _ = conv2d_fused(h, *self.k5, relu_channels=self.k5[0].shape[0])
        h, _ = conv2d_fused(h, *self.k6, relu_channels=self.k6[0].shape[0], shuffle=True)
        t0, t1, t2 = self.tail
        h, _ = conv2d_fused(h, *t0, b=x, b_affine=(1.0 / 127.5, -1.0), relu_channels=t0[0].shape[0])
        h, _ = conv2d_fused(h, *t1, relu_channels=t1[0].shape[0])
        budget = "none" if c.psnr_floor is None else c.budget
        epi = {"none": "bound_nosum", "cap": "bound", "fixed": "mask"}[budget]
        d, part = conv2d_fused(h, *t2, epilogue=epi, eps=c.eps, mask=self.mask)
        return finalize(x, d, part, budget=budget, psnr_floor=c.psnr_floor, eps=c.eps)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        xn = x * (1.0 / 127.5) - 1.0
        pert = m.noise(m.perturb_block(m.identity(xn)))
        return self.cloaking_block(pert, m.features(xn), x)

    def perturbation(self, x: torch.Tensor) -> torch.Tensor:
        """x float32 (B, 3, S, S) RGB in [0, 255] → ``clamp(x + delta) − x``, float32."""
        self.model._check(x)
        if x.dtype != torch.float32:
            raise ConfigError(f"x must be float32 RGB in [0, 255], got {x.dtype}", hint="convert with x.float()")
        if x.device != self.mask.device:
            raise ConfigError(f"x is on {x.device}, the model on {self.mask.device}", hint="move x to the model's device")
        x = x.contiguous()
        with torch.no_grad():
            if not (self.cuda_graphs and x.is_cuda):
                return self._forward(x)
            return self._replay(x)

    def _replay(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        if B not in self._graphs:
            static_x = x.clone()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up: JIT-compiles the kernels outside the capture
                for _ in range(2):
                    self._forward(static_x)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self._forward(static_x)
            self._graphs[B] = (graph, static_x, static_out)
        graph, static_x, static_out = self._graphs[B]
        static_x.copy_(x)
        graph.replay()
        return static_out.clone()  # the next replay overwrites static_out

"""The NullSwap cloaking network (Wang et al., ICCV 2025; DESIGN.md §1), sized for real time.

Layout (S = working size, w = deep width, t = tail width; deep branches run at S/4):

    x ─┬─ IdentityExtraction: Conv-BN-ReLU s2, max-pool, 4 SE-ResBlocks ──► id map (w, S/4)
       │    └─ PerturbationBlock: ConvBlock, 3 SE-ResBlocks, ConvBlock, + β·(α·n + η)
       ├─ FeatureBlock: 3 ConvBlocks (two stride 2), 5 SE-ResBlocks ──────► feat (w, S/4)
       └─ CloakingBlock: [γ·pert, feat] (+ optional coarse residual at S/8)
            → SE-ResBlock → DeConv → ConvBlock → DeConv (S)
            → [·, x] → ConvBlock → ConvBlock → Conv ──► raw (3, S)

    delta = feather · eps·tanh(raw), scaled down per image to respect ``psnr_floor``
    (budget "cap"), or normalised to exactly that energy then bounded by eps·tanh(·/eps)
    (budget "fixed"); cloaked = clamp(x + delta, 0, 255).

The deep branches work at S/4 because that is where identity lives for recognisers and it
keeps the cost per face ~0.2 GFLOP (default widths); only the short tail runs at full resolution, and it sees
the input again so the perturbation can follow the image's texture. tanh is written as
2·sigmoid(2x) − 1, which Triton's interpreter can run (libdevice.tanh fails there).

Adaptive noise at inference: ``n`` is a fixed N(0, 1) buffer drawn from ``noise_seed``
(stored with the weights), not 0 and not fresh noise. Fresh noise would make the cloak
non-deterministic; n = 0 would feed the next layers a signal they never saw in training
(the learned α·n term vanishes and the activation statistics shift). A fixed draw is one
sample of the training distribution, and it is the same in torch, ONNX and Triton.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..cloakers.texture import default_radius, texture_weight
from ..errors import ConfigError
from ..faces.paste import feather_mask
from ..faces.templates import Template, get_template

__all__ = ["NetworkConfig", "NullSwapNet", "ConvBlock", "SEResBlock", "DeConv", "working_template",
           "count_params", "count_flops"]


@dataclass(frozen=True)
class NetworkConfig:
    """Architecture and output bounds. Saved inside every weights file (safetensors metadata)."""

    template: str = "cloak256"  # the Cloaker's crop; the network works on it rescaled to ``size``
    size: int = 128  # working resolution (multiple of 4)
    # Channels of the deep branches at size / 4. 16 is the real-time default: ONNX Runtime,
    # 1 thread on the shared 2-core box, 128²: w16 0.22 GFLOP 7.9 ms, w24 0.42 GFLOP 11.3 ms,
    # w32 0.69 GFLOP 14.5 ms (median, same load, interleaved). Multiples of 8 suit ORT's NCHWc.
    width: int = 16
    tail_width: int = 8  # channels of the full-resolution tail (input included)
    id_blocks: int = 4
    pert_blocks: int = 3
    feat_blocks: int = 5
    se_reduction: int = 4
    eps: float = 8.0  # L∞ bound of the perturbation, 0-255 pixel units
    psnr_floor: float | None = 42.0  # dB on the working crop; None: only the L∞ bound
    budget: str = "cap"  # "cap": scale down to the floor; "fixed": always spend exactly it
    feather: float = 0.0625  # mask ramp, fraction of the crop side (faces.paste)
    noise_seed: int = 0
    # Transfer levers measured with per-image PGD in the lab (docs/RESULTS.md, "Transfer lab"):
    luminance: bool = False  # one output channel, the same δ on R, G, B: no colour tint
    texture: float = 0.0  # power of the texture weight (cloakers.texture) the bound is scaled by
    # A learned image-independent map (S x S) added to the raw output before the bound: a
    # universal, aligned-face component beside the image-specific one (zero-initialised, so a
    # network initialised from one without it starts as that network).
    universal: bool = False
    # Capacity at S/8: a residual branch on the fused [γ·pert, feat] map (stride-2 ConvBlock to
    # ``coarse_width`` channels, ``coarse_blocks`` SE-ResBlocks, DeConv back, zero-initialised
    # 1x1 conv) added before the Cloaking Block. At S/8 channels are 4x cheaper per FLOP, and a
    # network grown from one without it starts exactly as that network. 0: off.
    coarse_width: int = 0
    coarse_blocks: int = 4

    def __post_init__(self) -> None:
        if self.size < 16 or self.size % 4:
            raise ConfigError(f"size must be a multiple of 4 and ≥ 16, got {self.size}")
        if self.width < 4 or self.tail_width < 4 or self.width % 2:
            raise ConfigError(f"width must be even ≥ 4 and tail_width ≥ 4, got {self.width}, {self.tail_width}")
        if min(self.id_blocks, self.pert_blocks, self.feat_blocks) < 0 or self.se_reduction < 1:
            raise ConfigError("block counts must be ≥ 0 and se_reduction ≥ 1")
        if self.eps <= 0 or (self.psnr_floor is not None and self.psnr_floor <= 0):
            raise ConfigError(f"eps and psnr_floor must be > 0, got {self.eps}, {self.psnr_floor}")
        if self.coarse_width < 0 or self.coarse_width % 2 or self.coarse_blocks < 0 or (
                self.coarse_width and self.size % 8):
            raise ConfigError(f"coarse_width must be even ≥ 0 (size a multiple of 8 when on) and coarse_blocks ≥ 0, "
                              f"got {self.coarse_width}, {self.coarse_blocks} at size {self.size}")
        if self.texture < 0:
            raise ConfigError(f"texture must be ≥ 0, got {self.texture}")
        if self.budget not in ("cap", "fixed"):
            raise ConfigError(f"budget must be 'cap' or 'fixed', got {self.budget!r}")
        get_template(self.template)  # fail early on an unknown template name

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "NetworkConfig":
        d = json.loads(text)
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown NetworkConfig fields {sorted(unknown)}",
                              hint="the weights were saved by a newer SDK; upgrade nullswap_sdk")
        return cls(**d)


def working_template(cfg: NetworkConfig) -> Template:
    """``cfg.template`` resized to ``cfg.size`` (cv2.resize pixel-centre convention), so an
    INTER_AREA / bilinear resize of a Cloaker crop is exactly an aligned working crop."""
    tpl = get_template(cfg.template)
    f = cfg.size / tpl.size
    pts = ((tpl.points + 0.5) * f - 0.5).astype(np.float32)
    return Template(f"{cfg.template}@{cfg.size}", cfg.size, pts)


class ConvBlock(nn.Sequential):
    """3x3 Conv (no bias: BN follows) → BN → ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class SEResBlock(nn.Module):
    """Residual block with squeeze-and-excitation; a 1x1 projection when channels change."""

    def __init__(self, cin: int, cout: int | None = None, reduction: int = 4) -> None:
        super().__init__()
        cout = cout or cin
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        hidden = max(cout // reduction, 4)
        self.se = nn.Sequential(nn.Conv2d(cout, hidden, 1), nn.ReLU(inplace=True),
                                nn.Conv2d(hidden, cout, 1), nn.Sigmoid())
        self.skip = nn.Identity() if cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        y = y * self.se(F.adaptive_avg_pool2d(y, 1))  # GlobalAveragePool: stays in ORT NCHWc layout
        return F.relu(y + self.skip(x))


class DeConv(nn.Sequential):
    """Learned ×2 upsampling as a sub-pixel convolution: 3x3 conv to 4·cout channels at the low
    resolution, then depth-to-space → BN → ReLU.

    It spans every k4 s2 p1 transposed conv (each output pixel of one sees a 3x3 input window)
    with no checkerboard artefacts, and runs as a plain Conv + DepthToSpace, which ONNX Runtime
    executes several times faster than ConvTranspose at full resolution (measured: 3.4 ms → <1 ms).
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.Conv2d(cin, 4 * cout, 3, 1, 1, bias=False), nn.PixelShuffle(2),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _tanh(x: torch.Tensor) -> torch.Tensor:
    return 2.0 * torch.sigmoid(2.0 * x) - 1.0


class AdaptiveNoise(nn.Module):
    """``x + β·(α·n + η)``: n ~ N(0, 1) while training, a fixed seeded draw in eval mode."""

    def __init__(self, channels: int, hw: int, seed: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.tensor(1.0))
        self.beta = nn.Parameter(torch.tensor(0.1))  # small: noise must not drown the map at init
        self.eta = nn.Parameter(torch.zeros(1, channels, hw, hw))
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("fixed_noise", torch.randn(1, channels, hw, hw, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = torch.randn_like(x) if self.training else self.fixed_noise
        return x + self.beta * (self.alpha * n + self.eta)


class NullSwapNet(nn.Module):
    """Aligned working crops → cloaked crops.

    ``forward(x)``: x float32 (B, 3, S, S) RGB in [0, 255] → cloaked (B, 3, S, S) in [0, 255].
    ``perturbation(x)`` gives ``cloaked − x`` instead (what the Cloaker pastes back).
    """

    def __init__(self, cfg: NetworkConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or NetworkConfig()
        w, t, r, q = cfg.width, cfg.tail_width, cfg.se_reduction, cfg.size // 4
        self.identity = nn.Sequential(
            ConvBlock(3, w, stride=2), nn.MaxPool2d(2),
            *[SEResBlock(w, reduction=r) for _ in range(cfg.id_blocks)])
        self.perturb_block = nn.Sequential(
            ConvBlock(w, w), *[SEResBlock(w, reduction=r) for _ in range(cfg.pert_blocks)], ConvBlock(w, w))
        self.noise = AdaptiveNoise(w, q, cfg.noise_seed)
        self.features = nn.Sequential(
            ConvBlock(3, w // 2, stride=2), ConvBlock(w // 2, w, stride=2), ConvBlock(w, w),
            *[SEResBlock(w, reduction=r) for _ in range(cfg.feat_blocks)])
        self.gamma = nn.Parameter(torch.tensor(1.0))
        if cfg.coarse_width:
            cw = cfg.coarse_width
            self.coarse = nn.Sequential(
                ConvBlock(2 * w, cw, stride=2), *[SEResBlock(cw, reduction=r) for _ in range(cfg.coarse_blocks)],
                DeConv(cw, 2 * w), nn.Conv2d(2 * w, 2 * w, 1))
            with torch.no_grad():  # zero residual at init: the grown network is its parent
                self.coarse[-1].weight.zero_()
                self.coarse[-1].bias.zero_()
        self.fuse = nn.Sequential(SEResBlock(2 * w, w, reduction=r), DeConv(w, w // 2),
                                  ConvBlock(w // 2, t), DeConv(t, t - 3))
        # (t − 3) + 3 input channels = t: a multiple of 8 keeps ONNX Runtime in its blocked
        # (NCHWc) conv layout at full resolution, the most expensive part of the network.
        self.tail = nn.Sequential(ConvBlock(t, t), ConvBlock(t, t), nn.Conv2d(t, 1 if cfg.luminance else 3, 3, 1, 1))
        with torch.no_grad():  # unbiased start: a faint image-dependent pattern at ~the PSNR budget
            self.tail[-1].bias.zero_()
        if cfg.universal:
            self.universal = nn.Parameter(torch.zeros(1, 1 if cfg.luminance else 3, cfg.size, cfg.size))
        self.register_buffer("mask", torch.from_numpy(feather_mask(cfg.size, cfg.feather))[None, None])

    def _check(self, x: torch.Tensor) -> None:
        s = self.cfg.size
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != s or x.shape[3] != s:
            raise ConfigError(f"NullSwapNet expects (B, 3, {s}, {s}) float RGB [0, 255], got {tuple(x.shape)}",
                              hint=f"align faces with working_template(cfg) (template {self.cfg.template!r} "
                                   f"resized to {s})")

    def raw_delta(self, x: torch.Tensor) -> torch.Tensor:
        """Bounded, masked perturbation before the clamp to the valid pixel range."""
        self._check(x)
        xn = x * (1.0 / 127.5) - 1.0
        pert = self.noise(self.perturb_block(self.identity(xn)))
        h = torch.cat([self.gamma * pert, self.features(xn)], 1)
        if self.cfg.coarse_width:
            h = h + self.coarse(h)
        h = self.fuse(h)
        raw = self.tail(torch.cat([h, xn], 1))
        c = self.cfg
        if c.universal:
            raw = raw + self.universal
        mask = self.mask
        if c.texture:  # move the budget from flat skin to textured regions (same mean bound)
            mask = mask * texture_weight(x, c.texture, radius=default_radius(c.size), mask=self.mask)
        if c.luminance:
            raw = raw.expand(-1, 3, -1, -1)
        if c.psnr_floor is None:
            return c.eps * _tanh(raw) * mask
        max_mse = 255.0 ** 2 / 10.0 ** (c.psnr_floor / 10.0)
        if c.budget == "fixed":
            # Normalise the pattern to the budget's energy, then bound it smoothly:
            # |eps·tanh(z/eps)| ≤ min(|z|, eps), so MSE ≤ budget and L∞ ≤ eps both hold, and
            # training only learns *where* to spend the energy, never to spend less.
            u = raw * mask
            z = u * torch.sqrt(max_mse / (u.pow(2).mean(dim=(1, 2, 3), keepdim=True) + 1e-8))
            return c.eps * _tanh(z * (1.0 / c.eps))
        # "cap": per-image scale down so that MSE ≤ the budget: quality holds by construction.
        delta = c.eps * _tanh(raw) * mask
        mse = delta.pow(2).mean(dim=(1, 2, 3), keepdim=True)
        return delta * torch.clamp(torch.sqrt(max_mse / (mse + 1e-12)), max=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x + self.raw_delta(x), 0.0, 255.0)

    def perturbation(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x) - x


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, size: int, batch: int = 1) -> int:
    """2 × multiply-accumulates of the convolutions for one forward pass (elementwise ops,
    and BN which export folds into the convs, are left out: < 2 % here)."""
    total = 0

    def hook(mod, inp, out):
        nonlocal total
        k = mod.weight.shape[2] * mod.weight.shape[3]
        total += 2 * out.numel() * (mod.in_channels // mod.groups) * k

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            dev = next(model.parameters()).device
            model(torch.zeros(batch, 3, size, size, device=dev))
    finally:
        model.train(was_training)
        for h in hs:
            h.remove()
    return total // batch

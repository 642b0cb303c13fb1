"""Differentiable, randomised degradations for expectation over transformation (EOT).

A swapper re-detects, re-aligns and often re-compresses a shared photo. Optimising the
perturbation through random versions of that path keeps it effective after it.
All functions take float BCHW in [0, 255] and a ``torch.Generator`` for determinism.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["EOTConfig", "jitter_affine", "random_degrade", "gaussian_blur_torch"]


@dataclass(frozen=True)
class EOTConfig:
    """Ranges of the random transforms (0 disables one)."""

    rotate_deg: float = 3.0  # re-alignment error of another detector
    scale: float = 0.04
    shift_px: float = 2.0  # in the recogniser's crop pixels
    resize_min: float = 0.5  # down-and-up resize factor drawn in [resize_min, 1]
    blur_sigma_max: float = 1.0
    noise_std: float = 2.0


def jitter_affine(A: torch.Tensor, centre: float, cfg: EOTConfig, gen: torch.Generator) -> torch.Tensor:
    """Follow ``A`` with a random small similarity about the output crop's centre.

    ``A``: (B, 2, 3) source-pixel -> destination-pixel matrices; ``centre``: the
    destination crop's centre in pixels (``(size - 1) / 2``).
    """
    B = A.shape[0]
    u = torch.rand(B, 4, generator=gen, dtype=torch.float64).to(A) * 2 - 1
    ang = u[:, 0] * math.radians(cfg.rotate_deg)
    s = 1 + u[:, 1] * cfg.scale
    cos, sin = s * torch.cos(ang), s * torch.sin(ang)
    lin = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)  # (B,2,2)
    c = A.new_full((B, 2, 1), centre)
    t = c - lin @ c + (u[:, 2:] * cfg.shift_px)[:, :, None]
    return torch.cat([lin @ A[:, :, :2], lin @ A[:, :, 2:] + t], dim=2)


def gaussian_blur_torch(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-sample Gaussian blur; ``sigma`` (B,) may contain zeros (no blur)."""
    B, C, H, W = x.shape
    radius = max(1, int(math.ceil(3 * float(sigma.max()))))
    k = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    sig = sigma.to(x).clamp_min(1e-3)[:, None]
    w = torch.exp(-0.5 * (k[None, :] / sig) ** 2)
    w = w / w.sum(1, keepdim=True)  # (B, K); sigma≈0 gives a delta kernel
    xs = x.reshape(1, B * C, H, W)
    wk = w.repeat_interleave(C, 0)
    xs = F.conv2d(F.pad(xs, (radius, radius, 0, 0), mode="replicate"), wk[:, None, None, :], groups=B * C)
    xs = F.conv2d(F.pad(xs, (0, 0, radius, radius), mode="replicate"), wk[:, None, :, None], groups=B * C)
    return xs.reshape(B, C, H, W)


def random_degrade(x: torch.Tensor, cfg: EOTConfig, gen: torch.Generator) -> torch.Tensor:
    """Random resize-down-and-up, blur and noise, the same kind for the whole batch."""
    B, _, H, W = x.shape
    if cfg.resize_min < 1.0:
        f = float(cfg.resize_min + (1 - cfg.resize_min) * torch.rand(1, generator=gen))
        h, w = max(8, round(H * f)), max(8, round(W * f))
        if (h, w) != (H, W):
            x = F.interpolate(x, size=(h, w), mode="area")
            x = F.interpolate(x, size=(H, W), mode="bilinear", align_corners=False)
    if cfg.blur_sigma_max > 0:
        sigma = torch.rand(B, generator=gen) * cfg.blur_sigma_max
        x = gaussian_blur_torch(x, sigma)
    if cfg.noise_std > 0:
        x = x + torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device) * cfg.noise_std
    return x

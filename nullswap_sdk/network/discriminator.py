"""PatchGAN discriminator trained beside the cloaking network (DESIGN.md §1).

It scores overlapping patches (~34 px receptive field at the working size), not whole
images: the perturbation is a local texture, so a patch critic gives dense, local feedback
where a global one would only say "somewhere". Spectral norm keeps it Lipschitz so its
gradients stay informative even when it separates the tiny clean/cloaked difference early.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn.utils.parametrizations import spectral_norm

from ..errors import ConfigError

__all__ = ["DiscriminatorConfig", "PatchDiscriminator"]


@dataclass(frozen=True)
class DiscriminatorConfig:
    width: int = 32
    layers: int = 3  # stride-2 stages; output map is size / 2**layers

    def __post_init__(self) -> None:
        if self.width < 4 or not 1 <= self.layers <= 5:
            raise ConfigError(f"discriminator width ≥ 4 and 1 ≤ layers ≤ 5, got {self.width}, {self.layers}")


class PatchDiscriminator(nn.Module):
    """(B, 3, S, S) RGB [0, 255] → (B, 1, S / 2**layers, S / 2**layers) real/fake logits."""

    def __init__(self, cfg: DiscriminatorConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or DiscriminatorConfig()
        mods: list[nn.Module] = []
        cin, c = 3, cfg.width
        for i in range(cfg.layers):
            mods += [spectral_norm(nn.Conv2d(cin, c, 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True)]
            cin, c = c, min(c * 2, 8 * cfg.width)
        mods += [spectral_norm(nn.Conv2d(cin, cin, 3, 1, 1)), nn.LeakyReLU(0.2, inplace=True),
                 spectral_norm(nn.Conv2d(cin, 1, 3, 1, 1))]
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ConfigError(f"PatchDiscriminator expects (B, 3, H, W), got {tuple(x.shape)}")
        return self.net(x * (1.0 / 127.5) - 1.0)

"""Training losses: identity cosine through each recogniser's own re-alignment + EOT, and the
quality / adversarial terms.

The identity path models what an attacker's pipeline does to a shared photo (DESIGN.md §2):
the cloaked working crop is degraded as a saved photo is (differentiable JPEG, resize, blur,
noise, colour), then re-aligned with a jittered similarity to each recogniser's template
and embedded. The clean reference is the exact, undegraded alignment: the attacker's
source photo is the degraded one, the identity to hide is the clean one.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from nullswap_sdk.cloakers.eot import EOTConfig, jitter_affine, random_degrade
from nullswap_sdk.errors import ConfigError
from nullswap_sdk.faces.align import estimate_similarity, warp_affine_torch
from nullswap_sdk.faces.templates import Template, get_template

from .config import EOTTrainConfig

__all__ = ["AlignedEmbedder", "IdentityLoss", "jpeg_approx", "jpeg_quant_tables", "ssim", "mse_loss", "colour_jitter",
           "eot_degrade", "d_loss", "g_adv_loss"]

# JPEG standard (ITU T.81 Annex K) base quantisation tables, row-major 8x8.
_Q_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], np.float64).reshape(8, 8)
_Q_CHROMA = np.full((8, 8), 99.0)
_Q_CHROMA[:4, :4] = np.array([[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]])


def jpeg_quant_tables(quality: int) -> tuple[np.ndarray, np.ndarray]:
    """(luma, chroma) tables at ``quality`` with the IJG (libjpeg) scaling that cv2/PIL use."""
    if not 1 <= quality <= 100:
        raise ConfigError(f"JPEG quality must be in [1, 100], got {quality}")
    s = 5000.0 / quality if quality < 50 else 200.0 - 2.0 * quality
    return tuple(np.clip(np.floor((q * s + 50.0) / 100.0), 1, 255) for q in (_Q_LUMA, _Q_CHROMA))


def _dct_matrix(device, dtype) -> torch.Tensor:
    k = torch.arange(8, dtype=torch.float64)[:, None]
    n = torch.arange(8, dtype=torch.float64)[None, :]
    d = torch.cos((2 * n + 1) * k * math.pi / 16) * math.sqrt(2.0 / 8)
    d[0] /= math.sqrt(2.0)
    return d.to(device=device, dtype=dtype)


def _round(x: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "ste":  # exact rounding forward, identity gradient backward
        return x + (torch.round(x) - x).detach()
    if mode == "cubic":  # Shin & Song (2017): round(x) + (x − round(x))³, smooth gradient
        r = torch.round(x).detach()
        return r + (x - r) ** 3
    raise ConfigError(f"rounding must be 'ste' or 'cubic', got {mode!r}")


def _blocks_dct(p: torch.Tensor, q: torch.Tensor, D: torch.Tensor, rounding: str) -> torch.Tensor:
    """8x8 block DCT → quantise (q: (B, 8, 8)) → dequantise → IDCT of a (B, H, W) plane."""
    B, H, W = p.shape
    b = p.reshape(B, H // 8, 8, W // 8, 8).permute(0, 1, 3, 2, 4)
    c = D @ b @ D.T
    qq = q[:, None, None]
    c = _round(c / qq, rounding) * qq
    return (D.T @ c @ D).permute(0, 1, 3, 2, 4).reshape(B, H, W)


def jpeg_approx(x: torch.Tensor, quality, rounding: str = "ste", offset: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Differentiable JPEG (baseline, YCbCr 4:2:0) of float (B, 3, H, W) RGB in [0, 255].

    ``quality``: int or (B,) ints. ``offset``: shift of the 8x8 grid (a crop rarely starts on
    the photo's block grid). Close to cv2's encoder (chroma upsampling and
    integer DCT differ; measured 46-49 dB vs cv2 at q30-95 on an LFW face, while JPEG itself
    is 35-45 dB from the original): the aim is the right kind of loss, not bit-exactness.
    """
    B, C, H, W = x.shape
    if C != 3:
        raise ConfigError(f"jpeg_approx expects RGB (B, 3, H, W), got {tuple(x.shape)}")
    qs = [int(quality)] * B if np.isscalar(quality) else [int(v) for v in quality]
    tabs = [jpeg_quant_tables(q) for q in qs]
    ql = torch.as_tensor(np.stack([t[0] for t in tabs]), dtype=x.dtype, device=x.device)
    qc = torch.as_tensor(np.stack([t[1] for t in tabs]), dtype=x.dtype, device=x.device)
    oy, ox = offset[0] % 8, offset[1] % 8
    Hp, Wp = -(-(H + oy) // 16) * 16, -(-(W + ox) // 16) * 16
    xp = F.pad(x, (ox, Wp - W - ox, oy, Hp - H - oy), mode="replicate")
    r, g, b = xp[:, 0], xp[:, 1], xp[:, 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b - 128.0
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b
    D = _dct_matrix(x.device, x.dtype)
    y = _blocks_dct(y, ql, D, rounding) + 128.0
    chroma = F.avg_pool2d(torch.stack([cb, cr], 1), 2)
    chroma = torch.stack([_blocks_dct(chroma[:, i], qc, D, rounding) for i in range(2)], 1)
    chroma = F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False)
    cb, cr = chroma[:, 0], chroma[:, 1]
    out = torch.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], 1)
    return out[:, :, oy:oy + H, ox:ox + W].clamp(0.0, 255.0)


def colour_jitter(x: torch.Tensor, amount: float, gen: torch.Generator) -> torch.Tensor:
    """Per-sample brightness, contrast and saturation changes of relative size ≤ ``amount``."""
    if amount <= 0:
        return x
    u = (torch.rand(x.shape[0], 3, generator=gen) * 2 - 1).to(x) * amount
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * (1 + u[:, 0, None, None, None]) + mean + 255.0 * u[:, 1, None, None, None]
    grey = x.mean(dim=1, keepdim=True)
    return grey + (x - grey) * (1 + u[:, 2, None, None, None])


def eot_degrade(x: torch.Tensor, cfg: EOTTrainConfig, gen: torch.Generator) -> torch.Tensor:
    """Random photo-sharing degradations of float (B, 3, H, W) [0, 255], differentiable."""
    if float(torch.rand(1, generator=gen)) >= cfg.p_degrade:
        return x
    with torch.autocast(x.device.type, enabled=False):  # DCT/quantisation in bf16 would distort
        return _degrade(x.float(), cfg, gen)


def _degrade(x: torch.Tensor, cfg: EOTTrainConfig, gen: torch.Generator) -> torch.Tensor:
    if float(torch.rand(1, generator=gen)) < cfg.p_resize_blur_noise:
        ecfg = EOTConfig(resize_min=cfg.resize_min, blur_sigma_max=cfg.blur_sigma_max, noise_std=cfg.noise_std)
        x = random_degrade(x, ecfg, gen)
    x = colour_jitter(x, cfg.colour, gen).clamp(0.0, 255.0)
    if float(torch.rand(1, generator=gen)) < cfg.p_jpeg:
        lo, hi = cfg.jpeg_quality
        q = torch.randint(lo, hi + 1, (x.shape[0],), generator=gen).tolist()
        off = torch.randint(0, 8, (2,), generator=gen).tolist()
        x = jpeg_approx(x, q, offset=(off[0], off[1]))
    return x


class AlignedEmbedder:
    """Unit embeddings of working crops, each recogniser through its own (optionally jittered)
    re-alignment. Used as-is for validation recognisers (no gradients are ever taken there)."""

    def __init__(self, recognisers: list, working: Template, jitter: EOTConfig | None = None) -> None:
        self.models = recognisers
        self.names = [m.cfg.name for m in recognisers]
        self.jitter = jitter or EOTConfig()
        # All templates are similarity copies of one layout, so one matrix per recogniser.
        self.affines = [torch.from_numpy(estimate_similarity(working.points, get_template(m.cfg.template).points)).float()
                        for m in recognisers]

    def embed(self, i: int, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        m, s = self.models[i], self.models[i].cfg.input_size
        A = self.affines[i].to(x.device).expand(x.shape[0], 2, 3)
        if gen is not None:
            A = jitter_affine(A, (s - 1) / 2, self.jitter, gen)
        return F.normalize(m(warp_affine_torch(x, A, (s, s))).float(), dim=1)

    @torch.no_grad()
    def references(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.embed(i, x) for i in range(len(self.models))]


class IdentityLoss(AlignedEmbedder):
    """Cosine between recogniser embeddings of clean and cloaked working crops, per recogniser.
    Refuses validation-only recognisers (faceres): they must never shape the network."""

    def __init__(self, recognisers: list, working: Template, eot: EOTTrainConfig) -> None:
        for m in recognisers:
            if getattr(m.cfg, "role", "whitebox") != "whitebox":
                raise ConfigError(f"recogniser {m.cfg.name!r} is validation-only and cannot enter a loss",
                                  hint="list white-box recognisers in TrainConfig.recognisers")
        super().__init__(recognisers, working,
                         EOTConfig(rotate_deg=eot.rotate_deg, scale=eot.scale, shift_px=eot.shift_px))
        self.eot = eot

    def cosines(self, cloaked: torch.Tensor, refs: list[torch.Tensor], gen: torch.Generator | None) -> list[torch.Tensor]:
        """Per recogniser, (B,) cosines of the (degraded, re-aligned) cloaked crops."""
        x = eot_degrade(cloaked, self.eot, gen) if gen is not None else cloaked
        return [(self.embed(i, x, gen) * refs[i]).sum(1) for i in range(len(self.models))]


def _gauss_window(size: int, sigma: float, device, dtype) -> torch.Tensor:
    k = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-0.5 * (k / sigma) ** 2)
    return (g / g.sum()).to(device=device, dtype=dtype)


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-sample mean SSIM (Wang et al. 2004; Gaussian 11/1.5, valid region) of [0, 255] images."""
    C = x.shape[1]
    g = _gauss_window(window, sigma, x.device, x.dtype)
    gx, gy = g.view(1, 1, 1, -1).repeat(C, 1, 1, 1), g.view(1, 1, -1, 1).repeat(C, 1, 1, 1)

    def blur(t):
        return F.conv2d(F.conv2d(t, gx, groups=C), gy, groups=C)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3))


def mse_loss(cloaked: torch.Tensor, clean: torch.Tensor, psnr_ref: float) -> torch.Tensor:
    """MSE in pixel units relative to the MSE at ``psnr_ref`` dB (so 1.0 means exactly psnr_ref)."""
    return (cloaked - clean).pow(2).mean() / (255.0 ** 2 / 10 ** (psnr_ref / 10))


def d_loss(real: torch.Tensor, fake: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "lsgan":
        return (real - 1).pow(2).mean() + fake.pow(2).mean()
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def g_adv_loss(fake: torch.Tensor, mode: str) -> torch.Tensor:
    return (fake - 1).pow(2).mean() if mode == "lsgan" else -fake.mean()


"""Training losses: identity cosine through each recogniser's own re-alignment + EOT, and the
quality / adversarial terms.

The identity path models what an attacker's pipeline does to a shared photo (DESIGN.md §2):
the cloaked working crop is degraded as a saved photo is (differentiable JPEG, resize, blur,
noise, colour), then re-aligned with a jittered similarity to each recogniser's template
and embedded. The clean reference is the exact, undegraded alignment: the attacker's
source photo is the degraded one, the identity to hide is the clean one.
"""
from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F

from nullswap_sdk.cloakers.eot import EOTConfig, jitter_affine, random_degrade
from nullswap_sdk.cloakers.jpeg import jpeg_approx, jpeg_quant_tables
from nullswap_sdk.errors import ConfigError
from nullswap_sdk.faces.align import estimate_similarity, warp_affine_torch
from nullswap_sdk.faces.templates import Template, get_template
from nullswap_sdk.recognisers.dropout import calibrate_dropout, conv_dropout
from nullswap_sdk.recognisers.taps import feature_tap

from .config import EOTTrainConfig

__all__ = ["AlignedEmbedder", "IdentityLoss", "jpeg_approx", "jpeg_quant_tables", "ssim", "mse_loss", "colour_jitter",
           "eot_degrade", "d_loss", "g_adv_loss"]

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

    def affine(self, i: int, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        """(B, 2, 3) working-crop -> recogniser-crop matrices, jittered when ``gen`` is given."""
        s = self.models[i].cfg.input_size
        A = self.affines[i].to(x.device).expand(x.shape[0], 2, 3)
        return jitter_affine(A, (s - 1) / 2, self.jitter, gen) if gen is not None else A

    def embed(self, i: int, x: torch.Tensor, gen: torch.Generator | None = None,
              A: torch.Tensor | None = None) -> torch.Tensor:
        m, s = self.models[i], self.models[i].cfg.input_size
        A = self.affine(i, x, gen) if A is None else A
        return F.normalize(m(warp_affine_torch(x, A, (s, s))).float(), dim=1)

    @torch.no_grad()
    def references(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.embed(i, x) for i in range(len(self.models))]


class IdentityLoss(AlignedEmbedder):
    """Cosine between recogniser embeddings of clean and cloaked working crops, per recogniser.
    Refuses validation-only recognisers (faceres): they must never shape the network."""

    def __init__(self, recognisers: list, working: Template, eot: EOTTrainConfig,
                 feature_depth: float | None = None) -> None:
        for m in recognisers:
            if getattr(m.cfg, "role", "whitebox") != "whitebox":
                raise ConfigError(f"recogniser {m.cfg.name!r} is validation-only and cannot enter a loss",
                                  hint="list white-box recognisers in TrainConfig.recognisers")
        super().__init__(recognisers, working,
                         EOTConfig(rotate_deg=eot.rotate_deg, scale=eot.scale, shift_px=eot.shift_px))
        self.eot = eot
        self.drops = [0.0] * len(recognisers)  # surrogate conv dropout rates (see calibrate_dropout)
        self.feature_depth = feature_depth  # mid-level conv read by ``terms`` (None: cosines only)

    @torch.no_grad()
    def calibrate_dropout(self, x: torch.Tensor, fidelity: float, seed: int = 0) -> list[float]:
        """Per recogniser, the conv dropout rate at which thinned and exact embeddings of the
        clean crops ``x`` agree at mean cosine ``fidelity`` (1: dropout off)."""
        if fidelity >= 1:
            self.drops = [0.0] * len(self.models)
            return self.drops
        refs = self.references(x)

        def at(i: int, p: float) -> float:
            with conv_dropout(self.models[i], p, torch.Generator().manual_seed(seed)):
                return float((self.embed(i, x) * refs[i]).sum(1).mean())

        self.drops = [calibrate_dropout(lambda p, i=i: at(i, p), fidelity) for i in range(len(self.models))]
        return self.drops

    def cosines(self, cloaked: torch.Tensor, refs: list[torch.Tensor], gen: torch.Generator | None) -> list[torch.Tensor]:
        """Per recogniser, (B,) cosines of the (degraded, re-aligned) cloaked crops; with ``gen``
        (training) through thinned surrogates when dropout rates are set."""
        return self.terms(cloaked, refs, gen)[0]

    def terms(self, cloaked: torch.Tensor, refs: list[torch.Tensor], gen: torch.Generator | None,
              clean: torch.Tensor | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``cosines`` and, given the ``clean`` crops and a ``feature_depth``, per recogniser the
        (B,) relative distance of the cloaked crops' mid-level features from the clean ones'
        (LTP, Salzmann et al. 2021: generators trained to disrupt mid-level features transfer
        across models). Both crops go through the same degradation, re-alignment and dropout
        masks (the generator is replayed), so the distance is the cloak's alone."""
        feats = clean is not None and self.feature_depth is not None
        start = gen.get_state() if gen is not None else None
        x = eot_degrade(cloaked, self.eot, gen) if gen is not None else cloaked
        x0 = clean
        if feats and gen is not None:
            after = gen.get_state()
            gen.set_state(start)
            with torch.no_grad():
                x0 = eot_degrade(clean, self.eot, gen)
            gen.set_state(after)
        cos, dist = [], []
        for i, m in enumerate(self.models):
            A = self.affine(i, x, gen)
            p = self.drops[i] if gen is not None else 0.0
            with feature_tap(m, self.feature_depth) if feats else nullcontext([]) as taps:
                if feats:
                    mask_state = gen.get_state() if gen is not None else None
                    with torch.no_grad(), conv_dropout(m, p, gen):
                        self.embed(i, x0, A=A)
                    if gen is not None:
                        gen.set_state(mask_state)  # the cloaked pass draws the same dropout masks
                with conv_dropout(m, p, gen):
                    cos.append((self.embed(i, x, A=A) * refs[i]).sum(1))
            if feats:
                f0, f1 = taps[0].flatten(1).float(), taps[1].flatten(1).float()
                dist.append((f1 - f0).norm(dim=1) / f0.norm(dim=1).clamp_min(1e-6))
        return cos, dist


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


"""Per-image PGD cloaking: the strong-but-slow baseline and the network's yardstick.

The perturbation lives on the cloaker's working crop. Each recogniser sees it through
a differentiable warp to its *own* template (as an attacker's pipeline would align),
optionally jittered and degraded (EOT). Updates are momentum sign steps (MI-FGSM) or
momentum L2-normalised steps (``norm``),
projected on an L∞ ball and then onto a PSNR floor (an L2 ball) so quality is bounded
by construction.
"""
from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..faces.align import estimate_similarity, warp_affine_torch
from ..faces.paste import feather_mask
from ..faces.templates import get_template
from ..recognisers.builtin import WHITEBOX_DEFAULT
from ..recognisers.dropout import calibrate_dropout, conv_dropout
from ..recognisers.skipgrad import has_residuals, skip_gradient
from ..recognisers.taps import feature_tap
from ..recognisers.model import load_recogniser
from ..recognisers.registry import get_recogniser_config
from .eot import EOTConfig, gaussian_blur_torch, jitter_affine, random_degrade
from .jpeg import jpeg_approx
from .reference import IdentityReference, blend_references
from .texture import texture_weight

__all__ = ["PGDConfig", "PGDCloaker"]


@dataclass(frozen=True)
class PGDConfig:
    recognisers: tuple[str, ...] = WHITEBOX_DEFAULT
    template: str = "cloak256"
    steps: int = 40
    eps: float = 8.0  # L∞ bound in 0-255 pixel units
    step_size: float | None = None  # "linf": pixels (default 2.5 * eps / steps); "l2": see ``norm``
    # "linf": MI-FGSM sign steps. "l2": momentum of the L2-normalised gradient (weighted by the
    # per-pixel bound), each step ``step_size`` x the PSNR floor's L2 radius (default
    # min(0.5, 3 / steps)). Where the PSNR floor binds, sign steps spend the budget on pixels
    # the gradient barely cares about and the projection then shrinks everything: measured at
    # the network's crop bound, 5 sign steps left the surrogates' mean cosine at 0.89, 5 L2
    # steps at 0.61 (training/distill.py).
    norm: str = "linf"
    psnr_floor: float = 41.0  # dB on the masked crop; the photo's face box lands close to it
    momentum: float = 0.9
    # Nesterov look-ahead (NI-FGSM, Lin et al. 2020): each gradient is taken where the momentum
    # is about to carry the iterate, not where it is — the same cost, a transfer lever.
    nesterov: bool = False
    eot_samples: int = 1  # random alignments/degradations per step, beside the exact one
    eot: EOTConfig = field(default_factory=EOTConfig)
    # Transfer levers (DESIGN.md §4; each measured in the transfer lab, training/lab.py):
    luminance: bool = False  # one δ for R, G and B: no colour tint, more fooling per dB
    texture: float = 0.0  # power of the texture weight on the per-pixel bound and step (0: flat)
    # Share of the texture measure taken from fine detail rather than local std (0: std only):
    # shading counts as std but masks nothing (cloakers/texture.py).
    texture_detail: float = 0.0
    jpeg_p: float = 0.0  # probability that an EOT view goes through a differentiable JPEG
    jpeg_quality: tuple[int, int] = (50, 95)
    grad_blur: float = 0.0  # Gaussian σ (px) smoothing the gradient (TI): survives downsampling
    # Surrogate dropout on conv outputs (recognisers/dropout.py), its rate set per recogniser so
    # thinned and exact embeddings of the attacked faces agree at this mean cosine; 1: off.
    dropout_fidelity: float = 1.0
    # Mid-level feature loss (recognisers/taps.py): also push the conv features at this relative
    # depth away from the clean face's, weighted against the identity cosine; 0: off.
    feature_weight: float = 0.0
    feature_depth: float = 0.5
    # "distance": push the features away from the clean face's. "fia": feature importance
    # (FIA, Wang et al. 2021) — lower the features along the identity cosine's gradient with
    # respect to them, averaged over ``fia_copies`` copies of the face with ``fia_drop`` of the
    # pixels dropped, so the term follows what identity rests on, not one model's quirks.
    # "ila" (Huang et al. 2019): the first ``ila_split`` of the steps attack the embeddings
    # alone; their features' shift from the clean face's then becomes a guide, and the
    # remaining steps also push the features further along it (the projection, relative to the
    # guide's length) — the direction the ensemble found, followed in shared mid-level features.
    feature_mode: str = "distance"
    fia_copies: int = 8
    fia_drop: float = 0.3
    ila_split: float = 0.5
    # Skip gradient (SGM, recognisers/skipgrad.py): gradients through residual branches times
    # this, so the attack leans on the low-level features skip connections carry; surrogates
    # without residuals (sface) are left as they are. 1: off.
    skip_grad: float = 1.0
    # Stochastic ensemble: each step attacks this many of the surrogates, drawn at random
    # (0: all). A step then costs k / n of a full one; the final iterate is scored on all.
    surrogates_per_step: int = 0
    # How the surrogates' identity cosines combine into each step, per face. "mean": each
    # counts the same, so the surrogate with the largest input gradient sets the direction
    # (after the L2 step normalisation scale no longer matters, only that sum). "gradnorm":
    # each surrogate's gradient is scaled to unit L2 norm before the sum: every surrogate gets
    # an equal say in the direction. "softmax": the cosines are weighted by softmax(cos /
    # ``ensemble_temperature``) (weights held constant): the step goes to the surrogates that
    # still recognise the face — unseen recognisers behave like the hardest surrogate.
    ensemble: str = "mean"
    ensemble_temperature: float = 0.1
    # Warm start: a network (a shipped model name or a .safetensors path) whose perturbation,
    # times ``init_scale``, is the first iterate instead of 0 — the network's image-specific
    # pattern, refined per image. None: start from 0.
    init: str | None = None
    init_scale: float = 1.0
    # Feature-space target (cloakers/targets.py): a pool of aligned faces; each face is also
    # pulled toward a target made of pool faces, with this weight. None: untargeted.
    # ``target_choice`` "far": the pool faces least like this face (mean cosine over the
    # surrogates; session 6: worse on every figure); "near": the most alike — a look-alike is
    # the shortest way across an identification margin. The target is the normalised mean of
    # the ``target_k`` chosen faces' embeddings, per recogniser.
    target_pool: str | None = None
    target_weight: float = 1.0
    target_choice: str = "far"
    target_k: int = 1
    # Identity reference (cloakers/reference.py): with other photos of the person, the loss's
    # reference becomes normalize((1 - m)·own + m·their mean) per surrogate, so the cloak moves
    # the face away from the person, not only from this photo's pose and light (session 13, crop
    # level: m 0.5 lowered the similarity to a third photo of the person more than m 0 or 1).
    # Applied to the faces whose clean embedding matches the reference: mean cosine over the
    # surrogates ≥ ``reference_match`` (validation pairs: same person ~0.7, different ~0.1).
    reference_mix: float = 0.5
    reference_match: float = 0.35
    feather: float = 0.0625  # mask ramp, fraction of the crop side (see faces.paste)
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.steps < 1 or self.eps <= 0 or self.psnr_floor <= 0:
            raise ConfigError(f"invalid PGD config: steps={self.steps}, eps={self.eps}, psnr_floor={self.psnr_floor}")
        lo, hi = self.jpeg_quality
        if (not 0 <= self.jpeg_p <= 1 or not 1 <= lo <= hi <= 100 or self.texture < 0 or self.grad_blur < 0
                or not 0.5 <= self.dropout_fidelity <= 1 or self.feature_weight < 0
                or not 0 <= self.feature_depth <= 1 or self.init_scale < 0 or self.target_weight < 0
                or self.feature_mode not in ("distance", "fia", "ila") or self.fia_copies < 1
                or not 0 < self.ila_split < 1 or self.target_choice not in ("far", "near") or self.target_k < 1
                or not 0 <= self.fia_drop < 1 or self.norm not in ("linf", "l2")
                or not 0 < self.skip_grad <= 1
                or not 0 <= self.surrogates_per_step <= len(self.recognisers)
                or self.ensemble not in ("mean", "gradnorm", "softmax") or self.ensemble_temperature <= 0
                or not 0 <= self.texture_detail <= 1 or (self.texture_detail > 0 and self.texture == 0)
                or not 0 <= self.reference_mix <= 1 or not -1 <= self.reference_match <= 1
                or (self.step_size is not None and self.step_size <= 0)):
            raise ConfigError(f"invalid PGD levers: jpeg_p={self.jpeg_p}, jpeg_quality={self.jpeg_quality}, "
                              f"texture={self.texture}, texture_detail={self.texture_detail}, grad_blur={self.grad_blur}, "
                              f"dropout_fidelity={self.dropout_fidelity}, feature_weight={self.feature_weight}, "
                              f"feature_depth={self.feature_depth}, feature_mode={self.feature_mode!r}, "
                              f"fia_copies={self.fia_copies}, fia_drop={self.fia_drop}, ila_split={self.ila_split}, "
                              f"init_scale={self.init_scale}, target_weight={self.target_weight}, "
                              f"target_choice={self.target_choice!r}, target_k={self.target_k}, "
                              f"norm={self.norm!r}, step_size={self.step_size}, skip_grad={self.skip_grad}, "
                              f"surrogates_per_step={self.surrogates_per_step}, ensemble={self.ensemble!r}, "
                              f"ensemble_temperature={self.ensemble_temperature}, reference_mix={self.reference_mix}, "
                              f"reference_match={self.reference_match}",
                              hint="jpeg_p in [0, 1], 1 <= quality low <= high <= 100, texture and grad_blur >= 0 "
                                   "(texture_detail in [0, 1], > 0 only with texture > 0), "
                                   "dropout_fidelity in [0.5, 1], feature_weight >= 0, feature_depth in [0, 1], "
                                   "feature_mode 'distance', 'fia' or 'ila', fia_copies >= 1, fia_drop in [0, 1), "
                                   "ila_split in (0, 1), "
                                   "init_scale, target_weight >= 0, target_choice 'far' or 'near', target_k >= 1, "
                                   "norm 'linf' or 'l2', step_size > 0, skip_grad in (0, 1], "
                                   "surrogates_per_step in [0, number of recognisers], "
                                   "ensemble 'mean', 'gradnorm' or 'softmax', ensemble_temperature > 0, reference_mix in [0, 1], "
                                   "reference_match in [-1, 1]")
        for name in self.recognisers:
            if get_recogniser_config(name).role != "whitebox":
                raise ConfigError(
                    f"recogniser {name!r} is validation-only and cannot enter a loss",
                    hint="use white-box recognisers (see `nullswap info`)",
                )


class PGDCloaker:
    """Implements ``CloakMethod`` by per-image optimisation against white-box recognisers."""

    name = "pgd"

    def __init__(self, config: PGDConfig | None = None) -> None:
        self.config = config or PGDConfig()
        self.template = self.config.template
        tpl = get_template(self.template)
        self._size = tpl.size
        self._mask = torch.from_numpy(feather_mask(tpl.size, self.config.feather))
        self._models = [load_recogniser(n, self.config.device) for n in self.config.recognisers]
        # Crop -> recogniser-template transform: the same for every face, because all
        # templates are similarity copies of one landmark layout.
        self._affines = [
            torch.from_numpy(estimate_similarity(tpl.points, get_template(m.cfg.template).points)).float()
            for m in self._models
        ]
        self._skip = [self.config.skip_grad if has_residuals(m) else 1.0 for m in self._models]
        if self.config.skip_grad < 1 and all(g == 1.0 for g in self._skip):
            raise ConfigError(f"skip_grad={self.config.skip_grad}: none of {self.config.recognisers} has residual branches",
                              hint="add a residual surrogate (facenet, facenet-keras) or leave skip_grad at 1")
        self._init = _init_network(self.config.init, self.template, self.config.device) if self.config.init else None
        self._pool = None
        self._importance: list[torch.Tensor] | None = None  # FIA weights of the faces being cloaked
        self._guides: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # ILA: (unit guide, its length)
        if self.config.target_pool:
            from .targets import load_target_pool

            crops = load_target_pool(self.config.target_pool, self.template, self._size)
            with torch.no_grad():  # unit embeddings of the pool, per recogniser, once
                xp = torch.from_numpy(crops).permute(0, 3, 1, 2).float().to(self.config.device)
                self._pool = [torch.cat([self._embed(k, xp[i:i + 32], None)[0] for i in range(0, len(xp), 32)])
                              for k in range(len(self._models))]
        self.last_stats: dict = {}

    def describe(self) -> dict:
        d = asdict(self.config)
        d["eot"] = asdict(self.config.eot)
        return {"method": "pgd", "config": d}

    def _embed(self, k: int, x: torch.Tensor, gen: torch.Generator | None, n_eot: int = 0,
               drop: float = 0.0) -> torch.Tensor:
        """(1 + n_eot, B, D) unit embeddings: the exact alignment, then ``n_eot`` random
        re-alignments + degradations, all in one forward pass of recogniser ``k`` (thinned by
        conv dropout ``drop``)."""
        m, A = self._models[k], self._affines[k]
        s, B = m.cfg.input_size, x.shape[0]
        A = A.to(x.device).expand(B, 2, 3)
        views = [warp_affine_torch(x, A, (s, s))]
        if n_eot:
            xr = x.repeat(n_eot, 1, 1, 1)
            c = self.config
            if c.jpeg_p > 0 and float(torch.rand(1, generator=gen)) < c.jpeg_p:
                # JPEG acts on the saved photo, before the attacker re-aligns: the crop grid
                # rarely matches the photo's 8x8 blocks, hence the random offset.
                q = torch.randint(c.jpeg_quality[0], c.jpeg_quality[1] + 1, (xr.shape[0],), generator=gen)
                off = torch.randint(0, 8, (2,), generator=gen).tolist()
                xr = jpeg_approx(xr, q.tolist(), offset=(off[0], off[1]))
            Aj = jitter_affine(A.repeat(n_eot, 1, 1), (s - 1) / 2, c.eot, gen)
            views.append(random_degrade(warp_affine_torch(xr, Aj, (s, s)), c.eot, gen).clamp(0, 255))
        tap = feature_tap(m, self.config.feature_depth) if self.config.feature_weight > 0 else nullcontext([])
        with conv_dropout(m, drop, gen), skip_gradient(m, self._skip[k]), tap as taps:
            e = F.normalize(m(torch.cat(views, 0)), dim=1)
        # The exact view's mid-level features (unsliced without EOT views: FIA differentiates
        # with respect to this very tensor).
        self._feat = (taps[0] if not n_eot else taps[0][:B]) if taps else None
        return e.reshape(1 + n_eot, B, -1)

    def _loss(self, x: torch.Tensor, refs: list[torch.Tensor], gen: torch.Generator,
              drops: list[float] | None = None, targets: list[torch.Tensor] | None = None,
              active: list[int] | None = None, reduce: bool = True) -> torch.Tensor:
        """Mean identity cosine over recognisers (those in ``active``; None: all) and views, per
        sample (B,); minus the weighted cosine to each face's target when targeted. ``reduce``
        False: the per-recogniser terms, (recognisers, B)."""
        drops = drops or [0.0] * len(refs)
        w = self.config.feature_weight
        terms = []
        for k, ref in enumerate(refs):
            if active is not None and k not in active:
                continue
            e = self._embed(k, x, gen, self.config.eot_samples, drops[k])
            t = (e * ref).sum(2).mean(0)
            if targets is not None:
                t = t - self.config.target_weight * (e * targets[k]).sum(2).mean(0)
            if w > 0 and self.config.feature_mode == "ila":
                if self._guides is not None:  # ILA's second stage: further along the guide
                    u, length = self._guides[k]
                    t = t - w * ((self._feat - self._ref_feats[k]) * u).flatten(1).sum(1) / length
            elif w > 0:
                f0 = self._ref_feats[k]
                scale = f0.flatten(1).norm(dim=1).clamp_min(1e-6)
                if self._importance is not None:  # FIA: importance-weighted features, relative
                    t = t + w * (self._importance[k] * self._feat).flatten(1).sum(1) / scale
                else:  # relative distance of the mid-level features from the clean face's
                    t = t - w * (self._feat - f0).flatten(1).norm(dim=1) / scale
            terms.append(t)
        return torch.stack(terms, 0).mean(0) if reduce else torch.stack(terms, 0)

    def _ensemble_grad(self, terms: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """d(step objective)/dδ from the per-recogniser terms (K, B), as ``ensemble`` says."""
        c = self.config
        if c.ensemble == "softmax":
            w = torch.softmax(terms.detach() / c.ensemble_temperature, dim=0)
            return torch.autograd.grad((w * terms).sum(), delta)[0]
        if c.ensemble == "gradnorm":
            grads = [torch.autograd.grad(t.sum(), delta, retain_graph=k < len(terms) - 1)[0]
                     for k, t in enumerate(terms)]
            return sum(_unit(g) for g in grads)
        return torch.autograd.grad(terms.mean(0).sum(), delta)[0]

    def _feature_importance(self, k: int, x: torch.Tensor, ref: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """FIA's aggregate gradient: d(identity cosine)/d(tapped features), summed over copies
        of ``x`` with random pixels dropped, unit L2 norm per sample."""
        c, agg = self.config, None
        for _ in range(c.fia_copies):
            keep = (torch.rand(x.shape[0], 1, *x.shape[2:], generator=gen) >= c.fia_drop).to(x)
            with torch.enable_grad():  # the input carries the graph: surrogate weights are frozen
                e = self._embed(k, (x * keep).requires_grad_(), None)[0]
                (g,) = torch.autograd.grad((e * ref).sum(), self._feat)
            agg = g if agg is None else agg + g
        return agg / agg.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (agg.dim() - 1))

    @torch.no_grad()
    def _ila_guides(self, x_adv: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per surrogate, the exact surrogate's feature shift of ``x_adv`` from the clean
        face's: (unit direction, length (B,))."""
        out = []
        for k in range(len(self._models)):
            self._embed(k, x_adv, None)
            g = self._feat - self._ref_feats[k]
            length = g.flatten(1).norm(dim=1).clamp_min(1e-6)
            out.append((g / length.view(-1, *[1] * (g.dim() - 1)), length))
        return out

    def _dropout_rate(self, k: int, x: torch.Tensor, ref: torch.Tensor) -> float:
        """Surrogate ``k``'s conv dropout rate for ``dropout_fidelity`` on these faces (0 when off)."""
        if self.config.dropout_fidelity >= 1:
            return 0.0

        def fidelity(p: float) -> float:
            g = torch.Generator().manual_seed(self.config.seed)  # the same masks for every p
            return float((self._embed(k, x, g, 0, p)[0] * ref).sum(1).mean())

        return calibrate_dropout(fidelity, self.config.dropout_fidelity)

    def embed_reference(self, crops: np.ndarray) -> IdentityReference:
        """An ``IdentityReference`` from aligned crops of the person (other photos than the one
        to cloak): per surrogate, the normalised mean of their unit embeddings."""
        self._check_crops(crops, allow_empty=False)
        x = torch.from_numpy(crops).permute(0, 3, 1, 2).float().to(self.config.device)
        with torch.no_grad():
            means = [F.normalize(torch.cat([self._embed(k, x[i:i + 16], None)[0] for i in range(0, len(x), 16)])
                                 .mean(0), dim=0) for k in range(len(self._models))]
        return IdentityReference({n: m.cpu().numpy().astype(np.float32) for n, m in zip(self.config.recognisers, means)},
                                 photos=len(crops))

    def _check_crops(self, crops: np.ndarray, allow_empty: bool = True) -> None:
        if crops.ndim != 4 or crops.shape[1:] != (self._size, self._size, 3) or crops.dtype != np.uint8 \
                or not (allow_empty or len(crops)):
            raise ConfigError(
                f"PGD expects (B, {self._size}, {self._size}, 3) uint8 crops, got {crops.shape} {crops.dtype}",
                hint=f"align faces with template {self.template!r}",
            )

    def check_reference(self, reference: IdentityReference) -> None:
        """ConfigError unless ``reference`` holds an embedding for every surrogate attacked."""
        missing = [n for n in self.config.recognisers if n not in reference.embeddings]
        if missing:
            raise ConfigError(f"the identity reference was built for {sorted(reference.embeddings)}, "
                              f"this cloaker attacks {list(self.config.recognisers)}",
                              hint="build the reference with this cloaker: cloaker.reference(photos)")

    def _apply_reference(self, refs: list[torch.Tensor], reference: IdentityReference) -> list[torch.Tensor]:
        """The loss's references with ``reference`` blended in for the faces that match it;
        records which did in ``last_stats["reference"]`` (with the match scores)."""
        c = self.config
        self.check_reference(reference)
        r = [torch.from_numpy(reference.embeddings[n]).to(refs[0].device) for n in c.recognisers]
        for n, own, rk in zip(c.recognisers, refs, r):
            if rk.shape != own.shape[1:]:
                raise ConfigError(f"the identity reference's {n!r} embedding has {rk.shape[0]} values, "
                                  f"the recogniser gives {own.shape[1]}",
                                  hint="rebuild the reference with this version: cloaker.reference(photos)")
        score = torch.stack([own @ rk for own, rk in zip(refs, r)]).mean(0)  # (B,)
        use = score >= c.reference_match
        self._reference_stats = {"reference": use.tolist(), "reference_score": [round(float(v), 4) for v in score]}
        return [blend_references(own, rk, use, c.reference_mix) for own, rk in zip(refs, r)]

    def perturb(self, crops: np.ndarray, reference: IdentityReference | None = None) -> np.ndarray:
        """``reference``: other photos of the person (``embed_reference``), blended into the
        loss's reference of the faces it matches (see ``PGDConfig.reference_mix``)."""
        c = self.config
        self._check_crops(crops)
        t0 = time.perf_counter()
        self._reference_stats = {}
        gen = torch.Generator().manual_seed(c.seed)
        x = torch.from_numpy(crops).permute(0, 3, 1, 2).float().to(c.device)
        mask = self._mask.to(x.device)
        with torch.no_grad():
            refs, self._ref_feats = [], []
            for k in range(len(self._models)):
                refs.append(self._embed(k, x, None)[0])
                self._ref_feats.append(self._feat)
            drops = [self._dropout_rate(k, x, ref) for k, ref in enumerate(refs)]
            self._importance, self._guides = None, None
            if c.feature_weight > 0 and c.feature_mode == "fia":
                self._importance = [self._feature_importance(k, x, ref, gen) for k, ref in enumerate(refs)]
            targets, chosen = None, None
            if self._pool is not None:  # per face, the pool faces least / most like it on average
                sim = torch.stack([ref @ pool.T for ref, pool in zip(refs, self._pool)]).mean(0)
                k = min(c.target_k, sim.shape[1])
                chosen = sim.topk(k, dim=1, largest=c.target_choice == "near").indices  # (B, k)
                targets = [F.normalize(pool[chosen].mean(1), dim=1) for pool in self._pool]
            # After the dropout calibration, FIA and target choice: those describe this photo.
            if reference is not None:
                refs = self._apply_reference(refs, reference)
        max_mse = 255.0**2 / 10 ** (c.psnr_floor / 10)
        channels = 1 if c.luminance else 3
        if c.norm == "l2":  # a fraction of the floor's L2 radius per step
            step = (c.step_size or min(0.5, 3.0 / c.steps)) * math.sqrt(max_mse * channels * x.shape[2] * x.shape[3])
        else:
            step = c.step_size or 2.5 * c.eps / c.steps
        # ``delta`` is the applied perturbation; the feather mask scales its per-pixel
        # bound so it fades to 0 at the crop border (no seam after paste-back), and the
        # texture weight moves the budget from flat skin to textured regions.
        tex = texture_weight(x, c.texture, mask=mask[None, None], detail=c.texture_detail) if c.texture else 1.0
        mask = mask * tex
        bound = c.eps * mask
        # Keep x + δ in range on every channel (a shared luminance δ: the tightest one).
        lo, hi = (-x).amax(1, keepdim=True), (255 - x).amin(1, keepdim=True)

        def project(d: torch.Tensor) -> torch.Tensor:
            """Onto the per-pixel L∞ bound, the valid pixel range and the PSNR floor."""
            d = torch.maximum(torch.minimum(d, bound), -bound)
            return _project_psnr(d.clamp(lo, hi) if c.luminance else (x + d).clamp(0, 255) - x, max_mse)

        delta = torch.zeros(x.shape[0], channels, *x.shape[2:], device=x.device)
        if self._init is not None:
            d0 = torch.from_numpy(self._init.perturb(crops)).permute(0, 3, 1, 2).to(x.device) * c.init_scale
            delta = project(d0.mean(1, keepdim=True) if c.luminance else d0)
        g = torch.zeros_like(delta)
        best = delta.clone()
        best_loss = torch.full((x.shape[0],), math.inf, device=x.device)
        ila_at = max(1, round(c.steps * c.ila_split)) if c.feature_weight > 0 and c.feature_mode == "ila" else None
        for it in range(c.steps + 1):
            if it == ila_at:
                self._guides = self._ila_guides(x + delta.expand_as(x))
                best_loss.fill_(math.inf)  # another objective from here: its own best
            delta.requires_grad_(it < c.steps)
            # Thinned surrogates steer the steps; the final iterate is scored on the exact ones.
            active = None
            if c.surrogates_per_step and it < c.steps:
                active = torch.randperm(len(refs), generator=gen)[:c.surrogates_per_step].tolist()
            at = delta
            if c.nesterov and it < c.steps:  # the point momentum alone would step to (delta at step 0)
                with torch.no_grad():
                    at = project(delta - step * c.momentum * (_unit(g) if c.norm == "l2" else g.sign() * mask))
                at.requires_grad_(True)
            terms = self._loss(x + at.expand_as(x), refs, gen, drops if it < c.steps else None, targets, active,
                               reduce=False)
            loss = terms.mean(0)
            with torch.no_grad():
                # Thinned losses are noisy: with dropout only the exact final score selects.
                # So are losses over a subset of the surrogates.
                improved = loss.detach() < best_loss if ((not any(drops) and active is None) or it == c.steps) else \
                    torch.zeros_like(best_loss, dtype=torch.bool)
                best[improved] = at.detach()[improved]  # a projected perturbation either way
                best_loss = torch.where(improved, loss.detach(), best_loss)
            if it == c.steps:
                break  # the final iterate is scored, not stepped
            grad = self._ensemble_grad(terms, at)
            with torch.no_grad():
                if c.grad_blur > 0:
                    grad = gaussian_blur_torch(grad, torch.full((grad.shape[0],), c.grad_blur))
                if c.norm == "l2":
                    g = c.momentum * g + _unit(grad * mask)
                    delta = project(delta - step * _unit(g))
                else:
                    g = c.momentum * g + grad / grad.abs().mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
                    delta = project(delta - step * g.sign() * mask)
        out = best.expand_as(x)
        if chosen is not None and chosen.shape[1] == 1:
            chosen = chosen[:, 0]  # one index per face, as before target_k
        self.last_stats = {"seconds": time.perf_counter() - t0, "loss": best_loss.tolist(), "dropout": drops,
                           "target": None if chosen is None else chosen.tolist(), **self._reference_stats}
        return out.permute(0, 2, 3, 1).cpu().numpy().astype(np.float32)


def _init_network(name: str, template: str, device: str):
    """The warm-start network as a ``CloakMethod`` on PGD's crops (torch backend: same device)."""
    from ..models import shipped_weights
    from ..network.cloaker import NetworkCloaker

    path = name if name.endswith(".safetensors") else shipped_weights(name)  # typed error if unknown
    net = NetworkCloaker(path, backend="torch", device=device)
    if net.template != template:
        raise ConfigError(f"PGD init network works on template {net.template!r}, PGD on {template!r}",
                          hint="use a network trained on the PGD template")
    return net


def _unit(t: torch.Tensor) -> torch.Tensor:
    """Each sample scaled to unit L2 norm."""
    return t / t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (t.dim() - 1))


def _project_psnr(d: torch.Tensor, max_mse: float) -> torch.Tensor:
    """Scale each sample so its mean squared perturbation ≤ ``max_mse`` (PSNR floor)."""
    mse = d.pow(2).mean(dim=(1, 2, 3), keepdim=True)
    return d * torch.clamp(torch.sqrt(max_mse / mse.clamp_min(1e-12)), max=1.0)

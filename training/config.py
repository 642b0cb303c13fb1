"""``TrainConfig``: every knob of a training run, saved as ``config.json`` in the run folder.

Nested dataclasses round-trip through JSON (``to_dict`` / ``from_dict``), and ``--set
a.b=value`` overrides any leaf from the command line, so a run is fully described by its file.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from nullswap_sdk.errors import ConfigError
from nullswap_sdk.network.discriminator import DiscriminatorConfig
from nullswap_sdk.network.model import NetworkConfig

__all__ = ["DataConfig", "DLWConfig", "LossConfig", "EOTTrainConfig", "TrainConfig", "config_from_dict",
           "load_config", "apply_overrides"]


@dataclass(frozen=True)
class DataConfig:
    cache_dir: str = "runs/cache"
    data_dir: str | None = None  # None: $NULLSWAP_DATA_DIR or ../shared/data
    val_fraction: float = 0.1  # of LFW identities (identity-disjoint split)
    split_seed: str = "nullswap-v1"
    max_lfw_images: int | None = None  # cap on train images (deterministic subset), None = all
    max_utk_images: int | None = None
    val_crops: int = 64  # held-out crops used for periodic validation (distinct identities first)
    pack: str | None = None  # a JPEG crop pack (data.write_pack) instead of detecting: GPU machines
    hflip: float = 0.5  # probability of a horizontal flip (ArcFace layout is near-symmetric)
    # Distillation targets (training/distill.py: per-crop PGD perturbations under the network's
    # bound) and the share of each batch drawn from the crops that have one.
    distill_dir: str | None = None
    distill_share: float = 0.5


@dataclass(frozen=True)
class DLWConfig:
    mode: str = "dlw"  # "dlw" (DESIGN.md §1) or "mean" (plain average, the ablation)
    # σ² weight. Batch-mean cosines had σ² ≈ 4e-4..1e-3 over k = 30 steps in the sanity runs,
    # so α = 3 (a public re-implementation) leaves DLW to Δ alone; at α = 100 a recogniser
    # whose loss wobbles with std 0.07 (σ² = 5e-3) loses about half its weight vs a steady one.
    alpha: float = 100.0
    gamma: float = 0.1  # β growth per epoch
    k: int = 30  # window of the variance
    beta_init: float = 0.5
    beta_max: float = 2.0
    eps: float = 1e-8  # relative-progress denominator
    eps_d: float = 1e-2  # floor of the denominator: caps a weight at 1 / eps_d
    eps_w: float = 1e-2  # floor of a weight


@dataclass(frozen=True)
class LossConfig:
    w_id: float = 1.0
    w_mse: float = 0.02  # on MSE / MSE(psnr_ref): 1.0 at the reference PSNR (the hard floor rules)
    w_ssim: float = 1.0  # on 1 − SSIM; 5 shrank the cloak to 49 dB within 30 steps (measured)
    w_adv: float = 0.05
    adv_mode: str = "lsgan"  # or "hinge"
    adv_start: int = 200  # generator ignores D for the first steps while D calibrates
    psnr_ref: float = 42.0
    # The soft quality terms ramp in linearly over these steps. Near cos = 1 the identity
    # gradient vanishes (cos is stationary there): measured at init, the MSE term's gradient
    # was 12x the identity term's and shrank the cloak to 46 dB before it could learn a
    # direction. The network's hard PSNR floor bounds quality meanwhile.
    quality_warmup: int = 1000
    # Surrogate conv dropout (DFANet): rates calibrated per recogniser at start so thinned and
    # exact embeddings of clean crops agree at this mean cosine; 1.0 = off.
    dropout_fidelity: float = 1.0
    # Mid-level feature term (LTP): minus w_feat x the mean relative distance of each
    # surrogate's conv output at relative depth ``feature_depth`` from the clean crop's; 0: off.
    w_feat: float = 0.0
    feature_depth: float = 0.5
    # Distillation: w x (1 − cosine) between the network's perturbation and the crop's PGD
    # target (data.distill_dir), on the batch samples that have one; 0: off.
    w_distill: float = 0.0
    # Identity-level reference (training/centroids.py): for crops whose identity has other
    # training crops, the reference embedding becomes normalize((1 − m)·own + m·leave-one-out
    # centroid of the identity's other crops); 0: the crop's own clean embedding only.
    centroid_mix: float = 0.0


@dataclass(frozen=True)
class EOTTrainConfig:
    """Degradations applied to the cloaked working crop (the saved photo) before re-alignment."""

    p_degrade: float = 0.8  # else: only the re-alignment jitter
    p_jpeg: float = 0.5
    jpeg_quality: tuple[int, int] = (40, 95)
    p_resize_blur_noise: float = 0.5  # eot.random_degrade (resize ≥ resize_min, blur, noise)
    colour: float = 0.05  # brightness/contrast/saturation jitter amplitude
    rotate_deg: float = 3.0
    scale: float = 0.04
    shift_px: float = 2.0
    resize_min: float = 0.5
    blur_sigma_max: float = 1.0
    noise_std: float = 2.0


@dataclass(frozen=True)
class TrainConfig:
    network: NetworkConfig = field(default_factory=NetworkConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    data: DataConfig = field(default_factory=DataConfig)
    dlw: DLWConfig = field(default_factory=DLWConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    eot: EOTTrainConfig = field(default_factory=EOTTrainConfig)
    recognisers: tuple[str, ...] = ("sface", "facenet", "mobilefacenet")
    recogniser_files: dict[str, str] = field(default_factory=dict)  # name → local file (GPU box)
    val_recognisers: tuple[str, ...] = ("faceres",)  # evaluation only, never in a loss
    steps: int = 20000
    steps_per_epoch: int | None = None  # None: one pass over the training crops
    batch_size: int = 8
    lr: float = 1e-3  # the sanity runs: 1e-3 reached val cos 0.89 in 90 steps, 5e-4 0.97 in 64
    lr_d: float = 5e-4
    universal_lr_mult: float = 10.0  # LR multiplier of network.universal's map (one tensor, every sample)
    lr_min_ratio: float = 0.1  # cosine decay to lr * ratio at the last step
    grad_clip: float = 5.0
    seed: int = 0
    threads: int = 1  # CPU: 2 OpenMP threads on a shared 2-core box spin-wait badly
    device: str = "auto"  # "auto": cuda if available
    amp: bool = True  # bf16 autocast on CUDA; ignored on CPU
    log_every: int = 10
    val_every: int = 200
    ckpt_every: int = 100
    time_limit_s: float | None = None  # stop (after a checkpoint) when exceeded

    def __post_init__(self) -> None:
        if self.dlw.mode not in ("dlw", "mean"):
            raise ConfigError(f"dlw.mode must be 'dlw' or 'mean', got {self.dlw.mode!r}")
        if self.loss.adv_mode not in ("lsgan", "hinge"):
            raise ConfigError(f"loss.adv_mode must be 'lsgan' or 'hinge', got {self.loss.adv_mode!r}")
        if self.steps < 1 or self.batch_size < 1:
            raise ConfigError(f"steps and batch_size must be ≥ 1, got {self.steps}, {self.batch_size}")
        if not 0.5 <= self.loss.dropout_fidelity <= 1.0:
            raise ConfigError(f"loss.dropout_fidelity must be in [0.5, 1], got {self.loss.dropout_fidelity}",
                              hint="0.9 thins the surrogates gently; 1.0 turns dropout off")
        if self.loss.w_feat < 0 or not 0.0 <= self.loss.feature_depth <= 1.0:
            raise ConfigError(f"loss.w_feat must be >= 0 and loss.feature_depth in [0, 1], got "
                              f"{self.loss.w_feat}, {self.loss.feature_depth}",
                              hint="w_feat 0 turns the feature term off; depth 0.5 reads the middle conv")
        if self.loss.w_distill < 0 or (self.loss.w_distill > 0 and not self.data.distill_dir) or not (
                0 < self.data.distill_share <= 1):
            raise ConfigError(f"loss.w_distill {self.loss.w_distill} needs data.distill_dir "
                              f"({self.data.distill_dir!r}) and data.distill_share in (0, 1] "
                              f"({self.data.distill_share})",
                              hint="build targets with python -m training.distill --out DIR, then "
                                   "--set data.distill_dir=DIR")
        if not self.recognisers:
            raise ConfigError("at least one white-box recogniser is needed for the identity loss")
        leaked = set(self.recognisers) & set(self.val_recognisers)
        if leaked:
            raise ConfigError(f"{sorted(leaked)} are validation recognisers and cannot enter the loss")

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")


def _build(cls, d: dict) -> Any:
    if not isinstance(d, dict):
        raise ConfigError(f"{cls.__name__}: expected a JSON object, got {type(d).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = set(d) - set(known)
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown keys {sorted(unknown)}", hint=f"valid keys: {sorted(known)}")
    kw = {}
    default = cls()
    for k, v in d.items():
        cur = getattr(default, k)
        if is_dataclass(cur):
            kw[k] = _build(type(cur), v)
        elif isinstance(cur, tuple) and isinstance(v, list):
            kw[k] = tuple(v)
        else:
            kw[k] = v
    return cls(**kw)


def config_from_dict(d: dict) -> TrainConfig:
    """A ``TrainConfig`` from its ``to_dict`` form; keys it does not name keep their defaults."""
    return _build(TrainConfig, d)


def load_config(path: str | Path | None) -> TrainConfig:
    if path is None:
        return TrainConfig()
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} not found")
    return _build(TrainConfig, json.loads(p.read_text()))


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # bare strings: --set device=cuda


def apply_overrides(cfg: TrainConfig, items: list[str]) -> TrainConfig:
    """``["loss.w_adv=0.1", "recognisers=[\\"sface\\"]"]`` → a new config."""
    d = cfg.to_dict()
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value", hint="e.g. --set dlw.alpha=3")
        key, val = item.split("=", 1)
        node = d
        parts = key.split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise ConfigError(f"override {key!r}: {p!r} is not a section")
            node = node[p]
        if parts[-1] not in node:
            raise ConfigError(f"override {key!r}: unknown key", hint=f"valid: {sorted(node)}")
        node[parts[-1]] = _parse_value(val)
    return _build(TrainConfig, d)

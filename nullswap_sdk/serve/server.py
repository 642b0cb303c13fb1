"""``run_server``: the app on uvicorn, one process, with graceful shutdown."""
from __future__ import annotations

import logging

from ..errors import MissingDependencyError
from .config import ServeConfig

__all__ = ["run_server", "uvicorn_config"]


def uvicorn_config(config: ServeConfig, host: str = "127.0.0.1", port: int = 8000, *,
                   log_level: str = "info"):
    """The ``uvicorn.Config`` ``run_server`` uses (tests run it on a socket of their own)."""
    try:
        import uvicorn
    except ImportError:
        raise MissingDependencyError("the HTTP service needs FastAPI and uvicorn",
                                     hint='pip install "nullswap-sdk[serve]"') from None
    from .app import create_app

    return uvicorn.Config(
        create_app(config), host=host, port=port, log_level=log_level, access_log=False,
        server_header=False,
        # SIGTERM/SIGINT: stop accepting, let requests in flight finish (bounded by the
        # request timeout), then the lifespan releases the models.
        timeout_graceful_shutdown=int(config.timeout_s) + 1,
        timeout_keep_alive=5)


def run_server(config: ServeConfig | None = None, host: str = "127.0.0.1", port: int = 8000, *,
               log_level: str = "info") -> None:
    """Serve until SIGTERM/SIGINT (blocking)."""
    import uvicorn

    config = config or ServeConfig()
    logging.getLogger("nullswap.serve").setLevel(log_level.upper())
    uvicorn.Server(uvicorn_config(config, host, port, log_level=log_level)).run()

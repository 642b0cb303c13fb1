"""The same FastAPI app as a Ray Serve deployment: replicas, autoscaling, one model per replica.

    nullswap serve --ray local --replicas 2                       # or --ray auto / HOST:6379
    serve run nullswap_sdk.serve.ray_serve:build workers=1 min_replicas=1 max_replicas=8

Each replica runs ``create_app``'s lifespan, so it loads its own Cloakers and is healthy only
once they are loaded. ``build`` is a Ray Serve application builder (``serve run``,
``serve deploy`` configs). Needs the ``[ray]`` extra.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping

from ..errors import ConfigError
from .config import ServeConfig

__all__ = ["deployment", "build", "run"]


def deployment(config: ServeConfig, *, replicas: int = 1, max_replicas: int | None = None,
               gpus_per_replica: float = 0.0):
    """A Ray Serve ``Deployment`` of the app; ``max_replicas`` > ``replicas`` turns on
    autoscaling between them (target: 2 requests in flight per worker)."""
    from ray import serve

    from .app import create_app

    if replicas < 1 or (max_replicas is not None and max_replicas < replicas):
        raise ConfigError(f"replicas={replicas}, max_replicas={max_replicas}",
                          hint="replicas >= 1 and max_replicas >= replicas")
    app = create_app(replace(config, load_in_background=False))
    scaling: dict[str, Any] = {"num_replicas": replicas}
    if max_replicas and max_replicas > replicas:
        scaling = {"autoscaling_config": {"min_replicas": replicas, "max_replicas": max_replicas,
                                          "target_ongoing_requests": 2 * config.workers}}

    @serve.deployment(
        name="nullswap",
        ray_actor_options={"num_cpus": config.workers, "num_gpus": gpus_per_replica},
        # A little above the app's own limit, so excess requests reach it and get its JSON 429
        # rather than waiting in Serve's queue.
        max_ongoing_requests=config.workers + config.max_queue + 4,
        graceful_shutdown_timeout_s=config.timeout_s + 1,
        **scaling)
    @serve.ingress(app)
    class NullSwapService:
        """One replica: the FastAPI app with its own Cloakers (loaded in the app's lifespan)."""

    return NullSwapService


def build(args: Mapping[str, str]):
    """Application builder for ``serve run nullswap_sdk.serve.ray_serve:build key=value ...``.

    Keys: the ``ServeConfig`` fields (workers, max_queue, max_upload_bytes, max_pixels,
    timeout_s, max_reference_photos, model, level, min_face_size, device) plus replicas, max_replicas, gpus_per_replica.
    The API key comes from ``NULLSWAP_API_KEY`` in the replicas' environment.
    """
    import dataclasses

    kinds = {f.name: f.type for f in dataclasses.fields(ServeConfig)}
    args = dict(args)
    layout = {k: args.pop(k) for k in ("replicas", "max_replicas", "gpus_per_replica") if k in args}
    settable = sorted(set(kinds) - {"api_key", "overrides", "load_in_background"})
    unknown = sorted(set(args) - set(settable))
    if unknown:
        raise ConfigError(f"unknown setting(s) {unknown}",
                          hint=f"known: {settable} and replicas, max_replicas, gpus_per_replica")
    fields: dict[str, Any] = {}
    for k, v in args.items():
        t = str(kinds[k])  # annotations are strings here: "int", "float | None", "str | None"
        try:
            fields[k] = int(v) if t.startswith("int") else float(v) if "float" in t else str(v)
        except ValueError:
            raise ConfigError(f"{k}={v!r} is not a valid {t}") from None
    config = ServeConfig(api_key=ServeConfig.api_key_from_env(), **fields)
    return deployment(config, replicas=int(layout.get("replicas", 1)),
                      max_replicas=int(layout["max_replicas"]) if "max_replicas" in layout else None,
                      gpus_per_replica=float(layout.get("gpus_per_replica", 0))).bind()


def run(config: ServeConfig, *, address: str | None = "local", host: str = "127.0.0.1", port: int = 8000,
        replicas: int = 1, max_replicas: int | None = None, gpus_per_replica: float = 0.0) -> None:
    """Deploy on Ray Serve and block until interrupted (Ctrl-C / SIGTERM shut Serve down)."""
    from ray import serve

    from ..distributed.run import _ray, connect

    started = connect(address)
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(deployment(config, replicas=replicas, max_replicas=max_replicas,
                             gpus_per_replica=gpus_per_replica).bind(),
                  name="nullswap", route_prefix="/", blocking=True)
    finally:
        serve.shutdown()
        if started:
            _ray().shutdown()

"""Prometheus metrics of one service process, in a registry of its own (``GET /metrics``)."""
from __future__ import annotations

__all__ = ["Metrics", "ROUTES"]

ROUTES = ("/v1/cloak", "/healthz", "/readyz", "/metrics")  # anything else is labelled "other"


class Metrics:
    def __init__(self, engine) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry()
        self.requests = Counter("nullswap_http_requests", "HTTP requests by route and status code",
                                ["route", "status"], registry=r)
        self.latency = Histogram("nullswap_http_request_duration_seconds", "Time to answer, by route",
                                 ["route"], registry=r,
                                 buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.images = Counter("nullswap_images_cloaked", "Images cloaked and returned", registry=r)
        self.faces = Counter("nullswap_faces_cloaked", "Faces cloaked", registry=r)
        Gauge("nullswap_requests_admitted", "Cloak requests running or queued", registry=r) \
            .set_function(lambda: engine.admitted)
        Gauge("nullswap_ready", "1 when the model is loaded and the service accepts work", registry=r) \
            .set_function(lambda: float(engine.ready))

    def observe(self, path: str, status: int, seconds: float) -> None:
        route = path if path in ROUTES else "other"
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST

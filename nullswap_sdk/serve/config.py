"""``ServeConfig``: the service's limits and model, explicit and validated."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..errors import ConfigError

__all__ = ["ServeConfig", "API_KEY_ENV"]

API_KEY_ENV = "NULLSWAP_API_KEY"  # read from the environment, never from the command line


@dataclass(frozen=True)
class ServeConfig:
    """Limits, back-pressure and the model of one service process (one Ray Serve replica).

    ``workers`` requests are cloaked at once (one ``Cloaker`` each); up to ``max_queue``
    more wait; beyond that a request gets 429 at once. A request that is not answered within
    ``timeout_s`` (upload, queue and work together) gets 503. ``api_key``: when set,
    ``/v1/*`` needs ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``.
    """

    model: str | None = None  # None: the shipped default (nullswap-net)
    # A protection level served by default (nullswap_sdk.levels): "max" runs per-image PGD,
    # which takes identity references (POST /v1/reference) and seconds per face.
    level: str | None = None
    min_face_size: float | None = None  # None: the detector's default
    overrides: Mapping[str, Any] = field(default_factory=dict)
    device: str | None = None  # None: a CUDA GPU when torch sees one
    workers: int = 1  # concurrent cloaks (Cloakers) in this process
    max_queue: int = 32  # requests allowed to wait for a worker; more get 429
    max_upload_bytes: int = 25 * 2**20  # larger bodies get 413
    max_pixels: int = 50_000_000  # decompression-bomb guard: larger images get 413
    timeout_s: float = 30.0  # per request; 503 past it
    max_reference_photos: int = 5  # photos per POST /v1/reference (2-5 are enough)
    default_quality: int = 95  # JPEG/WebP quality when the request names none
    api_key: str | None = None
    load_in_background: bool = True  # serve /healthz while the model loads (/readyz says when)

    def __post_init__(self) -> None:
        checks = {"workers": self.workers >= 1, "max_queue": self.max_queue >= 0,
                  "max_upload_bytes": self.max_upload_bytes >= 1, "max_pixels": self.max_pixels >= 1,
                  "timeout_s": self.timeout_s > 0, "default_quality": 1 <= self.default_quality <= 100,
                  "max_reference_photos": self.max_reference_photos >= 1}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(f"invalid service setting(s): " + ", ".join(f"{k}={getattr(self, k)!r}" for k in bad),
                              hint="workers >= 1, max_queue >= 0, sizes, timeout and reference photos > 0, "
                                   "quality 1..100")
        if self.level is not None:
            from ..levels import get_level

            lv = get_level(self.level)  # ConfigError naming the levels
            if lv.model is not None and self.model not in (None, lv.model):
                raise ConfigError(f"level {self.level!r} runs model {lv.model!r}; got model {self.model!r} too",
                                  hint="drop --model, or pick a level of the default network")
        if self.api_key is not None and len(self.api_key) < 16:
            raise ConfigError("the API key is shorter than 16 characters",
                              hint="generate one, e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))'")

    @classmethod
    def api_key_from_env(cls) -> str | None:
        return os.environ.get(API_KEY_ENV) or None

"""HTTP status and ``{"error", "hint"}`` body for every error the service answers with."""
from __future__ import annotations

from ..errors import (
    ConfigError,
    ImageDecodeError,
    ImageTooLargeError,
    InputError,
    NullSwapError,
    UnsupportedImageError,
)

__all__ = ["ServiceError", "BadRequestError", "PayloadTooLargeError", "UnsupportedMediaTypeError", "UnauthorizedError",
           "OverloadedError", "NotReadyError", "RequestTimeoutError", "status_of", "error_body"]


class ServiceError(NullSwapError):
    """An HTTP-level refusal; ``status`` is its response code."""

    status = 400


class BadRequestError(ServiceError):
    """A malformed request body (e.g. a multipart form without its image part)."""

    status = 400
    default_hint = "check the request body against the route's description (README 'HTTP service')"


class PayloadTooLargeError(ServiceError):
    status = 413
    default_hint = "send a smaller file (downscale or recompress it)"


class UnsupportedMediaTypeError(ServiceError):
    status = 415
    default_hint = ("send the raw image bytes with Content-Type: image/jpeg (or image/png, image/webp, ...), "
                    "or a multipart/form-data body (curl -F image=@photo.jpg)")


class UnauthorizedError(ServiceError):
    status = 401
    default_hint = "send the key as 'Authorization: Bearer KEY' or 'X-API-Key: KEY'"


class OverloadedError(ServiceError):
    status = 429
    default_hint = "too many requests in flight; retry after the Retry-After seconds, or add replicas"


class NotReadyError(ServiceError):
    status = 503
    default_hint = "the model is loading or the service is shutting down; retry shortly (GET /readyz)"


class RequestTimeoutError(ServiceError):
    status = 503
    default_hint = "the service is busy or the image is very large; retry later or send a smaller image"


def status_of(e: NullSwapError) -> int:
    if isinstance(e, ServiceError):
        return e.status
    if isinstance(e, ImageTooLargeError):
        return 413
    if isinstance(e, UnsupportedImageError):
        return 422  # decodable but not cloakable as one photo (e.g. animated)
    if isinstance(e, ConfigError):
        return 422
    if isinstance(e, (ImageDecodeError, InputError)):
        return 400
    return 500  # a model/backend failure on our side; the body still carries no trace


def error_body(e: NullSwapError) -> dict:
    return {"error": e.message, "hint": e.hint}

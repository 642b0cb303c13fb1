"""The FastAPI app: ``POST /v1/cloak``, ``POST /v1/reference``, ``GET /healthz``, ``GET /readyz``, ``GET /metrics``.

Every refusal is JSON ``{"error": ..., "hint": ...}`` with a 4xx status (429/503 for
back-pressure); an unexpected failure is a 500 with the same shape and no trace (the trace
goes to the server log).
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from contextlib import asynccontextmanager
from typing import Literal

# This module is the service itself: importing it needs the [serve] extra (the package
# ``nullswap_sdk.serve`` imports it only when an app is built).
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from ..errors import ConfigError, NullSwapError
from ..levels import get_level
from .config import ServeConfig
from .errors import (
    BadRequestError,
    PayloadTooLargeError,
    RequestTimeoutError,
    UnauthorizedError,
    UnsupportedMediaTypeError,
    error_body,
    status_of,
)
from .forms import MULTIPART, file_parts

__all__ = ["create_app"]

log = logging.getLogger("nullswap.serve")

_QUERY_HINT = "level low|mid|high (max on a --level max service) or strength 0..4 (not both), format jpeg|png|webp|tiff|bmp (default: the upload's), quality 1..100"
_ROUTES_HINT = "POST /v1/cloak (raw image bytes, or multipart: image [+ reference]), POST /v1/reference (multipart: photo parts), GET /healthz, GET /readyz, GET /metrics"


def create_app(config: ServeConfig | None = None):
    """A FastAPI app serving ``config`` (models load in the app's lifespan, per process)."""
    from .. import __version__

    config = config or ServeConfig()

    def refuse(e: NullSwapError) -> JSONResponse:
        status = status_of(e)
        headers = {"Retry-After": "1"} if status in (429, 503) else None
        if status == 401:
            headers = {"WWW-Authenticate": "Bearer"}
        return JSONResponse(error_body(e), status_code=status, headers=headers)

    @asynccontextmanager
    async def lifespan(app):
        from .engine import CloakEngine
        from .metrics import Metrics

        engine = CloakEngine(config)
        app.state.engine, app.state.metrics = engine, Metrics(engine)
        if config.load_in_background:
            loading = asyncio.get_running_loop().run_in_executor(None, engine.load_or_record)
        else:  # Ray Serve: the replica is only healthy once the model is loaded
            await asyncio.to_thread(engine.load)
            loading = None
        yield
        engine.closing = True
        if loading is not None:
            await loading
        await asyncio.to_thread(engine.close)
        log.info("shut down")

    app = FastAPI(title="NullSwap cloaking service", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None)

    @app.middleware("http")
    async def observe(request: Request, call_next):
        t0 = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception as e:  # noqa: BLE001  never a trace to the client
            log.exception("unexpected %s on %s", type(e).__name__, request.url.path)
            response = JSONResponse({"error": f"internal error ({type(e).__name__})",
                                     "hint": "retry; if it persists, report it with the server log"},
                                    status_code=500)
        metrics = getattr(request.app.state, "metrics", None)
        if metrics is not None:
            metrics.observe(request.url.path, response.status_code, time.perf_counter() - t0)
        return response

    @app.exception_handler(NullSwapError)
    async def on_nullswap_error(request: Request, e: NullSwapError):
        return refuse(e)

    @app.exception_handler(RequestValidationError)
    async def on_bad_query(request: Request, e: RequestValidationError):
        what = "; ".join(f"{'.'.join(str(p) for p in err.get('loc', ())[1:]) or 'request'}: {err.get('msg')}"
                         for err in e.errors())
        return JSONResponse({"error": f"invalid request: {what}", "hint": _QUERY_HINT}, status_code=422)

    @app.exception_handler(HTTPException)
    async def on_http_error(request: Request, e: HTTPException):
        hint = _ROUTES_HINT if e.status_code in (404, 405) else "check the request"
        return JSONResponse({"error": str(e.detail), "hint": hint}, status_code=e.status_code,
                            headers=getattr(e, "headers", None))

    @app.get("/healthz")
    async def healthz():
        """The process is alive (the model may still be loading: see /readyz)."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(request: Request):
        engine = request.app.state.engine
        if engine.ready:
            return {"status": "ready", **engine.description}
        why = (f"the model failed to load: {engine.error}" if engine.error else
               "shutting down" if engine.closing else "the model is loading")
        return JSONResponse({"error": f"not ready: {why}",
                             "hint": "check the server log" if engine.error else "retry shortly"},
                            status_code=503, headers={"Retry-After": "1"})

    @app.get("/metrics")
    async def metrics(request: Request):
        body, content_type = request.app.state.metrics.render()
        return Response(body, media_type=content_type)

    @app.post("/v1/cloak", responses={200: {"content": {"image/jpeg": {}, "image/png": {}}}})
    async def cloak(request: Request,
                    strength: float | None = Query(None, ge=0, le=4, description="perturbation scale (1.0)"),
                    level: Literal["low", "mid", "high", "max"] | None = Query(
                        None, description="protection level (README 'Protection levels'): low|mid|high on a "
                                          "network service, max on one started with --level max"),
                    format: Literal["jpeg", "jpg", "png", "webp", "tiff", "bmp"] | None = Query(
                        None, description="output format (default: the upload's; GIF becomes PNG)"),
                    quality: int | None = Query(None, ge=1, le=100, description="JPEG/WebP quality")):
        """The image in, the cloaked image out in the same format: raw image bytes
        (Content-Type image/*), or multipart/form-data with a file part ``image`` and, for a
        per-image model (``--level max``), an optional ``reference`` (.npz from
        ``POST /v1/reference`` or ``nullswap reference``) of the person in the photo.

        Headers: ``X-NullSwap-Faces`` (count) and ``X-NullSwap-Report`` (JSON list: box,
        score, strength, L∞, PSNR and whether the reference matched, per face). EXIF/GPS/XMP
        are stripped. Neither the image nor the reference is kept or logged.
        """
        from .engine import OUTPUT_FORMATS

        deadline = time.monotonic() + config.timeout_s
        _check_key(request, config.api_key)
        if level is not None:
            if strength is not None:
                raise ConfigError("both level and strength given", hint=_QUERY_HINT)
            strength = _level_strength(config, level)
        media, data = await _read_upload(request, config, deadline)
        reference = None
        if media == MULTIPART:
            parts = await file_parts(data, request.headers, {"image": 1, "reference": 1})
            if "image" not in parts:
                raise BadRequestError("the multipart body has no 'image' part",
                                      hint="curl -F image=@photo.jpg [-F reference=@me.npz] URL")
            data, reference = parts["image"][0], (parts.get("reference") or [None])[0]
        engine = request.app.state.engine
        result = await engine.cloak(data, strength=strength, fmt=OUTPUT_FORMATS[format] if format else None,
                                    quality=quality or config.default_quality, deadline=deadline,
                                    reference=reference)
        request.app.state.metrics.images.inc()
        request.app.state.metrics.faces.inc(len(result.faces))
        report = [{"box": [round(v, 1) for v in f.box], "score": round(f.score, 3), "strength": f.strength,
                   "linf": round(f.linf, 2), "psnr_crop": round(f.psnr_crop, 2), "reference": f.reference}
                  for f in result.faces]
        return Response(result.body, media_type=result.media_type, headers={
            "X-NullSwap-Faces": str(len(result.faces)),
            "X-NullSwap-Report": json.dumps(report, separators=(",", ":")),
            "Cache-Control": "no-store"})

    @app.post("/v1/reference", responses={200: {"content": {"application/octet-stream": {}}}})
    async def reference(request: Request):
        """An identity reference for ``POST /v1/cloak`` from other photos of the person:
        multipart/form-data with 1 to ``max_reference_photos`` file parts ``photo`` (2-5
        photos not being published; one measured no gain). Returns the .npz (embeddings
        only, no pixels; the same file as ``nullswap reference``); ``X-NullSwap-Photos``
        says how many photos gave a face. Only on a per-image model (``--level max``)."""
        deadline = time.monotonic() + config.timeout_s
        _check_key(request, config.api_key)
        _, data = await _read_upload(request, config, deadline, multipart_only=True)
        photos = (await file_parts(data, request.headers, {"photo": config.max_reference_photos})).get("photo")
        if not photos:
            raise BadRequestError("the multipart body has no 'photo' part",
                                  hint="curl -F photo=@me_1.jpg -F photo=@me_2.jpg URL -o me.npz")
        body, used = await request.app.state.engine.reference(photos, deadline=deadline)
        return Response(body, media_type="application/octet-stream", headers={
            "Content-Disposition": 'attachment; filename="reference.npz"',
            "X-NullSwap-Photos": str(used), "Cache-Control": "no-store"})

    return app


def _check_key(request, key: str | None) -> None:
    if key is None:
        return
    given = request.headers.get("x-api-key") or ""
    auth = request.headers.get("authorization", "")
    if not given and auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    # Constant time: the comparison takes as long whatever prefix of the key was guessed.
    if not hmac.compare_digest(given.encode(), key.encode()):
        raise UnauthorizedError("missing or wrong API key")


def _level_strength(config: ServeConfig, name: str) -> float:
    """The strength of level ``name`` if this service runs that level's model, else 422."""
    lv = get_level(name)
    served = get_level(config.level).model if config.level else None
    if lv.model != served:
        runs = f"level {config.level!r}" if served else f"model {config.model!r}" if config.model else "the network"
        raise ConfigError(f"level {name!r} runs {lv.model or 'the network'}; this service runs {runs}",
                          hint="levels low|mid|high need a network service (the default); level max one "
                               "started with `nullswap serve --level max`")
    return lv.strength


async def _read_upload(request, config: ServeConfig, deadline: float, multipart_only: bool = False):
    """(media type, body bytes): the Content-Type checked, the body read under the size limit
    and the deadline."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != MULTIPART and (multipart_only or not media.startswith("image/")):
        raise UnsupportedMediaTypeError(
            f"Content-Type {media or '(none)'!r} is not {'multipart/form-data' if multipart_only else 'an image type'}",
            hint="send the photos as multipart/form-data (curl -F photo=@me_1.jpg -F photo=@me_2.jpg)"
            if multipart_only else None)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > config.max_upload_bytes:
        raise PayloadTooLargeError(f"upload of {int(declared):,} bytes is over the "
                                   f"{config.max_upload_bytes:,}-byte limit")
    try:
        data = await asyncio.wait_for(_read_body(request, config.max_upload_bytes),
                                      max(0.0, deadline - time.monotonic()))
    except asyncio.TimeoutError:
        raise RequestTimeoutError(f"the upload did not arrive within {config.timeout_s:g} s",
                                  hint="send the whole file at once, or a smaller file") from None
    return media, data


async def _read_body(request, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"upload is over the {limit:,}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)

"""``CloakEngine``: a fixed set of ``Cloaker`` workers behind a bounded queue.

Admission control lives on the event loop: at most ``workers`` requests run and
``max_queue`` wait; the next one is refused at once (``OverloadedError`` → 429) instead of
piling up. Work runs in threads (decode, detect, ONNX Runtime, paste and encode release the
GIL for their heavy parts). A request past its deadline gets ``RequestTimeoutError`` (503);
if it had not started yet its work is dropped, else its worker slot stays taken until the
work ends, so admission never over-commits the CPUs.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..errors import ConfigError
from .config import ServeConfig
from .errors import NotReadyError, OverloadedError, RequestTimeoutError

__all__ = ["CloakEngine", "CloakResult", "OUTPUT_FORMATS", "MEDIA_TYPES"]

log = logging.getLogger("nullswap.serve")

OUTPUT_FORMATS = {"jpeg": "JPEG", "jpg": "JPEG", "png": "PNG", "webp": "WEBP", "tiff": "TIFF", "bmp": "BMP"}
MEDIA_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "TIFF": "image/tiff",
               "BMP": "image/bmp"}


@dataclass(frozen=True)
class CloakResult:
    body: bytes  # the encoded cloaked image
    format: str  # PIL format name of ``body``
    faces: list  # FaceResult per cloaked face
    size: tuple[int, int]  # (width, height)

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.format]


class CloakEngine:
    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.error: str | None = None  # why loading failed
        self.closing = False
        self._ready = threading.Event()
        self._cloakers: queue.SimpleQueue | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._admitted = 0  # running + waiting; touched on the event loop only
        self.description: dict = {}

    # -- life cycle -------------------------------------------------------------------------
    def load(self) -> None:
        """Build ``workers`` Cloakers (blocking; raises on a bad model)."""
        import torch

        from ..cloaker import Cloaker

        torch.set_num_threads(1)  # one core per worker; more threads only contend
        c = self.config
        cloakers = queue.SimpleQueue()
        for _ in range(c.workers):
            cloakers.put(Cloaker.from_pretrained(c.model, device=c.device, level=c.level,
                                                 min_face_size=c.min_face_size, **dict(c.overrides)))
        first = cloakers.get()
        self.description = {"model": first.method.name, "cloaker": repr(first), "workers": c.workers,
                            "level": c.level, "references": callable(getattr(first.method, "embed_reference", None))}
        cloakers.put(first)
        self._cloakers = cloakers
        self._executor = ThreadPoolExecutor(max_workers=c.workers, thread_name_prefix="nullswap-cloak")
        self._ready.set()
        log.info("ready: %s", self.description)

    def load_or_record(self) -> None:
        """``load`` for a background thread: a failure is kept for ``/readyz``, not raised."""
        try:
            self.load()
        except Exception as e:  # noqa: BLE001  reported by /readyz and the log
            self.error = f"{type(e).__name__}: {e}"
            log.error("the model failed to load: %s", self.error)

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and not self.closing

    @property
    def admitted(self) -> int:
        return self._admitted

    def close(self) -> None:
        """Finish running work, then release the models."""
        self.closing = True
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
        while self._cloakers is not None and not self._cloakers.empty():
            self._cloakers.get().close()

    # -- requests ---------------------------------------------------------------------------
    async def cloak(self, data: bytes, *, strength: float | None, fmt: str | None, quality: int,
                    deadline: float, reference: bytes | None = None) -> CloakResult:
        """Cloak encoded image ``data``; ``deadline`` is a ``time.monotonic()`` value;
        ``reference``: a saved identity reference (.npz bytes) for per-image models."""
        return await self._submit(self._work, deadline, data, strength, fmt, quality, reference)

    async def reference(self, photos: list[bytes], *, deadline: float) -> tuple[bytes, int]:
        """An identity reference (.npz bytes) from encoded ``photos`` of one person, and how
        many of them gave a face."""
        return await self._submit(self._reference, deadline, photos)

    async def _submit(self, work, deadline: float, *args):
        """Run ``work(*args, deadline)`` on a worker under admission control and ``deadline``."""
        if not self.ready:
            raise NotReadyError("the model failed to load" if self.error else
                                "shutting down" if self.closing else "the model is still loading")
        limit = self.config.workers + self.config.max_queue
        if self._admitted >= limit:
            raise OverloadedError(f"{self._admitted} requests in flight (limit {limit})")
        self._admitted += 1
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self._executor, work, *args, deadline)
        fut.add_done_callback(self._release)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            raise RequestTimeoutError(f"not answered within {self.config.timeout_s:g} s") from None

    def _release(self, fut) -> None:
        self._admitted -= 1
        if not fut.cancelled() and fut.exception() is not None:
            fut.exception()  # retrieved: no "exception was never retrieved" noise after a timeout

    def _work(self, data: bytes, strength, fmt, quality, reference, deadline) -> CloakResult:
        from ..cloakers.reference import IdentityReference
        from ..imageio import encode_image, load_image

        if time.monotonic() > deadline:  # its client was already answered 503
            raise RequestTimeoutError("dropped: waited past its deadline")
        img = load_image(data, max_pixels=self.config.max_pixels, name="the upload")
        out_fmt = fmt or (img.format if img.format in MEDIA_TYPES else "PNG")  # GIF, PPM, ... → PNG
        if out_fmt not in MEDIA_TYPES:
            raise ConfigError(f"unknown output format {fmt!r}", hint=f"one of {sorted(OUTPUT_FORMATS)}")
        ref = None if reference is None else IdentityReference.from_bytes(reference, name="the 'reference' part")
        cloaker = self._cloakers.get()
        try:
            # ConfigError (422) for a reference the model cannot use (the network, other surrogates)
            out, faces = cloaker.cloak(img.rgb, return_faces=True, strength=strength, reference=ref)
        finally:
            self._cloakers.put(cloaker)
        # Metadata policy: EXIF (GPS), XMP and comments are never written back; the ICC
        # colour profile is kept (colours, not personal data).
        body = encode_image(out, out_fmt, quality=quality, alpha=img.alpha, icc_profile=img.icc_profile)
        return CloakResult(body=body, format=out_fmt, faces=faces, size=(out.shape[1], out.shape[0]))

    def _reference(self, photos: list[bytes], deadline) -> tuple[bytes, int]:
        from ..imageio import load_image

        if time.monotonic() > deadline:
            raise RequestTimeoutError("dropped: waited past its deadline")
        rgbs = [load_image(p, max_pixels=self.config.max_pixels, name=f"reference photo #{i + 1}").rgb
                for i, p in enumerate(photos)]
        cloaker = self._cloakers.get()
        try:
            ref = cloaker.reference(rgbs)  # ConfigError for the network, NoFaceError when no photo has a face
        finally:
            self._cloakers.put(cloaker)
        return ref.to_bytes(), ref.photos

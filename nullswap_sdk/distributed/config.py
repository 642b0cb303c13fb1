"""``BatchConfig``: everything a Ray batch job needs to know, explicit and validated."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

from ..cloak_file import WriteOptions
from ..errors import ConfigError

__all__ = ["BatchConfig", "EXISTING_POLICIES"]

EXISTING_POLICIES = ("skip", "error", "overwrite")


@dataclass(frozen=True)
class BatchConfig:
    """How a batch is cloaked, written and spread over the cluster.

    The model fields are those of ``Cloaker.from_pretrained``; each worker builds one
    ``Cloaker`` from them, once. ``existing`` says what happens to outputs that already exist
    when the job starts: ``"skip"`` (default: a rerun resumes an interrupted job), ``"error"``
    (reported as failed, like ``nullswap cloak`` without ``--overwrite``) or ``"overwrite"``.
    """

    model: str | None = None  # None: the shipped default (nullswap-net)
    strength: float | None = None  # None: 1.0
    min_face_size: float | None = None  # None: the detector's default (48 px)
    overrides: Mapping[str, Any] = field(default_factory=dict)  # method config, e.g. {"threads": 1}
    quality: int = 95  # JPEG/WebP quality of the outputs
    keep_metadata: bool = False  # keep EXIF (GPS included); off: EXIF/XMP/comments stripped
    existing: Literal["skip", "error", "overwrite"] = "skip"
    workers: int | None = None  # actors; None: one per cluster CPU, or workers_per_gpu per GPU
    workers_per_gpu: int = 4  # actors sharing one GPU (each asks for 1/workers_per_gpu of it)
    cpus_per_worker: float = 1.0  # decode, detect, paste and encode run on the CPU
    batch_size: int = 16  # images per map_batches call: a crashed call redoes at most this many
    max_retries: int = 3  # Ray restarts of a dead worker, and retries of the call it was running

    def __post_init__(self) -> None:
        if self.existing not in EXISTING_POLICIES:
            raise ConfigError(f"existing must be one of {EXISTING_POLICIES}, got {self.existing!r}")
        if not 1 <= int(self.quality) <= 100:
            raise ConfigError(f"quality must be 1..100, got {self.quality}", hint="95 is the default")
        for name in ("workers", "workers_per_gpu", "batch_size"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        if self.cpus_per_worker <= 0 or self.max_retries < 0:
            raise ConfigError("cpus_per_worker must be > 0 and max_retries >= 0",
                              hint=f"got {self.cpus_per_worker} and {self.max_retries}")

    @property
    def write(self) -> WriteOptions:
        return WriteOptions(quality=self.quality, keep_metadata=self.keep_metadata,
                            overwrite=self.existing == "overwrite")

    def build_cloaker(self, device: str | None = None):
        """The worker's ``Cloaker`` (its CPU threads are the caller's business)."""
        from ..cloaker import Cloaker

        cloaker = Cloaker.from_pretrained(self.model, device=device, min_face_size=self.min_face_size,
                                          **dict(self.overrides))
        if self.strength is not None:
            cloaker.strength = self.strength
        return cloaker

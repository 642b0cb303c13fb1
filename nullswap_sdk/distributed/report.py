"""What a batch job did, one ``ImageOutcome`` per input image."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["ImageOutcome", "BatchReport"]

Status = Literal["written", "noface", "failed", "skipped"]


@dataclass(frozen=True)
class ImageOutcome:
    src: str  # the input as the caller named it (path or URI)
    dst: str
    status: Status  # written (faces cloaked), noface (written unchanged), failed, skipped (existed)
    faces: int = 0
    error: str = ""  # one line with the hint, for failed images


@dataclass
class BatchReport:
    """Outcomes in input order, plus timing. ``ok`` is False when any image failed."""

    outcomes: list[ImageOutcome] = field(default_factory=list)
    seconds: float = 0.0
    workers: int = 0

    def count(self, *status: Status) -> int:
        return sum(o.status in status for o in self.outcomes)

    @property
    def faces(self) -> int:
        return sum(o.faces for o in self.outcomes)

    @property
    def failures(self) -> list[ImageOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        n = len(self.outcomes) - self.count("skipped")
        return (f"{self.count('written', 'noface')}/{n} image(s) written, {self.faces} face(s) cloaked, "
                f"{self.count('noface')} without faces, {len(self.failures)} failed, "
                f"{self.count('skipped')} skipped")

"""Cloak one image file into another: the unit of work that ``nullswap cloak`` and the Ray
batch workers (``nullswap_sdk.distributed``) share, so both write the same bytes."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import NullSwapError, OutputExistsError

__all__ = ["WriteOptions", "check_output", "cloak_file", "failure_message"]


@dataclass(frozen=True)
class WriteOptions:
    """How outputs are written. Only what is listed here reaches the file: EXIF (GPS included)
    only with ``keep_metadata``; XMP and comments never; the ICC colour profile always."""

    quality: int = 95  # JPEG/WebP quality (1..100); JPEG at >= 90 uses 4:4:4 chroma
    keep_metadata: bool = False
    overwrite: bool = False  # replace existing outputs (atomically)


def check_output(dst: Path, opts: WriteOptions) -> None:
    """Raise ``OutputExistsError`` when ``dst`` exists and may not be replaced (checked before
    the work, so a summary only counts faces that were written)."""
    if not opts.overwrite and dst.exists():
        raise OutputExistsError(f"{dst} already exists", hint="choose another -o, or pass --overwrite")


def cloak_file(cloaker, src: Path | str, dst: Path, opts: WriteOptions, *, data: bytes | None = None,
               reference=None) -> list:
    """Decode ``src`` (or ``data``, its bytes read elsewhere, e.g. from an object store: ``src``
    then only names it in errors), cloak every face, write ``dst``
    atomically in the format its suffix names; returns the ``FaceResult`` list. ``reference``:
    an ``IdentityReference`` for the cloak (``Cloaker.reference``).

    Raises the typed errors of ``load_image`` / ``save_image`` (messages name ``src``).
    A photo without faces is written unchanged (metadata policy applied).
    """
    from .imageio import load_image, save_image

    img = load_image(src if data is None else data, name=str(src))
    out, faces = cloaker.cloak(img.rgb, return_faces=True, reference=reference)
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_image(dst, out, format=None, quality=opts.quality, alpha=img.alpha,
               exif=img.exif if opts.keep_metadata else None, icc_profile=img.icc_profile,
               overwrite=opts.overwrite)
    return faces


def failure_message(e: BaseException) -> str:
    """One line for a failed image: the typed error with its hint, else the exception type."""
    return str(e) if isinstance(e, NullSwapError) else f"{type(e).__name__}: {e}"

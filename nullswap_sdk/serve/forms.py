"""multipart/form-data bodies: the file parts of a request, by name, with typed refusals.

The body is read (under the upload limit) before it is parsed, so the parser never sees more
than ``max_upload_bytes``; parts larger than a spool threshold go to temporary files, which
are closed here. Needs ``python-multipart`` (the [serve] extra).
"""
from __future__ import annotations

from typing import Mapping

from .errors import BadRequestError, ServiceError

__all__ = ["MULTIPART", "MultipartUnavailableError", "file_parts"]

MULTIPART = "multipart/form-data"


class MultipartUnavailableError(ServiceError):
    status = 501
    default_hint = ("the server lacks python-multipart: install it with pip install 'nullswap-sdk[serve]'; "
                    "raw image bytes (Content-Type image/*) still work")


async def file_parts(body: bytes, headers, fields: Mapping[str, int]) -> dict[str, list[bytes]]:
    """``{name: [bytes, ...]}`` for the file parts of ``body``; ``fields`` maps each accepted
    part name to the most copies allowed. Unknown names, text fields, too many copies and
    malformed bodies are ``BadRequestError`` (400) naming what was wrong."""
    try:
        import python_multipart  # noqa: F401  starlette's parser needs it; say so, not a 500 trace
    except ImportError:
        raise MultipartUnavailableError("this service cannot read multipart/form-data uploads") from None
    from starlette.formparsers import MultiPartException, MultiPartParser

    async def stream():
        yield body

    usage = ", ".join(f"{k} (at most {n})" for k, n in fields.items())
    try:
        form = await MultiPartParser(headers, stream(), max_files=sum(fields.values()),
                                    max_fields=sum(fields.values())).parse()
    except MultiPartException as e:  # bad boundary, too many parts, ...
        raise BadRequestError(f"malformed multipart body: {e}", hint=f"file parts: {usage}") from None
    try:
        out: dict[str, list[bytes]] = {}
        for name, value in form.multi_items():
            if name not in fields:
                raise BadRequestError(f"unknown form part {name!r}", hint=f"file parts: {usage}")
            if isinstance(value, str):
                raise BadRequestError(f"form part {name!r} is a text field, not a file",
                                      hint=f"send it as a file, e.g. curl -F {name}=@FILE")
            out.setdefault(name, []).append(await value.read())
            if len(out[name]) > fields[name]:
                raise BadRequestError(f"more than {fields[name]} {name!r} part(s)", hint=f"file parts: {usage}")
        return out
    finally:
        await form.close()

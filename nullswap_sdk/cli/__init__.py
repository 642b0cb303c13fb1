"""``nullswap`` command line: one module per command (cloak, video, eval, info, export),
shared helpers in ``_common``, parser and dispatch in ``_main``."""
from ._main import main

__all__ = ["main"]

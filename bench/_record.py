"""Shared ending of the standalone bench scripts: print the JSON record, optionally save it."""
from __future__ import annotations

import json
import os
from pathlib import Path


def emit(rec: dict, out: str | None) -> None:
    """Add the load average after the run unless the script took it (these boxes are shared),
    print, write ``out``."""
    rec.setdefault("load_after", os.getloadavg())
    text = json.dumps(rec, indent=2)
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")

"""Render an evaluation report (from ``protocol.evaluate``) as JSON and Markdown."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

__all__ = ["to_json", "to_markdown", "write_report"]


def to_json(report: dict) -> str:
    return json.dumps(report, indent=2, sort_keys=True, allow_nan=True) + "\n"


def _f(x, nd=3) -> str:
    return "—" if x is None or x != x else f"{x:.{nd}f}"


def to_markdown(report: dict, title: str = "Protection report") -> str:
    m, q, c = report["method"], report["quality"], report["counts"]
    lines = [f"### {title}", "", f"Method: `{m.get('method')}`; probes evaluated {c['evaluated']}/{c['probes']}, "
             f"gallery {c['gallery']} identities.", ""]
    if q:
        lines += [
            "| PSNR (dB) | SSIM | PSNR face | SSIM face | min PSNR face | s / face |",
            "|---|---|---|---|---|---|",
            f"| {_f(q.get('psnr'), 2)} | {_f(q.get('ssim'), 4)} | {_f(q.get('psnr_face'), 2)} | "
            f"{_f(q.get('ssim_face'), 4)} | {_f(q.get('psnr_face_min'), 2)} | "
            f"{_f(report['timing'].get('seconds_per_face_median'), 2)} |",
            "",
        ]
    recs = list(next(iter(report["identity"].values()))["recognisers"])
    head = "| transform | face found | " + " | ".join(f"{r} cos | {r} Top-1 (clean)" for r in recs) + " |"
    lines += [head, "|" + "---|" * (2 + 2 * len(recs))]
    for v, row in report["identity"].items():
        cells = []
        for r in recs:
            s = row["recognisers"][r]
            cells.append(f"{_f(s['cosine'])} | {_f(s['top1'])} ({_f(s['top1_clean'])})")
        lines.append(f"| {v} | {_f(row['face_redetected'], 2)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(report: dict, out_prefix: str | Path, title: str = "Protection report") -> tuple[Path, Path]:
    """Write ``<prefix>.json`` and ``<prefix>.md`` atomically."""
    prefix = Path(out_prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for suffix, text in ((".json", to_json(report)), (".md", to_markdown(report, title))):
        path = prefix.with_name(prefix.name + suffix)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=suffix)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
        paths.append(path)
    return paths[0], paths[1]

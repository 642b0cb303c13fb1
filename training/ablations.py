"""Compare training runs at equal steps from their validation logs.

    python -m training.ablations --step 250 baseline=runs/long_cpu dlw-mean=runs/abl_mean \
        no-eot=runs/abl_noeot [--copy-logs docs/results/ablations]

Prints a Markdown table of the validation record at ``--step`` of each run: crop cosine per
recogniser (lower = better), after JPEG q75, PSNR/SSIM. ``--copy-logs`` also copies each
run's config.json and metrics.jsonl next to the table, so the figures stay checkable after
runs/ (gitignored) is gone.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path


def val_record(run: Path, step: int) -> dict:
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("kind") == "val" and rec.get("step") == step:
            return rec
    raise SystemExit(f"{run}: no validation record at step {step} (is the run there yet?)")


def table(runs: dict[str, Path], step: int) -> str:
    recs = {name: val_record(path, step) for name, path in runs.items()}
    recognisers = [k[8:] for k in next(iter(recs.values())) if k.startswith("val_cos_") and not k.endswith("_jpeg75")]
    head = "| run | " + " | ".join(f"{r} (q75)" for r in recognisers) + " | PSNR | SSIM |"
    lines = [head, "|" + "---|" * (len(recognisers) + 3)]
    for name, rec in recs.items():
        cells = [f"{rec[f'val_cos_{r}']:.3f} ({rec[f'val_cos_{r}_jpeg75']:.3f})" for r in recognisers]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {rec['val_psnr']:.2f} | {rec['val_ssim']:.4f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.ablations", description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", metavar="NAME=RUN_DIR")
    ap.add_argument("--step", type=int, required=True)
    ap.add_argument("--copy-logs", help="folder to copy each run's config.json and metrics.jsonl into")
    args = ap.parse_args(argv)
    runs = {}
    for item in args.runs:
        name, sep, path = item.partition("=")
        if not sep:
            ap.error(f"expected NAME=RUN_DIR, got {item!r}")
        runs[name] = Path(path)
    print(table(runs, args.step))
    if args.copy_logs:
        dst = Path(args.copy_logs)
        dst.mkdir(parents=True, exist_ok=True)
        for name, run in runs.items():
            shutil.copyfile(run / "config.json", dst / f"{name}.config.json")
            shutil.copyfile(run / "metrics.jsonl", dst / f"{name}.metrics.jsonl")
    return 0


if __name__ == "__main__":
    sys.exit(main())

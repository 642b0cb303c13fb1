"""Print the comparison tables of docs/RESULTS.md from the JSON reports in docs/results/."""
from __future__ import annotations

import json
import sys
from pathlib import Path

RECS = ("sface", "facenet", "mobilefacenet", "faceres")


def main(names: list[str]) -> None:
    reps = {n: json.loads(Path(f"docs/results/{n}.json").read_text()) for n in names}
    print("| run | PSNR | SSIM | PSNR face | SSIM face | s / face |\n|---|---|---|---|---|---|")
    for n, r in reps.items():
        q, t = r["quality"], r["timing"]["seconds_per_face_median"]
        print(f"| {n} | {q['psnr']:.2f} | {q['ssim']:.4f} | {q['psnr_face']:.2f} | {q['ssim_face']:.4f} | {t:.2f} |")
    for variant in ("none", "jpeg75", "jpeg50", "resize0.5", "blur1"):
        print(f"\nAfter `{variant}` — identity cosine clean vs cloaked / Top-1 of cloaked (clean Top-1):\n")
        print("| run | " + " | ".join(RECS) + " |\n|---|" + "---|" * len(RECS))
        for n, r in reps.items():
            row = r["identity"][variant]["recognisers"]
            cells = [f"{row[k]['cosine']:.3f} / {row[k]['top1']:.2f} ({row[k]['top1_clean']:.2f})" for k in RECS if k in row]
            print(f"| {n} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])

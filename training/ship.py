"""Ship a trained network into the package: weights, manifest entry (sha256) and model card.

    python -m training.ship --run runs/long_cpu [--weights best.safetensors] [--name nullswap-net]

Writes ``nullswap_sdk/models/<file>.safetensors``, ``<file>.md`` (the model card, generated
from the run's config, logs and the weights' metadata) and updates ``manifest.json``.
Photo-protocol results (docs/RESULTS.md) are linked from the card, not copied: they are
measured after shipping, on the shipped file.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from datetime import date
from pathlib import Path

from nullswap_sdk.models import sha256_file
from nullswap_sdk.network.cloaker import load_network
from nullswap_sdk.network.model import count_flops, count_params

MODELS_DIR = Path(__file__).resolve().parents[1] / "nullswap_sdk" / "models"

CARD = """# Model card: {name} ({file})

The NullSwap cloaking network (Wang et al., ICCV 2025, arXiv 2503.18678) as built in
`nullswap_sdk/network/model.py`, trained by `training/` in this repository.

| | |
|---|---|
| sha256 | `{sha256}` |
| architecture | Identity Extraction → Perturbation Block (learnable adaptive noise) ∥ Feature Block → Cloaking Block (learnable γ fusion); deep branches at {q}×{q}, full-resolution tail |
| working crop | template `{template}` resized to {size}×{size}; perturbation upsampled to the 256-px crop and pasted back at native resolution |
| size | {params:,} parameters, {gflop:.3f} GFLOP per face, {kb} KB of weights |
| output bound | {bound}, crop PSNR ≥ {psnr_floor} dB (per-image cap), feathered mask |
| training steps | {step} (batch {batch}){history} |
| hardware | {hardware} |
| recognisers in the loss | {recognisers} (white-box), balanced by Dynamic Loss Weighting (α={alpha}, γ={gamma}/epoch, k={k}, mode `{dlw_mode}`) |
| never in the loss | {val_recognisers} (validation only) |
| robustness (EOT) | re-alignment jitter (±{shift_px} px, ±{rotate_deg}°, ±{scale_pct}% scale); with probability {p_degrade} a degraded copy: differentiable JPEG q{jpeg_lo}–{jpeg_hi} (p={p_jpeg} per step overall), resize ≥×{resize_min} + blur σ≤{blur} + noise σ≤{noise} (p={p_rbn} overall), colour ±{colour_pct}% |
| quality losses | MSE + SSIM + LSGAN PatchGAN discriminator (weight {w_adv}) |
| shipped on | {today} |

## Training data and its terms

- **LFW** (Labeled Faces in the Wild, deep-funneled): images of the *training* identities of
  the identity-disjoint split (`split_identities`, seed `{split_seed}`, {val_pct}% of identities
  held out for validation). Terms: research use; news photographs of public figures.
- **UTKFace** (6,000 aligned crops, no identity labels): non-commercial research only.

Because the training data carries non-commercial research terms, these weights are released
for **non-commercial research and evaluation**. A commercial deployment must retrain on data
licensed for it (`python -m training.train`, see training/README.md).

## Validation at step {step} (crop level)

{val_n} aligned crops of held-out validation identities, uint8-rounded, cosine between the
clean and cloaked crop's embeddings (lower = better protection); "after JPEG q75" re-encodes the
cloaked crop first. This is the training monitor, not the photo protocol.

| recogniser | role | cosine | after JPEG q75 |
|---|---|---|---|
{val_rows}

Crop PSNR {val_psnr:.1f} dB, SSIM {val_ssim:.4f}.

## Photo-level results

Measured on the shipped file through the full photo path (detect → align → cloak → paste →
save as JPEG q95 → re-detect → each recogniser's own alignment): see `docs/RESULTS.md`
(sections "Transfer lab" and "NullSwap network"; lab: `python -m training.lab`).
{photo}
## Limits

Protection is partial (see the numbers above and in docs/RESULTS.md): the network reduces,
but does not remove, the identity signal that recognisers read; it is strongest against the
recognisers in its loss and weaker against unseen ones. It is not a guarantee against every
face-swap model.
"""


def _lab_summary(path: Path) -> str:
    """One transfer-lab report (training/lab.py): face-box quality and the black-box rows."""
    rep = json.loads(path.read_text())
    q = rep["quality"]
    lines = [f"\nTransfer lab `{path.name}` ({rep['probes']} probes, {rep['gallery']}-identity gallery): face box "
             f"{q['psnr_face']:.2f} dB / SSIM {q['ssim_face']:.4f} / SSIM at 256 px {q['ssim_face256']:.4f}.\n",
             "| recogniser (never in the loss) | cosine | Top-1 (clean) | kept after JPEG q75 | kept after resize ×0.5 |",
             "|---|---|---|---|---|"]
    for r, b in rep["blackbox"].items():
        lines.append(f"| {r} | {b['cosine']:.3f} | {b['top1']:.2f} ({b['top1_clean']:.2f}) | "
                     f"{b['kept_jpeg75']['cos']} | {b['kept_resize0.5']['cos']} |")
    return "\n".join(lines) + "\n"


def _photo_summary(path: Path) -> str:
    """A Markdown table of one eval report: quality, then cosine / Top-1 (clean) per recogniser."""
    rep = json.loads(path.read_text())
    q = rep["quality"]
    lines = [f"\n`{path.name}`: PSNR {q['psnr']:.2f} dB / SSIM {q['ssim']:.4f} on the saved photos "
             f"(face box {q['psnr_face']:.2f} / {q['ssim_face']:.4f}).\n",
             "| transform | " + " | ".join(rep["identity"]["none"]["recognisers"]) + " |",
             "|---|" + "---|" * len(rep["identity"]["none"]["recognisers"])]
    for variant in ("none", "jpeg75"):
        recs = rep["identity"][variant]["recognisers"]
        lines.append(f"| {variant} | " + " | ".join(
            f"{r['cosine']:.3f} / {r['top1']:.2f} ({r['top1_clean']:.2f})" for r in recs.values()) + " |")
    return "\n".join(lines) + "\n\nCells: identity cosine clean vs cloaked / Top-1 of the cloaked probe (clean Top-1).\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.ship", description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True, help="run folder (config.json, metrics.jsonl, weights)")
    ap.add_argument("--weights", default="best.safetensors", help="file inside --run")
    ap.add_argument("--name", default="nullswap-net")
    ap.add_argument("--file", default="nullswap_net_v1", help="file stem inside nullswap_sdk/models")
    ap.add_argument("--hardware", default="2-core shared CPU, 1 thread (no GPU lent)")
    ap.add_argument("--photo-report", action="append", default=[], metavar="JSON",
                    help="an `nullswap eval` report of these weights to summarise in the card (repeatable)")
    ap.add_argument("--lab-report", action="append", default=[], metavar="JSON",
                    help="a `python -m training.lab` report of these weights to summarise in the card (repeatable)")
    ap.add_argument("--description", default="NullSwap feed-forward cloaking network (default)")
    args = ap.parse_args(argv)

    run = Path(args.run)
    src = run / args.weights
    cfg = json.loads((run / "config.json").read_text())
    model, meta = load_network(src)
    step = int(meta.get("step", 0))
    dst = MODELS_DIR / f"{args.file}.safetensors"
    shutil.copyfile(src, dst)
    sha = sha256_file(dst)

    photo = "".join(_photo_summary(Path(p)) for p in args.photo_report)
    photo += "".join(_lab_summary(Path(p)) for p in args.lab_report)
    history = ""
    if (run / "init.json").is_file():  # started from another network's weights (--init-from)
        init = json.loads((run / "init.json").read_text())
        adapted = f", {', '.join(init['adapted'])} adapted" if init["adapted"] else ""
        history = f"; started from `{Path(init['from']).name}` (`--init-from`: {init['copied']} tensors copied{adapted})"
    if (run / "fork.json").is_file():  # continued from another run under a changed config
        fork = json.loads((run / "fork.json").read_text())
        old = json.loads((Path(fork["from"]).parent / "config.json").read_text())
        changed = {k: v for k, v in old["network"].items() if cfg["network"].get(k) != v}
        history = (f"; steps 0–{fork['step']} in `{Path(fork['from']).parent.name}` with "
                   + ", ".join(f"{k}={v}" for k, v in changed.items())
                   + f", then forked (`--fork-from`) with the config below")
    recs = cfg["recognisers"] + cfg.get("val_recognisers", [])
    rows = []
    for r in recs:
        if f"val_cos_{r}" in meta:
            role = "white-box" if r in cfg["recognisers"] else "never in the loss"
            rows.append(f"| {r} | {role} | {float(meta[f'val_cos_{r}']):.3f} | {float(meta[f'val_cos_{r}_jpeg75']):.3f} |")
    net, eot, dlw, loss, data = cfg["network"], cfg["eot"], cfg["dlw"], cfg["loss"], cfg["data"]
    bound = f"L∞ ≤ {net['eps']} grey levels"
    if net.get("texture"):
        bound = (f"L∞ ≤ {net['eps']} grey levels × a texture weight in [0.3, 3] (texture power {net['texture']}: "
                 "the bound moves from flat skin to textured regions)")
    if net.get("luminance"):
        bound = "one luminance perturbation for R, G and B; " + bound
    card = CARD.format(bound=bound, 
        name=args.name, file=dst.name, sha256=sha, history=history, photo=photo, q=net["size"] // 4, template=net["template"], size=net["size"],
        params=count_params(model), gflop=count_flops(model, net["size"]) / 1e9, kb=dst.stat().st_size // 1024,
        eps=net["eps"], psnr_floor=net["psnr_floor"], step=step, batch=cfg["batch_size"], hardware=args.hardware,
        recognisers=", ".join(cfg["recognisers"]), alpha=dlw["alpha"], gamma=dlw["gamma"], k=dlw["k"],
        dlw_mode=dlw["mode"], val_recognisers=", ".join(cfg.get("val_recognisers", [])) or "none",
        shift_px=eot["shift_px"], rotate_deg=eot["rotate_deg"], scale_pct=round(eot["scale"] * 100),
        p_degrade=eot["p_degrade"], p_jpeg=round(eot["p_degrade"] * eot["p_jpeg"], 3),
        p_rbn=round(eot["p_degrade"] * eot["p_resize_blur_noise"], 3), jpeg_lo=eot["jpeg_quality"][0], jpeg_hi=eot["jpeg_quality"][1],
        resize_min=eot["resize_min"], blur=eot["blur_sigma_max"], noise=eot["noise_std"],
        colour_pct=round(eot["colour"] * 100), w_adv=loss["w_adv"], today=date.today().isoformat(),
        split_seed=data["split_seed"], val_pct=round(data["val_fraction"] * 100), val_n=data["val_crops"],
        val_rows="\n".join(rows), val_psnr=float(meta["val_psnr"]), val_ssim=float(meta["val_ssim"]))
    (MODELS_DIR / f"{args.file}.md").write_text(card)

    manifest_path = MODELS_DIR / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    manifest[args.name] = {"file": dst.name, "sha256": sha, "card": f"{args.file}.md",
                           "description": args.description, "step": step}
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    print(f"shipped {args.name}: {dst} ({dst.stat().st_size // 1024} KB, step {step}, sha256 {sha[:16]}…)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Paired comparison of two lab reports on the same probes: which probes B hides that A leaves
identified, and the reverse, per black-box recogniser, with a two-sided sign test.

Top-1 over 30-50 probes moves by a probe or two between dropout draws; the discordant pairs
say more than the two rates. Usage::

    python -m training.lab_pair runs/lab/A.json runs/lab/B.json
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from nullswap_sdk.errors import ConfigError

__all__ = ["paired", "sign_test"]


def sign_test(a: int, b: int) -> float:
    """Two-sided exact sign test p-value for ``a`` vs ``b`` discordant pairs."""
    n = a + b
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, k) for k in range(min(a, b) + 1)) / 2 ** n)


def paired(a: dict, b: dict, recognisers: list[str] | None = None) -> dict:
    """Per recogniser: Top-1 of A and B (and clean), probes B hid that A left identified
    (``b_hid``), probes B revealed (``b_revealed``) and the sign test's p."""
    pa, pb = a["runs"][0]["per_probe"], b["runs"][0]["per_probe"]
    if [p["file"] for p in pa] != [p["file"] for p in pb]:
        raise ConfigError("the two reports are on different probes",
                          hint="run both recipes with the same lab flags")
    judged = set(a.get("blackbox", {})) & set(b.get("blackbox", {}))  # black-box for both recipes
    recs = recognisers or sorted(r for r in (k[len("top1_"):] for k in pa[0] if k.startswith("top1_")) if r in judged)
    out = {}
    for r in recs:
        hid = sum(x[f"top1_{r}"] and not y[f"top1_{r}"] for x, y in zip(pa, pb))
        revealed = sum(y[f"top1_{r}"] and not x[f"top1_{r}"] for x, y in zip(pa, pb))
        ia, ib = a["runs"][0]["identity"][r], b["runs"][0]["identity"][r]
        out[r] = {"top1_a": ia["none"]["top1"], "top1_b": ib["none"]["top1"], "top1_clean": ia["none"]["top1_clean"],
                  "jpeg75": (ia["jpeg75"]["top1"], ib["jpeg75"]["top1"]),
                  "resize0.5": (ia["resize0.5"]["top1"], ib["resize0.5"]["top1"]),
                  "cosine": (ia["none"]["cosine"], ib["none"]["cosine"]),
                  "b_hid": hid, "b_revealed": revealed, "p": round(sign_test(hid, revealed), 4)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path, help="lab report (.json) of the control")
    ap.add_argument("b", type=Path, help="lab report (.json) of the change, same probes")
    args = ap.parse_args(argv)
    a, b = (json.loads(p.read_text()) for p in (args.a, args.b))
    qa, qb = a["quality"], b["quality"]
    print(f"{a['recipe']} -> {b['recipe']}: {len(a['runs'][0]['per_probe'])} probes; face box PSNR "
          f"{qa['psnr_face']:.2f} -> {qb['psnr_face']:.2f}, "
          f"SSIM@256 {qa['ssim_face256']:.4f} -> {qb['ssim_face256']:.4f}")
    for r, v in paired(a, b).items():
        print(f"  {r}: Top-1 {v['top1_a']:.2f} -> {v['top1_b']:.2f} (clean {v['top1_clean']:.2f}); "
              f"JPEG q75 {v['jpeg75'][0]:.2f} -> {v['jpeg75'][1]:.2f}; resize x0.5 {v['resize0.5'][0]:.2f} -> "
              f"{v['resize0.5'][1]:.2f}; cosine {v['cosine'][0]:.3f} -> {v['cosine'][1]:.3f}; "
              f"B hid {v['b_hid']}, revealed {v['b_revealed']} (sign test p = {v['p']:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

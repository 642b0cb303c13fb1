"""Recogniser sanity: same- vs different-person separation (ROC AUC) on LFW pairs.

``python -m nullswap_sdk.evaluation.verification --pairs 300`` prints a Markdown table.
Pairs come from the identity-disjoint *validation* split, through the full photo path.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..imageio import load_image
from . import datasets
from .embedder import PhotoEmbedder
from .metrics import roc_auc

__all__ = ["pair_separation"]


def pair_separation(recognisers: tuple[str, ...], pairs: list[tuple[Path, Path, bool]]) -> dict[str, dict]:
    """Per recogniser: ROC AUC, mean cosine of same and of different pairs, pairs used."""
    embedder = PhotoEmbedder(recognisers)
    cache: dict[Path, object] = {}

    def emb(p: Path):
        if p not in cache:
            cache[p] = embedder.embed(load_image(p).rgb)
        return cache[p]

    scores = {r: [] for r in recognisers}
    labels = []
    for a, b, same in pairs:
        ea, eb = emb(a), emb(b)
        if ea is None or eb is None:
            continue  # no face detected: not a recogniser failure
        labels.append(same)
        for r in recognisers:
            scores[r].append(float(ea.embeddings[r] @ eb.embeddings[r]))
    lab = np.asarray(labels, bool)
    out = {}
    for r in recognisers:
        s = np.asarray(scores[r])
        out[r] = {"auc": round(roc_auc(s, lab), 4), "cos_same": round(float(s[lab].mean()), 4),
                  "cos_diff": round(float(s[~lab].mean()), 4), "pairs": int(len(s))}
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pairs", type=int, default=300, help="same pairs (and as many different pairs)")
    ap.add_argument("--recognisers", default="sface,facenet,mobilefacenet,faceres,dlib-resnet")
    args = ap.parse_args(argv)
    ids = datasets.lfw_identities()
    _, val = datasets.split_identities(ids)
    pairs = datasets.lfw_pairs({n: ids[n] for n in val}, args.pairs, args.pairs)
    res = pair_separation(tuple(args.recognisers.split(",")), pairs)
    print("| recogniser | ROC AUC | cos same | cos different | pairs |\n|---|---|---|---|---|")
    for r, v in res.items():
        print(f"| {r} | {v['auc']:.4f} | {v['cos_same']:.3f} | {v['cos_diff']:.3f} | {v['pairs']} |")


if __name__ == "__main__":
    main()

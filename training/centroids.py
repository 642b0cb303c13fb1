"""Identity centroids of the training crops, per surrogate: an identity-level reference.

The identity loss compares a cloaked crop's embedding with the *same* crop's clean one. A
recogniser in use matches it against *other* photos of the person, so what must move is the
part of the embedding that a person's photos share, not the part that is this photo's own pose,
light and expression. For a training crop whose identity has other training crops, the
leave-one-out centroid (mean unit embedding of the identity's other crops, renormalised) is that
shared part; ``mix_references`` blends it into the reference (``loss.centroid_mix``).

Embeddings are computed once, through each surrogate's exact re-alignment, and cached beside
the crops (``data.cache_dir``), keyed by the crops' sources and the surrogate names.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import torch

from nullswap_sdk.cloakers.reference import blend_references

__all__ = ["loo_centroids", "mix_references", "identity_centroids"]


def loo_centroids(emb: np.ndarray, identities: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) unit embeddings → (has (N,) bool, (N, D) unit leave-one-out centroids; zero rows
    where the identity is unknown ("") or has no other crop)."""
    n = len(identities)
    if emb.shape[0] != n:
        raise ValueError(f"{emb.shape[0]} embeddings for {n} identities")
    emb = emb.astype(np.float64)
    out = np.zeros_like(emb)
    has = np.zeros(n, bool)
    groups: dict[str, list[int]] = {}
    for i, ident in enumerate(identities):
        if ident:
            groups.setdefault(ident, []).append(i)
    for idx in groups.values():
        if len(idx) < 2:
            continue
        total = emb[idx].sum(0)
        for i in idx:
            c = total - emb[i]
            norm = np.linalg.norm(c)
            if norm > 1e-8:  # two opposite embeddings cancel: leave that crop on its own reference
                out[i], has[i] = c / norm, True
    return has, out.astype(np.float32)


def mix_references(refs: torch.Tensor, centroids: torch.Tensor, has: torch.Tensor, mix: float) -> torch.Tensor:
    """Unit references normalize((1 − mix)·ref + mix·centroid) where ``has``, else ``ref``.
    The cosine to such a reference is a fixed positive blend of the cosines to both."""
    if not 0.0 <= mix <= 1.0:
        raise ValueError(f"centroid mix {mix} outside [0, 1]")
    return blend_references(refs, centroids, has, mix)


def _key(sources: list[str], names: list[str], template: str, size: int) -> str:
    h = hashlib.sha256("\0".join([template, str(size), *names, *sources]).encode())
    return h.hexdigest()[:16]


@torch.no_grad()
def identity_centroids(crops: np.ndarray, sources: list[str], identities: list[str], embedder,
                       cache_dir: str, template: str, device: torch.device | str = "cpu",
                       batch: int = 64) -> tuple[np.ndarray, list[np.ndarray]]:
    """(has (N,), per surrogate (N, D) centroids) for the training crops. ``embedder`` is the
    trainer's ``IdentityLoss`` (exact alignment, no dropout here). Only crops of identities with
    ≥ 2 crops are embedded; the rest get zero rows and ``has`` False."""
    names = list(embedder.names)
    base = Path(cache_dir) / f"centroids_{_key(sources, names, template, crops.shape[1])}"
    counts: dict[str, int] = {}
    for ident in identities:
        if ident:
            counts[ident] = counts.get(ident, 0) + 1
    need = np.array([i for i, ident in enumerate(identities) if ident and counts[ident] >= 2], dtype=np.int64)
    files = [base.with_name(f"{base.name}_{n}.npy") for n in names]
    embs = []
    for i, (name, f) in enumerate(zip(names, files)):
        if f.is_file():
            e = np.load(f)
        else:
            t0, parts = time.time(), []
            for b in range(0, len(need), batch):
                x = torch.from_numpy(np.asarray(crops[need[b:b + batch]])).to(device).permute(0, 3, 1, 2).float()
                parts.append(embedder.embed(i, x).cpu().numpy())
                if (b // batch) % 32 == 31:
                    print(f"[centroids] {name}: {b + len(x)}/{len(need)} crops", flush=True)
            e = np.concatenate(parts) if parts else np.zeros((0, 1), np.float32)
            f.parent.mkdir(parents=True, exist_ok=True)
            np.save(f.with_suffix(".tmp.npy"), e)
            f.with_suffix(".tmp.npy").replace(f)
            print(f"[centroids] {name}: {len(need)} crops embedded in {time.time() - t0:.0f}s -> {f}", flush=True)
        embs.append(e)
    sub_ids = [identities[i] for i in need]
    has = np.zeros(len(identities), bool)
    has[need] = True
    out = []
    for e in embs:
        h, c = loo_centroids(e, sub_ids)
        full = np.zeros((len(identities), c.shape[1]), np.float32)
        full[need] = c
        out.append(full)
        has[need] &= h
    return has, out

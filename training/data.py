"""Aligned face crops for training and validation, cached to disk as uint8 ``.npy``.

Train: LFW images of the *train* identities of ``split_identities`` plus UTKFace (no identity
labels, no overlap with LFW). Validation: one photo per held-out LFW identity first, so the
number measures many people, not a few prolific ones. Validation identities never reach the
training set (asserted). Crops follow the inference path exactly: align to the Cloaker
template (e.g. cloak256), then INTER_AREA down to the working size.

For a GPU machine that cannot see ``../shared/data``: ``write_pack`` stores crops as JPEG q95
bytes in one ``.npz`` (no pickle) small enough to travel, ``read_pack`` decodes them.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nullswap_sdk.errors import ConfigError
from nullswap_sdk.evaluation import datasets as ds
from nullswap_sdk.network.model import NetworkConfig

from .config import DataConfig

__all__ = ["CropSet", "split_sources", "load_crops", "write_pack", "read_pack", "BatchSampler"]


@dataclass
class CropSet:
    crops: np.ndarray  # (N, S, S, 3) uint8 RGB
    sources: list[str]
    identities: list[str]  # "" where unknown (UTKFace)

    def __len__(self) -> int:
        return len(self.crops)


def _rank(seed: str, *parts: str) -> str:
    return hashlib.sha256("\0".join((seed,) + parts).encode()).hexdigest()


def split_sources(cfg: DataConfig) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(train, val) lists of (path, identity) — identity-disjoint, deterministic."""
    if cfg.data_dir:
        import os
        os.environ[ds.ENV_VAR] = cfg.data_dir
    lfw = ds.lfw_identities()
    train_ids, val_ids = ds.split_identities(lfw, cfg.val_fraction, cfg.split_seed)
    if set(train_ids) & set(val_ids):  # pragma: no cover - split_identities guarantees it
        raise ConfigError("train/val identities overlap")
    train = sorted(((str(p), n) for n in train_ids for p in lfw[n]), key=lambda t: _rank(cfg.split_seed, t[0]))
    if cfg.max_lfw_images is not None:
        train = train[:cfg.max_lfw_images]
    utk = sorted((str(p) for p in ds.utkface_images()), key=lambda p: _rank(cfg.split_seed, p))
    if cfg.max_utk_images is not None:
        utk = utk[:cfg.max_utk_images]
    train += [(p, "") for p in utk]
    # Validation: round-robin over identities (each identity's photos in hash order).
    per_id = {n: sorted(map(str, lfw[n]), key=lambda p: _rank(cfg.split_seed, p)) for n in val_ids}
    order = sorted(val_ids, key=lambda n: _rank(cfg.split_seed, "val", n))
    val: list[tuple[str, str]] = []
    for r in range(max((len(v) for v in per_id.values()), default=0)):
        val += [(per_id[n][r], n) for n in order if r < len(per_id[n])]
    val = val[: cfg.val_crops * 2]  # spare for detection failures
    assert not {n for _, n in train if n} & set(val_ids)
    return train, val


def _choose_face(faces, shape):
    """LFW photos may show several people; the labelled one is centred (largest if tied)."""
    cy, cx = shape[0] / 2, shape[1] / 2

    def cost(f):
        x0, y0, x1, y1 = f.box
        return np.hypot((x0 + x1) / 2 - cx, (y0 + y1) / 2 - cy) / max(f.size, 1.0)

    return min(faces, key=cost)


def _align_all(items: list[tuple[str, str]], net: NetworkConfig, label: str, limit: int | None) -> CropSet:
    import cv2

    from nullswap_sdk.faces.align import align_face
    from nullswap_sdk.faces.detect import FaceDetector
    from nullswap_sdk.faces.templates import get_template
    from nullswap_sdk.imageio import load_image

    det, tpl = FaceDetector(), get_template(net.template)
    crops, sources, ids = [], [], []
    t0, misses = time.time(), 0
    for i, (path, ident) in enumerate(items):
        if limit is not None and len(crops) >= limit:
            break
        rgb = load_image(path).rgb
        faces = det.detect(rgb)
        if not faces:
            misses += 1
            continue
        crop, _ = align_face(rgb, _choose_face(faces, rgb.shape).landmarks, tpl)
        if crop.shape[0] != net.size:
            crop = cv2.resize(crop, (net.size, net.size), interpolation=cv2.INTER_AREA)
        crops.append(crop)
        sources.append(path)
        ids.append(ident)
        if (i + 1) % 500 == 0:
            el = time.time() - t0
            print(f"[data] {label}: {i + 1}/{len(items)} images, {misses} without a face, "
                  f"ETA {el / (i + 1) * (len(items) - i - 1):.0f}s", flush=True)
    if not crops:
        raise ConfigError(f"no face found in the {label} images", hint="check the data folder")
    return CropSet(np.stack(crops), sources, ids)


def load_crops(cfg: DataConfig, net: NetworkConfig) -> tuple[CropSet, CropSet]:
    """(train, val) crop sets, built once and cached under ``cfg.cache_dir``."""
    if cfg.pack:
        return read_pack(cfg.pack + "_train.npz"), read_pack(cfg.pack + "_val.npz")
    train_items, val_items = split_sources(cfg)
    out = []
    for label, items, limit in (("train", train_items, None), ("val", val_items, cfg.val_crops)):
        key = _rank("v1", net.template, str(net.size), str(limit), *(p for p, _ in items))[:16]
        base = Path(cfg.cache_dir) / f"{label}_{net.template}_{net.size}_{key}"
        npy, meta = base.with_suffix(".npy"), base.with_suffix(".json")
        if npy.is_file() and meta.is_file():
            m = json.loads(meta.read_text())
            out.append(CropSet(np.load(npy, mmap_mode="r"), m["sources"], m["identities"]))
            continue
        cs = _align_all(items, net, label, limit)
        npy.parent.mkdir(parents=True, exist_ok=True)
        np.save(str(npy) + ".tmp.npy", cs.crops)
        Path(str(npy) + ".tmp.npy").replace(npy)
        meta.write_text(json.dumps({"sources": cs.sources, "identities": cs.identities}))
        out.append(cs)
    return out[0], out[1]


def write_pack(cs: CropSet, path: str | Path, quality: int = 95, limit: int | None = None) -> Path:
    import cv2

    n = len(cs) if limit is None else min(limit, len(cs))
    bufs = []
    for c in cs.crops[:n]:
        ok, b = cv2.imencode(".jpg", np.ascontiguousarray(c[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise ConfigError("JPEG encoding failed")
        bufs.append(b.ravel())
    offsets = np.cumsum([0] + [len(b) for b in bufs]).astype(np.int64)
    meta = json.dumps({"sources": cs.sources[:n], "identities": cs.identities[:n]})
    np.savez(path, data=np.concatenate(bufs), offsets=offsets, meta=np.frombuffer(meta.encode(), np.uint8))
    return Path(path)


def read_pack(path: str | Path) -> CropSet:
    import cv2

    if not Path(path).is_file():
        raise ConfigError(f"crop pack {path} not found", hint="write it with training.data.write_pack")
    z = np.load(path, allow_pickle=False)
    data, off = z["data"], z["offsets"]
    crops = np.stack([cv2.imdecode(data[off[i]:off[i + 1]], cv2.IMREAD_COLOR)[:, :, ::-1] for i in range(len(off) - 1)])
    meta = json.loads(z["meta"].tobytes().decode())
    return CropSet(np.ascontiguousarray(crops), meta["sources"], meta["identities"])


class BatchSampler:
    """Epoch-wise permutations from (seed, epoch): resuming at ``step`` reproduces the order."""

    def __init__(self, n: int, batch: int, seed: int) -> None:
        if n < 1:
            raise ConfigError("empty training set")
        self.n, self.batch, self.seed = n, batch, seed
        self.per_epoch = max(1, n // batch)

    def indices(self, step: int) -> np.ndarray:
        epoch, pos = divmod(step, self.per_epoch)
        perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        idx = perm[pos * self.batch:(pos + 1) * self.batch]
        if len(idx) < self.batch:  # tiny sets (tests): wrap around
            idx = np.resize(perm, self.batch)
        return idx


def main(argv: list[str] | None = None) -> int:
    """``python -m training.data [--config cfg.json] [--pack PREFIX --limit N]``: build the crop
    cache; with ``--pack`` also write PREFIX_train.npz / PREFIX_val.npz for a GPU machine."""
    import argparse

    from .config import apply_overrides, load_config

    ap = argparse.ArgumentParser(prog="python -m training.data", description=main.__doc__.split("\n")[0])
    ap.add_argument("--config")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--pack", help="write JPEG crop packs with this path prefix")
    ap.add_argument("--limit", type=int, help="train crops in the pack (deterministic random subset)")
    ap.add_argument("--quality", type=int, default=92)
    args = ap.parse_args(argv)
    cfg = apply_overrides(load_config(args.config), args.set)
    train, val = load_crops(cfg.data, cfg.network)
    print(f"[data] {len(train)} train, {len(val)} val crops of {train.crops.shape[1:]}", flush=True)
    if args.pack:
        n = len(train) if args.limit is None else min(args.limit, len(train))
        idx = np.sort(np.random.default_rng(cfg.seed).permutation(len(train))[:n])
        sub = CropSet(np.asarray(train.crops[idx]), [train.sources[i] for i in idx], [train.identities[i] for i in idx])
        Path(args.pack).parent.mkdir(parents=True, exist_ok=True)
        for label, cs in (("train", sub), ("val", val)):
            p = write_pack(cs, f"{args.pack}_{label}.npz", args.quality)
            print(f"[data] wrote {p} ({p.stat().st_size / 1e6:.1f} MB, {len(cs)} crops)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""PGD targets for distillation: per-crop perturbations the network is then taught to predict.

    python -m training.distill --out runs/distill --config training/recipes/current.json --count 2000

Why: fitted to a few crops, the network reaches PGD-like white-box damage that transfers
(docs/RESULTS.md, session 7), but trained on 16 k crops with the identity loss alone it learns
one gradient step's worth per image. A few-step PGD perturbation per training crop is a dense
target that carries where iterated optimisation goes.

Each target is computed under the network's own output bound (``NetworkConfig``: feather
mask x texture weight x eps on L∞, luminance-only, the crop PSNR floor), so the network can
represent it exactly. Steps are momentum L2 steps on the recipe's surrogates through their
jittered re-alignments (training's ``IdentityLoss``), thinned by calibrated conv dropout.
Writes ``targets.npy`` (N, S, S) float16 luminance δ, ``indices.npy`` (positions in the
training crop set), ``meta.json``; resumable (chunks already written are kept).
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from nullswap_sdk.cloakers.pgd import _project_psnr, _unit
from nullswap_sdk.cloakers.texture import default_radius, texture_weight
from nullswap_sdk.errors import ConfigError
from nullswap_sdk.faces.paste import feather_mask
from nullswap_sdk.network.model import NetworkConfig

__all__ = ["DistillConfig", "network_bound", "pgd_targets", "build_targets", "load_targets", "main"]


@dataclass(frozen=True)
class DistillConfig:
    steps: int = 10
    # Each step moves ``step`` x the budget's L2 radius along the momentum of the bound-weighted,
    # L2-normalised gradient. Under a binding PSNR floor, L∞ sign steps waste the budget: on 16
    # validation crops at the network's bound, 5 sign steps left the white-box mean cosine at
    # 0.89 (faceres 0.96), 5 L2 steps at 0.61 (0.85), 10 at 0.55 (0.82); v3: 0.77 (0.84).
    step: float = 0.3
    dropout_fidelity: float = 0.9  # 1: exact surrogates
    momentum: float = 0.9
    batch: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch < 1 or self.step <= 0 or not 0.5 <= self.dropout_fidelity <= 1:
            raise ConfigError(f"invalid distill config {self}",
                              hint="steps, batch >= 1; step > 0; dropout_fidelity in [0.5, 1]")


def network_bound(x: torch.Tensor, net: NetworkConfig) -> torch.Tensor:
    """(B, 1, S, S) per-pixel L∞ bound of ``NullSwapNet``'s output on crops ``x``."""
    mask = torch.from_numpy(feather_mask(net.size, net.feather))[None, None].to(x)
    if net.texture:
        mask = mask * texture_weight(x, net.texture, radius=default_radius(net.size), mask=mask)
    return net.eps * mask


def _project(d: torch.Tensor, bound: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, max_mse: float) -> torch.Tensor:
    """Onto the per-pixel bound, the valid pixel range and the PSNR floor (as PGD projects)."""
    d = torch.maximum(torch.minimum(d, bound), -bound)
    return _project_psnr(torch.maximum(torch.minimum(d, hi), lo), max_mse)


def pgd_targets(x: torch.Tensor, idloss, net: NetworkConfig, cfg: DistillConfig,
                gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Luminance δ (B, 1, S, S) for float crops ``x`` (B, 3, S, S) in [0, 255], and each
    crop's mean cosine on the exact surrogates (exact alignment) after it."""
    if not net.luminance:
        raise ConfigError("distillation targets are luminance-only", hint="use a recipe with network.luminance=true")
    if not net.psnr_floor:
        raise ConfigError("distillation targets need the network's PSNR floor", hint="set network.psnr_floor")
    bound = network_bound(x, net)
    lo, hi = (-x).amax(1, keepdim=True), (255 - x).amin(1, keepdim=True)
    max_mse = 255.0 ** 2 / 10 ** (net.psnr_floor / 10)
    radius = (max_mse * x[0, 0].numel()) ** 0.5  # the floor's L2 radius of a (1, S, S) δ
    w = bound / net.eps  # steps follow the bound: the texture weight steers where energy goes
    refs = idloss.references(x)
    delta = torch.zeros_like(x[:, :1])
    g = torch.zeros_like(delta)
    for _ in range(cfg.steps):
        delta.requires_grad_(True)
        cos = idloss.cosines(x + delta.expand_as(x), refs, gen)  # jittered, thinned
        (grad,) = torch.autograd.grad(torch.stack(cos).mean(0).sum(), delta)
        with torch.no_grad():
            g = cfg.momentum * g + _unit(grad * w)
            delta = _project(delta - cfg.step * radius * _unit(g), bound, lo, hi, max_mse)
    with torch.no_grad():
        after = torch.stack(idloss.cosines(x + delta.expand_as(x), refs, None)).mean(0)
    return delta.detach(), after


_BOUND_FIELDS = ("template", "size", "eps", "psnr_floor", "feather", "luminance", "texture")


def _bound_key(net: NetworkConfig) -> dict:
    """The network fields a target's bound depends on (not its capacity)."""
    return {f: getattr(net, f) for f in _BOUND_FIELDS}


def load_targets(folder: str | Path, n_crops: int, net: NetworkConfig) -> tuple[np.ndarray, np.ndarray]:
    """(indices, targets) of a finished or partial target folder; typed errors when it does not
    fit the training set or the network bound it is used with."""
    d = Path(folder)
    meta_p = d / "meta.json"
    if not meta_p.is_file():
        raise ConfigError(f"no distillation targets in {d}", hint="python -m training.distill --out " + str(d))
    meta = json.loads(meta_p.read_text())
    done = int(meta.get("done", 0))
    idx = np.load(d / "indices.npy")[:done]
    t = np.load(d / "targets.npy", mmap_mode="r")
    size = net.size
    if meta.get("bound") != json.loads(json.dumps(_bound_key(net))):
        raise ConfigError(f"targets in {d} were built under the bound {meta.get('bound')}, the network has "
                          f"{_bound_key(net)}", hint="rebuild them with the run's network config")
    if t.shape[1:] != (size, size) or (len(idx) and idx.max() >= n_crops) or meta.get("n_train") != n_crops:
        raise ConfigError(f"targets in {d} ({t.shape}, built for {meta.get('n_train')} crops) do not fit this "
                          f"training set ({n_crops} crops of {size} px)", hint="rebuild them with the run's config")
    if not done:
        raise ConfigError(f"{d} holds no finished targets yet", hint="let python -m training.distill run longer")
    return idx, t[:done]


def build_targets(out: Path, crops: np.ndarray, idloss, net: NetworkConfig, dcfg: DistillConfig, count: int,
                  key: dict, time_limit: float | None = None, device: str | torch.device = "cpu") -> dict:
    """Targets for ``count`` of ``crops`` (N, S, S, 3) uint8 into folder ``out``, continuing a
    partial folder built under the same ``key`` (a dict describing the config). Returns meta."""
    n, s = len(crops), net.size
    out.mkdir(parents=True, exist_ok=True)
    meta_p = out / "meta.json"
    key = {**key, "bound": _bound_key(net), "n_train": n, "count": count}
    if meta_p.is_file():
        meta = json.loads(meta_p.read_text())
        if {k: meta.get(k) for k in key} != json.loads(json.dumps(key)):
            raise ConfigError(f"{out} holds targets built under another config", hint="use a new --out")
        targets = np.load(out / "targets.npy", mmap_mode="r+")
        idx = np.load(out / "indices.npy")
    else:
        meta = {**key, "done": 0, "cos_after": []}
        # A seeded permutation: the targets span identities and both datasets.
        idx = np.random.default_rng([dcfg.seed, 11]).permutation(n)[:count]
        np.save(out / "indices.npy", idx)
        targets = np.lib.format.open_memmap(out / "targets.npy", mode="w+", dtype=np.float16, shape=(count, s, s))
    t_start = time.time()
    while meta["done"] < count:
        b0 = meta["done"]
        sel = idx[b0:b0 + dcfg.batch]
        gen = torch.Generator().manual_seed(dcfg.seed * 1_000_003 + b0)  # per chunk: resumable, reproducible
        x = torch.from_numpy(np.asarray(crops[np.sort(sel)])).permute(0, 3, 1, 2).float().to(device)
        order = np.argsort(np.argsort(sel))  # crops were read sorted; put them back in idx order
        d, after = pgd_targets(x, idloss, net, dcfg, gen)
        targets[b0:b0 + len(sel)] = d[order, 0].cpu().numpy().astype(np.float16)
        targets.flush()
        meta["done"] = b0 + len(sel)
        meta["cos_after"] += [round(float(v), 4) for v in after[order]]
        tmp = meta_p.with_suffix(".tmp")
        tmp.write_text(json.dumps(meta))
        tmp.replace(meta_p)
        el = time.time() - t_start
        if meta["done"] % (dcfg.batch * 10) == 0 or meta["done"] == count:
            print(f"[distill] {meta['done']}/{count} mean exact cosine {np.mean(meta['cos_after']):.3f} "
                  f"{el:.0f}s", flush=True)
        if time_limit is not None and el > time_limit:
            print(f"[distill] time limit at {meta['done']}; rerun the same command to continue", flush=True)
            break
    return meta


def main(argv: list[str] | None = None) -> int:
    from nullswap_sdk.network.model import working_template

    from .config import apply_overrides, load_config
    from .data import load_crops
    from .losses import IdentityLoss
    from .train import _device, _recogniser

    ap = argparse.ArgumentParser(prog="python -m training.distill", description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--config", help="the training recipe whose network bound and surrogates are used")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--count", type=int, default=2000, help="training crops to compute targets for")
    ap.add_argument("--steps", type=int, default=DistillConfig.steps)
    ap.add_argument("--step", type=float, default=DistillConfig.step, help="fraction of the budget's L2 radius")
    ap.add_argument("--fidelity", type=float, default=DistillConfig.dropout_fidelity)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--time-limit", type=float, help="seconds; stop after the current chunk (resumable)")
    a = ap.parse_args(argv)
    cfg = apply_overrides(load_config(a.config), a.set)
    dcfg = DistillConfig(steps=a.steps, step=a.step, dropout_fidelity=a.fidelity, seed=cfg.seed)
    torch.set_num_threads(a.threads)
    dev = _device(cfg)
    train, _ = load_crops(cfg.data, cfg.network)
    count = min(a.count, len(train))
    out = Path(a.out)
    key = {"distill": asdict(dcfg), "network": asdict(cfg.network), "recognisers": list(cfg.recognisers),
           "eot_jitter": [cfg.eot.rotate_deg, cfg.eot.scale, cfg.eot.shift_px]}
    recs = [_recogniser(r, cfg, dev) for r in cfg.recognisers]
    idloss = IdentityLoss(recs, working_template(cfg.network), cfg.eot)
    probe = torch.from_numpy(np.array(train.crops[:16])).permute(0, 3, 1, 2).float().to(dev)
    drops = idloss.calibrate_dropout(probe, dcfg.dropout_fidelity, cfg.seed)
    print(f"[distill] {count} targets, {dcfg.steps} steps, dropout {[round(p, 4) for p in drops]}", flush=True)
    build_targets(out, train.crops, idloss, cfg.network, dcfg, count, key, a.time_limit, dev)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Train the NullSwap cloaking network.

    python -m training.train --out runs/NAME [--config cfg.json] [--set dlw.alpha=3 ...]
                             [--steps N] [--time-limit S] [--fresh]

Re-running the same command resumes from ``runs/NAME/latest.pt`` (same config required).
Outputs in ``--out``: config.json, metrics.jsonl (train and val records), latest.pt,
best.pt, best.safetensors (eval-ready weights for ``NetworkCloaker``), last.safetensors.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nullswap_sdk.errors import ConfigError, NullSwapError
from nullswap_sdk.network import NullSwapNet, PatchDiscriminator, count_flops, count_params, save_network
from nullswap_sdk.network.model import working_template
from nullswap_sdk.recognisers.model import load_recogniser
from nullswap_sdk.recognisers.registry import get_recogniser_config, with_file

from .centroids import identity_centroids, mix_references
from .config import TrainConfig, apply_overrides, config_from_dict, load_config
from .data import BatchSampler, CropSet, load_crops
from .dlw import DynamicLossWeighting
from .losses import AlignedEmbedder, IdentityLoss, d_loss, g_adv_loss, mse_loss, ssim

# Keys that may change between a run and its resumption.
_RESUMABLE_CHANGES = {"steps", "time_limit_s", "log_every", "val_every", "ckpt_every", "threads", "device"}


def _device(cfg: TrainConfig) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device=cuda requested but CUDA is not available", hint="use --set device=cpu")
    return torch.device(cfg.device)


def _recogniser(name: str, cfg: TrainConfig, device) -> torch.nn.Module:
    rc = get_recogniser_config(name)
    if name in cfg.recogniser_files:
        rc = with_file(rc, str(Path(cfg.recogniser_files[name]).resolve()))  # relative: to the cwd
    return load_recogniser(rc, str(device))


def _psnr(mse: float) -> float:
    return float("inf") if mse <= 0 else 10 * math.log10(255.0 ** 2 / mse)


class Trainer:
    def __init__(self, cfg: TrainConfig, out: Path, train: CropSet | None = None, val: CropSet | None = None) -> None:
        self.cfg, self.out = cfg, out
        self.device = dev = _device(cfg)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        if dev.type == "cpu":
            torch.set_num_threads(cfg.threads)
        self.amp = cfg.amp and dev.type == "cuda"
        if train is None or val is None:
            train, val = load_crops(cfg.data, cfg.network)
        self.train_set, self.val_set = train, val
        self.sampler = BatchSampler(len(train), cfg.batch_size, cfg.seed)
        self.distill = None  # (indices into train, targets (N, S, S), sampler, per-batch count)
        if cfg.loss.w_distill > 0:
            from .distill import load_targets

            d_idx, d_t = load_targets(cfg.data.distill_dir, len(train), cfg.network)
            k = max(1, min(cfg.batch_size, round(cfg.batch_size * cfg.data.distill_share)))
            self.distill = (d_idx, d_t, BatchSampler(len(d_idx), k, cfg.seed + 5), k)
            print(f"[train] distillation: {len(d_idx)} targets, {k} per batch", flush=True)
        self.steps_per_epoch = cfg.steps_per_epoch or self.sampler.per_epoch
        recs = [_recogniser(n, cfg, dev) for n in cfg.recognisers]
        self.idloss = IdentityLoss(recs, working_template(cfg.network), cfg.eot,
                                   feature_depth=cfg.loss.feature_depth if cfg.loss.w_feat > 0 else None)
        if cfg.loss.dropout_fidelity < 1:  # calibrated on fixed training crops: the same on resume
            probe = torch.from_numpy(np.array(train.crops[:16])).permute(0, 3, 1, 2).float().to(dev)
            drops = self.idloss.calibrate_dropout(probe, cfg.loss.dropout_fidelity, cfg.seed)
            print(f"[train] surrogate dropout {dict(zip(cfg.recognisers, [round(p, 4) for p in drops]))}", flush=True)
        self.centroids = None  # (has (N,) bool tensor, per surrogate (N, D) tensors) or None
        if not 0.0 <= cfg.loss.centroid_mix <= 1.0:
            raise ConfigError(f"loss.centroid_mix={cfg.loss.centroid_mix} is outside [0, 1]",
                              hint="0 keeps each crop's own reference, 1 uses its identity's centroid alone")
        if cfg.loss.centroid_mix > 0:
            has, cents = identity_centroids(train.crops, train.sources, train.identities, self.idloss,
                                            cfg.data.cache_dir, cfg.network.template, dev)
            self.centroids = (torch.from_numpy(has), [torch.from_numpy(c) for c in cents])
            print(f"[train] identity centroids for {int(has.sum())} of {len(has)} crops, "
                  f"mix {cfg.loss.centroid_mix}", flush=True)
        # Validation recognisers: embeddings only, under no_grad; never touch the loss.
        vnames = [n for n in cfg.val_recognisers if self._available(n)]
        self.val_embedder = AlignedEmbedder([_recogniser(n, cfg, dev) for n in vnames],
                                            working_template(cfg.network)) if vnames else None
        self.G = NullSwapNet(cfg.network).to(dev)
        self.D = PatchDiscriminator(cfg.discriminator).to(dev)
        self.opt_g = torch.optim.Adam(self._g_param_groups(), lr=cfg.lr, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d, betas=(0.5, 0.999))
        self.dlw = DynamicLossWeighting(len(recs), cfg.dlw)
        self.gen = torch.Generator().manual_seed(cfg.seed + 1)  # EOT draws (CPU generator works for CUDA)
        self.step, self.best = 0, math.inf
        self._val_refs: dict[tuple[str, int], torch.Tensor] = {}  # clean val embeddings, computed once
        self._stop = False
        self.stop_at: int | None = None  # --stop-at: pause here (keeps the LR schedule of cfg.steps)

    def _g_param_groups(self) -> list[dict]:
        """G's optimiser groups; ``mult`` scales the scheduled LR. The universal map is one
        tensor fed by every sample, so it gets its own multiplier."""
        named = list(self.G.named_parameters())
        groups = [{"params": [p for n, p in named if n != "universal"], "mult": 1.0}]
        if self.cfg.network.universal:
            groups.append({"params": [self.G.universal], "mult": self.cfg.universal_lr_mult})
        return groups

    @staticmethod
    def _available(name: str) -> bool:
        try:
            from nullswap_sdk.recognisers.registry import resolve_file
            resolve_file(get_recogniser_config(name))
            return True
        except NullSwapError:
            print(f"[train] validation recogniser {name!r} not available: skipped", flush=True)
            return False

    # -- checkpoints ----------------------------------------------------------------------
    def state(self) -> dict:
        return {"step": self.step, "best": self.best, "config": json.dumps(self.cfg.to_dict(), sort_keys=True),
                "G": self.G.state_dict(), "D": self.D.state_dict(), "opt_g": self.opt_g.state_dict(),
                "opt_d": self.opt_d.state_dict(), "dlw": json.dumps(self.dlw.state_dict()),
                "gen": self.gen.get_state(), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state() if self.device.type == "cuda" else torch.zeros(0)}

    def save(self, name: str) -> None:
        tmp = self.out / (name + ".tmp")
        torch.save(self.state(), tmp)
        os.replace(tmp, self.out / name)

    def load(self, path: Path, fork: bool = False) -> list[str]:
        """Resume from ``path``; ``fork`` continues another run's state under a changed config
        (e.g. a relaxed PSNR budget) and returns the changed sections, instead of refusing."""
        ck = torch.load(path, map_location=self.device, weights_only=True)
        # Keys added since the checkpoint was written read as their defaults; tuples → lists.
        old = json.loads(json.dumps(config_from_dict(json.loads(ck["config"])).to_dict()))
        new = json.loads(json.dumps(self.cfg.to_dict()))
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and k not in _RESUMABLE_CHANGES)
        if diff and not fork:
            raise ConfigError(f"{path} was trained with a different config ({diff})",
                              hint="resume with the same config, or pass --fresh / a new --out")
        self.G.load_state_dict(ck["G"])
        self.D.load_state_dict(ck["D"])
        self.opt_g.load_state_dict(ck["opt_g"])
        self.opt_d.load_state_dict(ck["opt_d"])
        self.dlw.load_state_dict(json.loads(ck["dlw"]))
        self.gen.set_state(ck["gen"].cpu())
        torch.set_rng_state(ck["torch_rng"].cpu())
        if self.device.type == "cuda" and ck["cuda_rng"].numel():
            torch.cuda.set_rng_state(ck["cuda_rng"].cpu())
        self.step, self.best = int(ck["step"]), math.inf if fork else float(ck["best"])
        return diff

    def init_from(self, path: Path) -> dict:
        """Start G from trained weights of another architecture variant: tensors of equal shape
        are copied; an RGB output conv feeding a luminance-only network is averaged over its
        three output filters. Returns what was copied, adapted and left at init."""
        from safetensors.torch import load_file

        src, dst = load_file(str(path)), self.G.state_dict()
        done = {"copied": 0, "adapted": [], "fresh": []}
        for k, v in dst.items():
            w = src.get(k)
            if w is not None and w.shape == v.shape:
                dst[k] = w
                done["copied"] += 1
            elif w is not None and k.startswith("tail.2.") and w.shape[0] == 3 and v.shape[0] == 1:
                dst[k] = w.mean(0, keepdim=True)
                done["adapted"].append(k)
            else:
                done["fresh"].append(k)
        self.G.load_state_dict(dst)
        return done

    # -- one iteration --------------------------------------------------------------------
    def _batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Crops (B, 3, S, S) and, when distilling, the first k samples' targets (k, 1, S, S);
        the crops' training-set indices are left in ``self._idx`` (identity centroids)."""
        idx = np.sort(self.sampler.indices(step))  # sorted: mmap reads stay sequential
        t = None
        self._idx = idx
        if self.distill is not None:
            d_idx, d_t, d_sampler, k = self.distill
            j = np.sort(d_sampler.indices(step))
            idx = self._idx = np.concatenate([d_idx[j], idx[:len(idx) - k]])
            t = np.array(d_t[j], dtype=np.float32)[:, None]
        x = np.asarray(self.train_set.crops[idx])
        flip = np.random.default_rng([self.cfg.seed, step, 7]).random(len(idx)) < self.cfg.data.hflip
        x[flip] = x[flip, :, ::-1]
        xt = torch.from_numpy(np.ascontiguousarray(x)).to(self.device).permute(0, 3, 1, 2).float()
        if t is not None:
            tf = flip[:len(t)]
            t[tf] = t[tf, :, :, ::-1]
            t = torch.from_numpy(np.ascontiguousarray(t)).to(self.device)
        return xt, t

    def _lr(self, step: int, base: float) -> float:
        r = self.cfg.lr_min_ratio
        return base * (r + (1 - r) * 0.5 * (1 + math.cos(math.pi * min(step / self.cfg.steps, 1.0))))

    def train_step(self) -> dict:
        cfg, lc = self.cfg, self.cfg.loss
        for opt, base in ((self.opt_g, cfg.lr), (self.opt_d, cfg.lr_d)):
            for g in opt.param_groups:
                g["lr"] = self._lr(self.step, base) * g.get("mult", 1.0)
        x, target = self._batch(self.step)
        epoch = self.step // self.steps_per_epoch
        use_adv = lc.w_adv > 0 and self.step >= lc.adv_start
        self.G.train()
        self.D.requires_grad_(False)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            cloaked = self.G(x)
            refs = self.idloss.references(x)
            if self.centroids is not None:
                has, cents = self.centroids
                j = torch.from_numpy(self._idx)
                hj = has[j].to(x.device)
                refs = [mix_references(r, c[j].to(r.device), hj, lc.centroid_mix) for r, c in zip(refs, cents)]
            cos, dist = self.idloss.terms(cloaked.float(), refs, self.gen, clean=x)
            L = [c.float().mean() for c in cos]
            Lf = [d.float().mean() for d in dist]  # empty when the feature term is off
            w = self.dlw.update([v.item() for v in L], epoch)
            l_id = sum(float(wi) * li for wi, li in zip(w, L))
            cl = cloaked.float()
            l_mse = mse_loss(cl, x, lc.psnr_ref)
            s = ssim(cl, x).mean()
            l_adv = g_adv_loss(self.D(cloaked).float(), lc.adv_mode) if use_adv else cl.new_zeros(())
            ramp = min(1.0, self.step / lc.quality_warmup) if lc.quality_warmup > 0 else 1.0
            loss = lc.w_id * l_id + ramp * (lc.w_mse * l_mse + lc.w_ssim * (1 - s)) + lc.w_adv * l_adv
            if Lf:
                loss = loss - lc.w_feat * sum(Lf) / len(Lf)
            l_dist = cl.new_zeros(())
            if target is not None:
                dg = (cl[:len(target)] - x[:len(target)]).mean(1, keepdim=True)
                l_dist = 1 - F.cosine_similarity(dg.flatten(1), target.flatten(1), dim=1, eps=1e-6).mean()
                loss = loss + lc.w_distill * l_dist
        if not torch.isfinite(loss):
            raise ConfigError(f"loss became {loss.item()} at step {self.step}", hint="lower lr or resume from best.pt")
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(self.G.parameters(), cfg.grad_clip)
        self.opt_g.step()
        ld = torch.zeros(())
        if lc.w_adv > 0:
            self.D.requires_grad_(True)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                ld = d_loss(self.D(x).float(), self.D(cloaked.detach()).float(), lc.adv_mode)
            self.opt_d.zero_grad(set_to_none=True)
            ld.backward()
            self.opt_d.step()
        mse_px = float((cl.detach() - x).pow(2).mean())
        rec = {"loss": loss.item(), "l_id": l_id.item(), "mse_rel": l_mse.item(), "ssim": s.item(),
               "psnr": _psnr(mse_px), "adv": l_adv.item(), "d": ld.item(), "grad_norm": gnorm.item()}
        if target is not None:
            rec["distill"] = l_dist.item()
        for i, (n, v, wi) in enumerate(zip(self.idloss.names, L, w)):
            rec[f"cos_{n}"], rec[f"w_{n}"] = v.item(), float(wi)
            if Lf:
                rec[f"feat_{n}"] = Lf[i].item()
            if "var" in self.dlw.last:  # to judge α against the size of σ² and Δ
                rec[f"dlwvar_{n}"], rec[f"dlwdelta_{n}"] = self.dlw.last["var"][i], self.dlw.last["delta"][i]
        return rec

    # -- validation -----------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> dict:
        import cv2

        self.G.eval()
        vs = self.val_set.crops
        losses = [(self.idloss, n) for n in self.idloss.names]
        if self.val_embedder is not None:
            losses += [(self.val_embedder, n) for n in self.val_embedder.names]
        sums: dict[str, float] = {}
        n_tot, mse_tot, ssim_tot = 0, 0.0, 0.0
        for b in range(0, len(vs), 16):
            x = torch.from_numpy(np.array(vs[b:b + 16])).to(self.device).permute(0, 3, 1, 2).float()
            out = self.G(x).round().clamp(0, 255)  # as saved: uint8
            u8 = out.permute(0, 2, 3, 1).to(torch.uint8).cpu().numpy()
            jp = np.stack([cv2.imdecode(cv2.imencode(".jpg", np.ascontiguousarray(c[:, :, ::-1]),
                                                     [cv2.IMWRITE_JPEG_QUALITY, 75])[1], 1)[:, :, ::-1] for c in u8])
            xj = torch.from_numpy(np.ascontiguousarray(jp)).to(self.device).permute(0, 3, 1, 2).float()
            for il, n in losses:
                i = il.names.index(n)
                key = (n, b)
                if key not in self._val_refs:
                    self._val_refs[key] = il.embed(i, x).cpu()
                ref = self._val_refs[key].to(self.device)
                sums[f"val_cos_{n}"] = sums.get(f"val_cos_{n}", 0.0) + float((il.embed(i, out) * ref).sum())
                sums[f"val_cos_{n}_jpeg75"] = sums.get(f"val_cos_{n}_jpeg75", 0.0) + float((il.embed(i, xj) * ref).sum())
            mse_tot += float((out - x).pow(2).mean(dim=(1, 2, 3)).sum())
            ssim_tot += float(ssim(out, x).sum())
            n_tot += len(x)
        rec = {k: v / n_tot for k, v in sums.items()}
        rec["val_psnr"] = _psnr(mse_tot / n_tot)
        rec["val_ssim"] = ssim_tot / n_tot
        wb = [rec[f"val_cos_{n}"] for n in self.idloss.names] + [rec[f"val_cos_{n}_jpeg75"] for n in self.idloss.names]
        # Model selection on white-box numbers only: faceres is reported, never optimised for.
        rec["val_score"] = float(np.mean(wb))
        return rec

    # -- loop -----------------------------------------------------------------------------
    def _log(self, rec: dict) -> None:
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")

    def _on_val(self, rec: dict) -> None:
        self._log({"step": self.step, "kind": "val", **rec})
        print(f"[val] step {self.step} " + " ".join(f"{k[4:]}={v:.3f}" for k, v in rec.items()), flush=True)
        if rec["val_score"] < self.best:
            self.best = rec["val_score"]
            self.save("best.pt")
            save_network(self.G, self.out / "best.safetensors", {"step": self.step, **rec})

    def run(self) -> None:
        cfg = self.cfg
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "_stop", True))
        t_start, times, acc, n_acc = time.time(), [], {}, 0
        if self.step == 0:
            print(f"[train] G params {count_params(self.G)}, {count_flops(self.G, cfg.network.size) / 1e9:.3f} GFLOP/face; "
                  f"{len(self.train_set)} train / {len(self.val_set)} val crops; device {self.device}", flush=True)
            self._on_val(self.validate())
        while self.step < cfg.steps and not self._stop:
            t0 = time.time()
            rec = self.train_step()
            self.step += 1
            times.append(time.time() - t0)
            for k, v in rec.items():
                acc[k] = acc.get(k, 0.0) + v
            n_acc += 1  # not step % log_every: a resumed run starts mid-window
            stopping = timed_out = cfg.time_limit_s is not None and time.time() - t_start > cfg.time_limit_s
            stopping = stopping or self._stop or (self.stop_at is not None and self.step >= self.stop_at)
            if self.step % cfg.log_every == 0 or self.step == cfg.steps or stopping:
                avg = {k: v / n_acc for k, v in acc.items()}
                sps = float(np.median(times[-50:]))
                self._log({"step": self.step, "kind": "train", "epoch": self.step // self.steps_per_epoch,
                           "sec_per_step": sps, "lr": self._lr(self.step, cfg.lr), **avg})
                cos = " ".join(f"{k[4:]}={avg[k]:.3f}" for k in avg if k.startswith("cos_"))
                wts = " ".join(f"{avg[k]:.2f}" for k in avg if k.startswith("w_"))
                print(f"[train] step {self.step}/{cfg.steps} loss={avg['loss']:.4f} {cos} w=[{wts}] "
                      f"psnr={avg['psnr']:.1f} ssim={avg['ssim']:.4f} {sps:.2f}s/step "
                      f"ETA {sps * (cfg.steps - self.step) / 60:.1f} min", flush=True)
                acc, n_acc = {}, 0
            if self.step % cfg.val_every == 0 or self.step == cfg.steps or stopping:
                self._on_val(self.validate())
            if self.step % cfg.ckpt_every == 0 or self.step == cfg.steps or stopping:
                self.save("latest.pt")
            if timed_out:
                print(f"[train] time limit {cfg.time_limit_s}s reached at step {self.step}; resumable", flush=True)
            if stopping:
                print(f"[train] stopped at step {self.step}; rerun the same command to continue", flush=True)
                break
        self.save("latest.pt")
        save_network(self.G, self.out / "last.safetensors", {"step": self.step})


def _truncate_log(path: Path, step: int) -> None:
    """After a crash, drop log records newer than the checkpoint we resume from."""
    if path.is_file():
        keep = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln).get("step", 0) <= step]
        path.write_text("".join(ln + "\n" for ln in keep))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="run folder (created; resumed if it holds latest.pt)")
    ap.add_argument("--config", help="TrainConfig JSON (default: built-in defaults)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. dlw.alpha=3")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--time-limit", type=float, help="seconds; stop cleanly (resumable) after it")
    ap.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint in --out")
    ap.add_argument("--fork-from", help="start a new --out from another run's checkpoint (weights, optimiser, "
                    "step) with this command's config, e.g. a lower PSNR floor; recorded in fork.json")
    ap.add_argument("--init-from", help="start a new --out with G's weights from a .safetensors file of a "
                    "related architecture (e.g. v1 → luminance-only); recorded in init.json")
    ap.add_argument("--stop-at", type=int, help="pause (validate, checkpoint) at this step without changing "
                    "the LR schedule of --steps; short ablations compare runs at equal steps this way")
    args = ap.parse_args(argv)
    try:
        cfg = apply_overrides(load_config(args.config), args.set)
        if args.steps is not None:
            cfg = replace(cfg, steps=args.steps)
        if args.time_limit is not None:
            cfg = replace(cfg, time_limit_s=args.time_limit)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        trainer = Trainer(cfg, out)
        trainer.stop_at = args.stop_at
        latest = out / "latest.pt"
        if args.fork_from and not latest.is_file():
            changed = trainer.load(Path(args.fork_from), fork=True)
            (out / "fork.json").write_text(json.dumps({"from": args.fork_from, "step": trainer.step,
                                                       "changed": changed}, indent=2))
            print(f"[train] forked from {args.fork_from} at step {trainer.step}; changed {changed}", flush=True)
        elif args.init_from and not latest.is_file():
            done = trainer.init_from(Path(args.init_from))
            (out / "init.json").write_text(json.dumps({"from": args.init_from, **done}, indent=2))
            print(f"[train] G initialised from {args.init_from}: {done['copied']} tensors copied, "
                  f"adapted {done['adapted']}, fresh {done['fresh']}", flush=True)
        elif latest.is_file() and not args.fresh:
            trainer.load(latest)
            _truncate_log(out / "metrics.jsonl", trainer.step)
            print(f"[train] resumed from {latest} at step {trainer.step}", flush=True)
        elif args.fresh:
            (out / "metrics.jsonl").unlink(missing_ok=True)
        cfg.save(out / "config.json")
        trainer.run()
    except NullSwapError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

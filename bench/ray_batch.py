"""Ray Data batch throughput (1 and 2 workers) beside the single-process CLI, same photos.

    python3 bench/ray_batch.py --photos 600 --out docs/results/ray_batch.json

Copies the first photo of the first N LFW identities into a temporary tree (one folder per
person; nothing is written to the repository), then cloaks it
  1. with the plain CLI (`python -m nullswap_sdk.cli cloak IN -o OUT -q`), end to end;
  2. with `--ray local --workers 1|2`, end to end (starts a Ray cluster each time);
  3. inside one running 2-CPU Ray cluster with `run_batch`, 1 and 2 workers: total time
     (actor start and model load included) and steady rate (first to last finished photo).
All outputs are checked byte-identical across the runs. Load average is recorded: the 2-core
box is shared. Per-stage CPU costs (the projection's inputs): bench/stage_costs.py.
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _record import emit  # bench/ is on sys.path when a script here runs

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NULLSWAP_DATA_DIR", ROOT.parent / "shared" / "data"))


def _tree(root: Path, n: int) -> list[Path]:
    people = sorted(p for p in (DATA / "lfw").iterdir() if p.is_dir())[:n]
    if len(people) < n:
        sys.exit(f"need {n} LFW identities under {DATA / 'lfw'}, found {len(people)}")
    for person in people:
        (root / person.name).mkdir(parents=True)
        shutil.copy(sorted(person.glob("*.jpg"))[0], root / person.name)
    return sorted(root.rglob("*.jpg"))


def _cli(args: list[str]) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "nullswap_sdk.cli", "cloak", *args, "-q"], env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"cloak {args} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return {"wall_s": round(wall, 2), "cpu_s_cli_process": round(after.ru_utime + after.ru_stime
                                                                - before.ru_utime - before.ru_stime, 2)}


def _same(a: Path, b: Path) -> bool:
    fa = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    fb = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    return fa == fb and all((a / f).read_bytes() == (b / f).read_bytes() for f in fa)


def _in_cluster(src: Path, out: Path, workers: int) -> dict:
    from nullswap_sdk.distributed import BatchConfig
    from nullswap_sdk.distributed.plan import filesystem, list_images, mirror_items
    from nullswap_sdk.distributed.run import run_batch

    fs, root = filesystem(str(src))
    items = mirror_items(list_images(fs, root)[0], root, str(out), same_fs=True, in_uri=str(src))
    stamps: list[float] = []
    report = run_batch(items, BatchConfig(workers=workers), on_outcome=lambda o: stamps.append(time.perf_counter()))
    assert report.ok and len(stamps) == len(items), report.summary()
    # Ray Data hands results back per finished block (batch_size photos): rate over whole blocks.
    steady = (len(stamps) - 8) / (stamps[-1] - stamps[7]) if stamps[-1] > stamps[7] else float("nan")
    return {"total_s": round(report.seconds, 2), "photos_per_s_total": round(len(items) / report.seconds, 1),
            "photos_per_s_steady": round(steady, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photos", type=int, default=600)
    p.add_argument("--out", help="write the JSON record here")
    args = p.parse_args()
    rec: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "photos": args.photos,
                 "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, no GPU",
                 "python": platform.python_version(), "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _tree(tmp / "in", args.photos)
        rec["cli_single"] = _cli([str(tmp / "in"), "-o", str(tmp / "single")])
        for w in (1, 2):
            rec[f"cli_ray_{w}_workers"] = _cli(["--ray", "local", "--workers", str(w), str(tmp / "in"),
                                                "-o", str(tmp / f"ray{w}")])
            rec[f"cli_ray_{w}_workers"]["identical_to_single"] = _same(tmp / "single", tmp / f"ray{w}")
        import ray

        from nullswap_sdk.distributed import connect

        connect("local", num_cpus=2)
        try:
            for w in (1, 2):
                rec[f"cluster_{w}_workers"] = _in_cluster(tmp / "in", tmp / f"c{w}", w)
                rec[f"cluster_{w}_workers"]["identical_to_single"] = _same(tmp / "single", tmp / f"c{w}")
        finally:
            ray.shutdown()
        for k in ("cli_single", "cli_ray_1_workers", "cli_ray_2_workers"):
            rec[k]["photos_per_s"] = round(args.photos / rec[k]["wall_s"], 1)
    emit(rec, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

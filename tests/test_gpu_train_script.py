"""training/gpu_train.sh, the one-call GPU recipe, run for real on the CPU in its TINY mode
(2 steps, tiny batch, 2-probe lab) so that the script, the recipe file and the lab cannot rot."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nullswap_sdk.errors import NullSwapError
from nullswap_sdk.recognisers.registry import get_recogniser_config, verified_file

ROOT = Path(__file__).resolve().parents[1]


def _file(name: str) -> Path:
    try:
        return verified_file(get_recogniser_config(name))
    except NullSwapError as e:
        pytest.skip(f"recogniser {name} not available: {e.message}")


@pytest.mark.slow
def test_gpu_train_script_tiny_run(tmp_path):
    from training.data import CropSet, write_pack

    gpu = tmp_path / "gpu"
    gpu.mkdir()
    for name in ("sface", "mobilefacenet"):
        shutil.copy(_file(name), gpu / f"{name}.onnx")
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("val", 2)):
        crops = rng.integers(0, 256, (n, 128, 128, 3), dtype=np.uint8)
        write_pack(CropSet(crops, [f"{split}{i}" for i in range(n)], [f"id{i}" for i in range(n)]),
                   gpu / f"crops_{split}.npz")
    out = tmp_path / "out"
    env = {**os.environ, "GPU_DIR": str(gpu), "OUT": str(out), "TINY": "1", "OMP_NUM_THREADS": "1",
           "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    r = subprocess.run(["bash", "training/gpu_train.sh", "run"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for f in ("best.safetensors", "last.safetensors", "latest.pt", "metrics.jsonl", "config.json", "init.json",
              "train.log"):
        assert (out / f).is_file(), f
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["network"]["luminance"] is True and cfg["steps"] == 2  # the recipe file, tiny overrides
    assert json.loads((out / "init.json").read_text())["copied"] > 200  # started from the shipped weights
    steps = [json.loads(ln)["step"] for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 2
    report = out / "lab" / "trained.json"
    if (out / "lab_skipped.txt").is_file():
        assert not report.exists()
        pytest.skip("lab skipped: no detector package or research data here")
    res = json.loads(report.read_text())
    assert res["probes"] == 2 and res["gallery"] >= 10
    assert "psnr_face" in res["quality"] and res["blackbox"], res
    # trained on SFace + MobileFaceNet only: FaceNet is measured as black-box, SFace is not
    assert "facenet" in res["blackbox"] and "sface" not in res["blackbox"], sorted(res["blackbox"])


def test_the_gpu_run_fits_the_device_tools_transfer_limit():
    """The device tool sends tracked files + untracked ones + the carried pack, at most 64 MiB in
    all. `prepare` checks the sum on the day; this keeps the tracked tree from creeping up to
    the point where a run with the default pack (5000 crops ≈ 28 MiB + SFace and MobileFaceNet
    16 MiB, measured 2026-12-03) could never travel."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    tracked = sum((ROOT / f).stat().st_size for f in files.decode().split("\0") if f and (ROOT / f).is_file())
    script = (ROOT / "training" / "gpu_train.sh").read_text()
    assert "CROPS=${CROPS:-5000}" in script  # the budget below is for this pack
    pack_budget, spare = 46 << 20, 2 << 20
    assert tracked <= (64 << 20) - pack_budget - spare, (
        f"tracked files {tracked / 2 ** 20:.1f} MiB: with the GPU pack that is over the device tool's "
        "64 MiB; keep big checkpoints out of the tree (git history keeps them)")

"""GPU driver for bench/gpu_check.sh: runs the Triton kernel tests, then times the network.

    python3 bench/gpu_bench.py test  --out DIR          # tests/test_kernels_triton.py on CUDA
    python3 bench/gpu_bench.py bench --out DIR          # eager / torch.compile / Triton / CUDA graphs
    TRITON_INTERPRET=1 python3 bench/gpu_bench.py bench --out /tmp/x --device cpu --tiny --no-compile  # dry run

Results go to DIR/gpu_bench.json (rewritten after every measurement, so a timeout keeps what
was measured) and DIR/gpu_bench.md. Runs from a bare checkout: when nullswap_sdk is not
installed, ``bootstrap`` maps kernels/ to nullswap_sdk.kernels and, if cv2 or another
dependency of nullswap_sdk.network's __init__ is missing, loads network/model.py alone.
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import platform
import statistics
import sys
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGETS = {"b1_graph_ms_per_face": 0.5, "b64_faces_per_s": 20000, "block_triton_vs_compile": 1.5}


def bootstrap() -> list[str]:
    """Make nullswap_sdk.kernels and nullswap_sdk.network.model importable from this checkout."""
    notes = []
    sys.path.insert(0, str(REPO))
    import nullswap_sdk

    try:
        import nullswap_sdk.kernels as k
        ours = Path(k.__file__).resolve().parent == REPO / "kernels"
    except ImportError:
        ours = False
    if not ours:  # not installed, or installed from another checkout: use this one's kernels/
        for name in [m for m in sys.modules if m.startswith("nullswap_sdk.kernels")]:
            del sys.modules[name]
        spec = importlib.util.spec_from_file_location("nullswap_sdk.kernels", REPO / "kernels" / "__init__.py",
                                                      submodule_search_locations=[str(REPO / "kernels")])
        mod = importlib.util.module_from_spec(spec)
        sys.modules["nullswap_sdk.kernels"] = mod
        spec.loader.exec_module(mod)
        nullswap_sdk.kernels = mod
        notes.append("kernels/ mapped to nullswap_sdk.kernels by path (package not installed from this checkout)")
    try:
        import nullswap_sdk.network.model  # noqa: F401
    except ImportError as e:  # e.g. no cv2 on the GPU box: skip the package __init__, load model.py
        sys.modules.pop("nullswap_sdk.network", None)
        pkg = types.ModuleType("nullswap_sdk.network")
        pkg.__path__ = [str(REPO / "nullswap_sdk" / "network")]
        sys.modules["nullswap_sdk.network"] = pkg
        import nullswap_sdk.network.model  # noqa: F401
        notes.append(f"nullswap_sdk.network.__init__ not importable ({e}); loaded network/model.py alone")
    return notes


def run_tests(out: Path) -> int:
    import pytest

    return int(pytest.main(["-q", "-p", "no:cacheprovider", "-rs", str(REPO / "tests" / "test_kernels_triton.py"),
                            f"--junitxml={out / 'test_kernels_triton.xml'}"]))


# ---------------------------------------------------------------- timing
def _sync(dev: str) -> None:
    import torch

    if dev == "cuda":
        torch.cuda.synchronize()


def time_call(fn, dev: str, budget_s: float = 0.4, min_reps: int = 5, max_reps: int = 200) -> dict:
    """Median / IQR wall time of one synchronised call, after warm-up."""
    for _ in range(3):
        fn()
    _sync(dev)
    times, t_end = [], time.perf_counter() + budget_s
    while len(times) < max_reps and (len(times) < min_reps or time.perf_counter() < t_end):
        t0 = time.perf_counter()
        fn()
        _sync(dev)
        times.append(time.perf_counter() - t0)
    q = statistics.quantiles(times, n=4) if len(times) >= 4 else [min(times), 0, max(times)]
    return {"median_ms": statistics.median(times) * 1e3, "iqr_ms": (q[2] - q[0]) * 1e3, "reps": len(times)}


def graphed(fn, dev: str):
    """Capture ``fn()`` (static inputs closed over) in a CUDA graph; returns a replaying callable."""
    import torch

    if dev != "cuda":
        return None
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = fn()
    return lambda: (g.replay(), out)[1]


# ---------------------------------------------------------------- benchmark
def run_bench(args, out: Path, notes: list[str]) -> dict:
    import torch

    from nullswap_sdk.kernels.triton_net import TritonNullSwapNet, cloaking_reference
    from nullswap_sdk.network.model import NetworkConfig, NullSwapNet, count_flops

    dev = args.device
    cfg = NetworkConfig(size=16, width=6, tail_width=5, id_blocks=1, pert_blocks=0, feat_blocks=1) if args.tiny \
        else NetworkConfig()
    torch.manual_seed(0)
    model = NullSwapNet(cfg).eval().to(dev)
    res = {"date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "notes": notes,
           "host": platform.node(), "python": platform.python_version(), "torch": torch.__version__,
           "device": torch.cuda.get_device_name() if dev == "cuda" else platform.processor() or "cpu",
           "config": json.loads(cfg.to_json()), "gflop_per_face": count_flops(model, cfg.size) / 1e9,
           "whole_net": {}, "cloaking_block": {}, "accuracy": {}, "targets": {}, "errors": []}
    try:
        import triton

        res["triton"] = triton.__version__
    except ImportError:
        res["triton"] = None
    def save():  # after every measurement: a timeout keeps what was measured, in both formats
        res["targets"] = check_targets(res)
        (out / "gpu_bench.json").write_text(json.dumps(res, indent=1))
        write_markdown(res, out, args.test_rc)

    batches = [1, 2] if args.tiny else [1, 8, 64]
    S, q, w = cfg.size, cfg.size // 4, cfg.width

    def measure(section: str, name: str, B: int, make):
        key = f"{name}@b{B}"
        try:
            fn = make()
            if fn is None:
                return
            r = time_call(fn, dev, budget_s=args.budget)
            r["faces_per_s"] = B / (r["median_ms"] / 1e3)
            r["ms_per_face"] = r["median_ms"] / B
            res[section][key] = r
            print(f"{section:15s} {key:28s} {r['median_ms']:9.3f} ms  {r['faces_per_s']:10.0f} faces/s", flush=True)
        except Exception as e:  # noqa: BLE001 - record and go on: one failing variant must not lose the rest
            res["errors"].append(f"{section}/{key}: {type(e).__name__}: {e}")
            print(f"{section:15s} {key:28s} FAILED {type(e).__name__}: {e}", flush=True)
        save()

    nets = {"triton_fp32": TritonNullSwapNet(model, cuda_graphs=False),
            "triton_fp16": TritonNullSwapNet(model, cuda_graphs=False, act_dtype=torch.float16)}
    graph_nets = {"triton_fp32+graphs": TritonNullSwapNet(model, cuda_graphs=True),
                  "triton_fp16+graphs": TritonNullSwapNet(model, cuda_graphs=True, act_dtype=torch.float16)}
    torch.set_grad_enabled(False)
    tf32_default = torch.backends.cudnn.allow_tf32
    res["cudnn_allow_tf32_in_timings"] = tf32_default
    inputs = {}
    for B in batches:
        x = torch.rand(B, 3, S, S, device=dev) * 255
        inputs[B] = (x, torch.randn(B, w, q, q, device=dev), torch.randn(B, w, q, q, device=dev))

    # Phase 1, no compiler: eager, CUDA graphs and Triton at every batch (the targets need these).
    for B in batches:
        x, pert, feat = inputs[B]
        try:
            torch.backends.cudnn.allow_tf32 = False  # accuracy against an IEEE-fp32 reference; timings use defaults
            ref = model.perturbation(x)
            for name, net in {**nets, **(graph_nets if dev == "cuda" else {})}.items():
                res["accuracy"][f"{name}@b{B}"] = float((net.perturbation(x) - ref).abs().max())
            res["accuracy"][f"cloaking_block_triton_fp32@b{B}"] = float(
                (nets["triton_fp32"].cloaking_block(pert, feat, x) - cloaking_reference(model, pert, feat, x)).abs().max())
        except Exception as e:  # noqa: BLE001
            res["errors"].append(f"accuracy@b{B}: {type(e).__name__}: {e}")
        finally:
            torch.backends.cudnn.allow_tf32 = tf32_default
        measure("whole_net", "eager", B, lambda: (lambda: model.perturbation(x)))
        measure("whole_net", "eager+graphs", B, lambda: graphed(lambda: model.perturbation(x), dev))
        for name, net in {**nets, **(graph_nets if dev == "cuda" else {})}.items():
            measure("whole_net", name, B, lambda net=net: (lambda: net.perturbation(x)))
        measure("cloaking_block", "eager", B, lambda: (lambda: cloaking_reference(model, pert, feat, x)))
        measure("cloaking_block", "eager+graphs", B, lambda: graphed(lambda: cloaking_reference(model, pert, feat, x), dev))
        for name in ("triton_fp32", "triton_fp16"):
            measure("cloaking_block", name, B, lambda n=name: (lambda: nets[n].cloaking_block(pert, feat, x)))
            measure("cloaking_block", name + "+graphs", B,
                    lambda n=name: graphed(lambda: nets[n].cloaking_block(pert, feat, x), dev))

    # Phase 2, torch.compile (slow to build: a timeout here still leaves phase 1 complete).
    if not args.no_compile:
        compiled = torch.compile(model, dynamic=False)
        block_c = torch.compile(cloaking_reference, dynamic=False)
        for B in batches:
            x, pert, feat = inputs[B]
            measure("cloaking_block", "torch.compile", B, lambda: (lambda: block_c(model, pert, feat, x)))
            measure("cloaking_block", "torch.compile+graphs", B,
                    lambda: graphed(lambda: block_c(model, pert, feat, x), dev))
            measure("whole_net", "torch.compile", B, lambda: (lambda: compiled(x) - x))
            measure("whole_net", "torch.compile+graphs", B, lambda: graphed(lambda: compiled(x) - x, dev))
    save()
    return res


def _best(section: dict, names, B: int, field: str, pick=min):
    vals = [section[f"{n}@b{B}"][field] for n in names if f"{n}@b{B}" in section]
    return pick(vals) if vals else None


def check_targets(res: dict) -> dict:
    wn, cb, t = res["whole_net"], res["cloaking_block"], {}
    g = _best(wn, ["triton_fp32+graphs", "triton_fp16+graphs"], 1, "ms_per_face")
    t["b1_graph_ms_per_face"] = {"value": g, "target": f"<= {TARGETS['b1_graph_ms_per_face']}",
                                 "met": g is not None and g <= TARGETS["b1_graph_ms_per_face"]}
    f = _best(wn, [n.split("@")[0] for n in wn if n.startswith("triton")], 64, "faces_per_s", max)
    t["b64_faces_per_s"] = {"value": f, "target": f">= {TARGETS['b64_faces_per_s']}",
                            "met": f is not None and f >= TARGETS["b64_faces_per_s"]}
    for B in (1, 8, 64):
        tri = _best(cb, ["triton_fp32", "triton_fp16", "triton_fp32+graphs", "triton_fp16+graphs"], B, "median_ms")
        comp = _best(cb, ["torch.compile", "torch.compile+graphs"], B, "median_ms")
        sp = comp / tri if tri and comp else None
        t[f"block_triton_vs_compile@b{B}"] = {"value": sp, "target": f">= {TARGETS['block_triton_vs_compile']}x",
                                              "met": sp is not None and sp >= TARGETS["block_triton_vs_compile"]}
    return t


def write_markdown(res: dict, out: Path, test_rc: int | None) -> None:
    lines = [f"# GPU check — {res['device']}, {res['date_utc']}", "",
             f"torch {res['torch']}, triton {res['triton']}, python {res['python']}; "
             f"{res['gflop_per_face']:.3f} GFLOP/face, config `{json.dumps(res['config'])}`", ""]
    if test_rc is not None:
        lines += [f"tests/test_kernels_triton.py on CUDA: exit code {test_rc} (0 = all passed)", ""]
    for sec in ("whole_net", "cloaking_block"):
        lines += [f"## {sec}", "", "| variant | batch | median ms | IQR ms | ms/face | faces/s |", "|---|---|---|---|---|---|"]
        for key, r in res[sec].items():
            name, b = key.rsplit("@b", 1)
            lines.append(f"| {name} | {b} | {r['median_ms']:.3f} | {r['iqr_ms']:.3f} | {r['ms_per_face']:.4f} | "
                         f"{r['faces_per_s']:.0f} |")
        lines.append("")
    lines += ["## targets", "", "| target | value | wanted | met |", "|---|---|---|---|"]
    for k, v in res["targets"].items():
        val = "n/a" if v["value"] is None else f"{v['value']:.3f}"
        lines.append(f"| {k} | {val} | {v['target']} | {'yes' if v['met'] else 'NO'} |")
    lines += ["", "## max |Triton − eager| (0–255 units)", ""]
    lines += [f"- {k}: {v:.2e}" for k, v in res["accuracy"].items()]
    if res["errors"] or res["notes"]:
        lines += ["", "## notes and errors", ""] + [f"- {e}" for e in res["notes"] + res["errors"]]
    (out / "gpu_bench.md").write_text("\n".join(lines) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["test", "bench"])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--tiny", action="store_true", help="tiny network (dry runs under TRITON_INTERPRET=1)")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile variants")
    ap.add_argument("--budget", type=float, default=0.4, help="seconds of timing per variant")
    ap.add_argument("--test-rc", type=int, default=None, help="exit code of the test step, for the report")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    notes = bootstrap()
    if args.what == "test":
        return run_tests(args.out)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device visible to torch", file=sys.stderr)
        return 2
    run_bench(args, args.out, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())

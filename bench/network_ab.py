"""Two shipped networks side by side: ONNX Runtime, 1 thread, batch 1, interleaved runs.

    OMP_NUM_THREADS=1 python3 bench/network_ab.py [--a nullswap-net-v1] [--b nullswap-net] [--runs 300]

Prints the median ms of each (after 10 % warm-up) and the ratio b / a: on a shared machine the
ratio of an interleaved run is the number to trust, not the absolute times.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--a", default="nullswap-net-v1")
    ap.add_argument("--b", default="nullswap-net")
    ap.add_argument("--runs", type=int, default=300)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from nullswap_sdk.models import shipped_weights
    from nullswap_sdk.network import NetworkCloaker

    nets = {n: NetworkCloaker(shipped_weights(n), backend="onnxruntime", threads=1) for n in (args.a, args.b)}
    size = nets[args.a].model.cfg.size
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)) * 255
    times = {n: [] for n in nets}
    for _ in range(args.runs):
        for n, c in nets.items():
            t0 = time.perf_counter()
            c.runner(x)
            times[n].append(time.perf_counter() - t0)
    skip = args.runs // 10
    med = {n: 1000 * float(np.median(v[skip:])) for n, v in times.items()}
    print({n: round(v, 2) for n, v in med.items()}, f"ratio {args.b}/{args.a} {med[args.b] / med[args.a]:.3f}",
          "load", tuple(round(v, 1) for v in os.getloadavg()))


if __name__ == "__main__":
    main()

"""The network alone on one face's working crop (128², the ≤ 10 ms target of issue 3) and on
batches, per CPU backend: torch (eager reference) vs ONNX Runtime (auto's CPU choice).

Figures and the machine they came from: bench/README.md, section "Backends".
"""
from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module", params=["onnxruntime", "torch"])
def runner(request):
    from nullswap_sdk.backends import create_runner
    from nullswap_sdk.models import sha256_file, shipped_weights
    from nullswap_sdk.network.cloaker import load_network

    path = shipped_weights("nullswap-net")
    model, _ = load_network(path)
    sel = create_runner(model, request.param, "cpu", weights_sha256=sha256_file(path), threads=1)
    yield sel.runner
    sel.runner.close()


@pytest.mark.parametrize("batch", [1, 8])
def test_network_per_face(benchmark, runner, batch):
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.integers(0, 256, (batch, 3, 128, 128)).astype(np.float32))
    out = benchmark.pedantic(runner, (x,), rounds=max(10, 80 // batch), warmup_rounds=2)
    assert out.shape == x.shape and float(out.abs().max()) > 0
    benchmark.extra_info["backend"] = runner.backend
    benchmark.extra_info["per_face_ms"] = benchmark.stats.stats.median * 1e3 / batch

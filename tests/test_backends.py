"""Inference backends: selection (auto, explicit, fallback), cross-backend parity through
``NetworkCloaker``, the ONNX cache, session release. CUDA-only checks skip on a CPU machine."""
from __future__ import annotations

import gc
import logging
import threading
import weakref

import numpy as np
import onnx
import pytest
import torch

from nullswap_sdk import Cloaker
from nullswap_sdk.backends import create_runner
from nullswap_sdk.backends.onnx_cache import cached_onnx, onnx_cache_path
from nullswap_sdk.errors import BackendUnavailableError, ConfigError, ModelFormatError
from nullswap_sdk.export.onnx import PARITY_MIN_DB, delta_snr
from nullswap_sdk.network import NetworkCloaker, NetworkConfig, NullSwapNet, save_network

PARITY_DB = PARITY_MIN_DB  # on the perturbation itself (delta_snr), not the whole crop
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
cpu_only = pytest.mark.skipif(CUDA, reason="checks CPU-machine behaviour")


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NULLSWAP_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    net = NullSwapNet(NetworkConfig(width=8, tail_width=8))  # cloak256 crops at 128, small and fast
    with torch.no_grad():
        net.tail[-1].weight.mul_(10)
    return save_network(net, tmp_path_factory.mktemp("w") / "net.safetensors")


def _crops(b: int) -> np.ndarray:
    crops = (np.random.default_rng(b).random((b, 256, 256, 3)) * 255).astype(np.uint8)
    crops[0, :12] = 255  # saturated rows: the clamp to [0, 255] is part of the contract
    return crops


@cpu_only
def test_auto_picks_onnxruntime_on_cpu(weights):
    c = NetworkCloaker(weights)
    assert (c.backend, c.device, c.fallback_from) == ("onnxruntime", "cpu", None)
    assert c.runner.threads == 1  # explicit default: no oversubscription on shared machines
    assert repr(Cloaker(c)) == "Cloaker(model='nullswap-net', backend='onnxruntime', device='cpu')"
    assert c.describe()["backend"] == "onnxruntime"


@pytest.mark.parametrize("batch", [1, 3, 5])
def test_torch_and_onnxruntime_agree_on_crops(weights, batch):
    crops = _crops(batch)
    ref = NetworkCloaker(weights, backend="torch", device="cpu").perturb(crops)
    got = NetworkCloaker(weights, backend="onnxruntime", device="cpu", batch_size=2).perturb(crops)
    assert got.shape == crops.shape and got.dtype == np.float32
    assert np.abs(ref).max() > 1.0  # a real perturbation, not zeros on both sides
    assert delta_snr(got, ref) >= PARITY_DB
    cloaked = crops + got
    assert cloaked.min() >= 0 and cloaked.max() <= 255


def test_host_and_device_resize_paths_agree(weights):
    """GPU backends resize with torch on the device, host backends with OpenCV: same maths.
    (Run on the CPU here, the torch path is what a CUDA runner executes, minus the transfer.)"""
    c = NetworkCloaker(weights, backend="torch", device="cpu")
    crops = _crops(3)
    host, dev = c._run_host(crops), c._run_device(crops)
    assert np.abs(host).max() > 1.0 and _psnr(host, dev) >= 80.0


def test_backend_perturbation_is_deterministic(weights):
    c = NetworkCloaker(weights, backend="onnxruntime", device="cpu")
    crops = _crops(3)
    assert np.array_equal(c.perturb(crops), c.perturb(crops))


def test_threads_option_reaches_the_session(weights):
    assert NetworkCloaker(weights, backend="onnxruntime", device="cpu", threads=2).runner.threads == 2


@cpu_only
@pytest.mark.parametrize("backend", ["triton", "tensorrt"])
def test_gpu_backends_raise_a_typed_error_on_cpu(weights, backend):
    with pytest.raises(BackendUnavailableError, match="CUDA") as e:
        NetworkCloaker(weights, backend=backend)
    assert e.value.hint


@cpu_only
def test_available_backends_lists_what_runs_here():
    from nullswap_sdk.backends import available_backends
    from nullswap_sdk.cli.info import collect_info

    got = available_backends()
    assert got["onnxruntime@cpu"] == got["torch@cpu"] == "available"
    assert all("CUDA" in got[k] for k in ("torch@cuda", "onnxruntime@cuda", "tensorrt@cuda", "triton@cuda"))
    assert collect_info()["backends"] == got  # what `nullswap info` prints


@cpu_only
def test_cuda_device_without_gpu_is_a_typed_error(weights):
    with pytest.raises(BackendUnavailableError, match="CUDA"):
        NetworkCloaker(weights, backend="onnxruntime", device="cuda")


def test_bad_requests(weights):
    with pytest.raises(ConfigError, match="unknown backend"):
        NetworkCloaker(weights, backend="openvino")
    with pytest.raises(ConfigError, match="fp16"):
        NetworkCloaker(weights, backend="torch", device="cpu", precision="fp16")
    with pytest.raises(ConfigError, match="fp16"):  # auto does not hide a bad request
        NetworkCloaker(weights, device="cpu", precision="fp16")
    with pytest.raises(ConfigError, match="device"):
        NetworkCloaker(weights, device="tpu")


class _Unexportable(NullSwapNet):
    """Runs in torch, but its graph cannot be exported (no FFT in ONNX opset 17):
    a real failure of the onnxruntime backend, for the fallback path."""

    def perturbation(self, x: torch.Tensor) -> torch.Tensor:
        return super().perturbation(x) + 0.0 * torch.fft.rfft2(x).abs().mean()


def test_auto_falls_back_once_with_a_warning(caplog):
    net = _Unexportable(NetworkConfig(width=8, tail_width=8, size=64))
    with caplog.at_level(logging.WARNING, logger="nullswap_sdk.backends.select"):
        a = create_runner(net, "auto", "cpu")
        b = create_runner(net, "auto", "cpu")
    assert a.runner.backend == b.runner.backend == "torch"
    assert a.fallback_from == "onnxruntime" and "failed" in a.skipped["onnxruntime"]
    assert len([r for r in caplog.records if "falling back" in r.message]) == 1  # logged once
    with pytest.raises(ModelFormatError, match="ONNX"):  # explicit: no fallback
        create_runner(net, "onnxruntime", "cpu")


def test_repr_shows_the_fallback():
    c = NetworkCloaker(model=_Unexportable(NetworkConfig(width=8, tail_width=8)), device="cpu")
    assert "backend='torch' (fallback from 'onnxruntime')" in repr(Cloaker(c))


def test_onnx_cache_is_keyed_by_weights_and_rebuilt_when_damaged(weights):
    from nullswap_sdk.models import sha256_file

    sha = sha256_file(weights)
    NetworkCloaker(weights, backend="onnxruntime", device="cpu")
    path = onnx_cache_path(sha, "fp32")
    assert path.is_file() and sha[:32] in path.name
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["nullswap.weights_sha256"] == sha
    path.write_bytes(b"truncated")
    model = NetworkCloaker(weights, backend="torch", device="cpu").model
    data = cached_onnx(model, sha, "fp32")
    assert path.read_bytes() == data and data != b"truncated"


def test_onnx_cache_survives_concurrent_writers(weights):
    """Several writers on a cold entry: every one gets a valid graph, one file, no temp files."""
    from nullswap_sdk.models import sha256_file

    sha, model = sha256_file(weights), NetworkCloaker(weights, backend="torch", device="cpu").model
    results: list[bytes] = []
    threads = [threading.Thread(target=lambda: results.append(cached_onnx(model, sha, "fp32"))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    path = onnx_cache_path(sha, "fp32")
    assert len(results) == 3 and len(set(results)) == 1 and path.read_bytes() == results[0]
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_close_releases_the_session(weights):
    c = Cloaker(NetworkCloaker(weights, backend="onnxruntime", device="cpu"))
    method = c.method
    session = weakref.ref(method.runner.session)
    c.close()
    gc.collect()
    assert session() is None and repr(c) == "Cloaker(closed)"
    with pytest.raises(ConfigError, match="closed"):
        method.perturb(_crops(1))
    c.close()  # twice is harmless


def test_from_pretrained_passes_backend_and_device(weights):
    c = Cloaker.from_pretrained(str(weights), backend="torch", device="cpu")
    assert "backend='torch'" in repr(c) and c.method.device == "cpu"
    with pytest.raises(ConfigError):  # PGD/noise are torch-only
        Cloaker.from_pretrained("noise", backend="onnxruntime")


# --- GPU (skipped on CPU machines) ---------------------------------------------------------

@needs_cuda
@pytest.mark.parametrize("backend", ["torch", "onnxruntime", "tensorrt", "triton"])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_gpu_backends_match_cpu_torch(weights, backend, precision):
    crops = _crops(5)
    ref = NetworkCloaker(weights, backend="torch", device="cpu").perturb(crops)
    try:
        c = NetworkCloaker(weights, backend=backend, device="cuda", precision=precision)
    except BackendUnavailableError as e:
        pytest.skip(f"{backend}/{precision} not available here: {e.message}")
    assert delta_snr(c.perturb(crops), ref) >= PARITY_DB


@needs_cuda
def test_auto_uses_the_gpu(weights):
    c = NetworkCloaker(weights)
    assert c.device.startswith("cuda") and c.backend in ("tensorrt", "triton", "torch", "onnxruntime")


def test_explicit_backend_that_fails_to_start_is_a_typed_error(monkeypatch):
    """A runtime error inside a backend's start-up (e.g. ONNX Runtime dropping a provider it
    cannot load) reaches an explicit caller as BackendUnavailableError with a hint."""
    from nullswap_sdk.backends import select
    from nullswap_sdk.errors import BackendUnavailableError

    def broken(name, *a, **kw):
        raise RuntimeError("onnxruntime could not load CUDAExecutionProvider")

    monkeypatch.setattr(select, "_build", broken)
    with pytest.raises(BackendUnavailableError, match="failed to start") as e:
        create_runner(NullSwapNet(NetworkConfig(width=8, tail_width=8, size=64)), "onnxruntime", "cpu")
    assert "auto" in e.value.hint

"""ONNX export (graph contract, BN folding, ORT parity, fp16 variant, CLI) and the TensorRT
builder's pure-Python parts. TensorRT itself is not installable here: its build test skips."""
from __future__ import annotations

import hashlib

import onnx
import pytest
import torch
from nullswap_sdk.export.onnx import (DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAME, PARITY_MIN_DB, check_parity, export_onnx,
                                      export_onnx_file)
from nullswap_sdk.export.tensorrt import EngineProfile, engine_cache_key, import_tensorrt

from nullswap_sdk.cli import main
from nullswap_sdk.errors import ConfigError, MissingDependencyError
from nullswap_sdk.network import NetworkConfig, NullSwapNet, save_network

SMALL = NetworkConfig(width=8, tail_width=8, size=64)
PARITY_DB = PARITY_MIN_DB  # delta_snr: measured on the perturbation itself


def _net(cfg: NetworkConfig = SMALL, seed: int = 0) -> NullSwapNet:
    """An eval-mode net with non-trivial BN statistics, so that a wrong BN fold shows."""
    torch.manual_seed(seed)
    net = NullSwapNet(cfg)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
        net.tail[-1].weight.mul_(10)  # a perturbation well above rounding noise
    return net.eval()


@pytest.fixture(scope="module")
def net() -> NullSwapNet:
    return _net()


@pytest.fixture(scope="module")
def fp32_graph(net) -> bytes:
    return export_onnx(net)


def test_graph_contract(net, fp32_graph):
    proto = onnx.load_from_string(fp32_graph)
    onnx.checker.check_model(proto, full_check=True)
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert (inp.name, out.name) == (INPUT_NAME, OUTPUT_NAME)
    for v in (inp, out):
        t = v.type.tensor_type
        assert t.elem_type == onnx.TensorProto.FLOAT
        dims = t.shape.dim
        assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, 64, 64]
    assert {o.domain: o.version for o in proto.opset_import}[""] == DEFAULT_OPSET
    ops = {n.op_type for n in proto.graph.node}
    assert "BatchNormalization" not in ops  # folded, the sub-pixel DeConv's BN included
    assert "RandomNormalLike" not in ops and "RandomNormal" not in ops  # eval mode: fixed noise
    meta = {p.key: p.value for p in proto.metadata_props}
    assert NetworkConfig.from_json(meta["nullswap.network_config"]) == SMALL


@pytest.fixture(scope="module")
def fp16_graph(net) -> bytes:
    return export_onnx(net, precision="fp16")


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("batch", [1, 3, 5])
def test_onnxruntime_parity_with_torch(net, fp32_graph, fp16_graph, precision, batch):
    # fp16 runs here on ORT's CPU provider: it checks the graph (casts, fp32 budget); GPU speed is separate.
    graph = fp32_graph if precision == "fp32" else fp16_graph
    assert check_parity(net, graph, batch=batch, seed=batch) >= PARITY_DB


def test_fp16_graph_has_half_weights_and_float_io(fp16_graph):
    proto = onnx.load_from_string(fp16_graph)
    conv_weights = {n.input[1] for n in proto.graph.node if n.op_type == "Conv"}
    types = {i.data_type for i in proto.graph.initializer if i.name in conv_weights}
    assert types == {onnx.TensorProto.FLOAT16}
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_parity_check_detects_another_network(net):
    other = export_onnx(_net(seed=1))
    assert check_parity(net, other) < PARITY_DB


def test_export_is_deterministic_and_leaves_the_model_alone(net, fp32_graph):
    x = torch.rand(2, 3, 64, 64) * 255
    with torch.no_grad():
        before = net.perturbation(x)
    assert export_onnx(net) == fp32_graph  # same bytes: fixed noise, no timestamps
    assert not net.training
    with torch.no_grad():
        assert torch.equal(net.perturbation(x), before)


def test_export_rejects_bad_arguments(net):
    with pytest.raises(ConfigError):
        export_onnx(net, precision="int8")
    with pytest.raises(ConfigError):
        export_onnx(torch.nn.Conv2d(3, 3, 1))


def test_export_at_an_opset_too_old_is_a_model_format_error(net):
    from nullswap_sdk.errors import ModelFormatError

    with pytest.raises(ModelFormatError, match="opset 5") as e:
        export_onnx(net, opset=5)
    assert str(DEFAULT_OPSET) in e.value.hint


def test_cli_export_onnx(tmp_path, capsys):
    weights = save_network(_net(NetworkConfig(width=8, tail_width=8)), tmp_path / "w.safetensors")
    out = tmp_path / "net.onnx"
    assert main(["export", "onnx", str(weights), "-o", str(out)]) == 0
    report = capsys.readouterr().out
    assert hashlib.sha256(out.read_bytes()).hexdigest() in report
    assert '"parity_delta_snr_db_vs_torch"' in report
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["nullswap.weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert main(["export", "onnx", str(weights), "-o", str(out)]) == 2  # exists: refused
    assert main(["export", "onnx", "not-a-model", "-o", str(tmp_path / "x.onnx")]) == 2


def test_export_onnx_file_is_atomic_and_loadable(net, tmp_path):
    path = export_onnx_file(net, tmp_path / "sub" / "n.onnx")
    assert path.is_file() and [p.name for p in path.parent.iterdir()] == ["n.onnx"]  # no temp files left
    onnx.checker.check_model(str(path))


# --- TensorRT: only what runs without TensorRT ------------------------------------------

SHA = "a" * 64


def test_engine_cache_key_changes_with_every_input():
    base = engine_cache_key(SHA, "10.3.0", "NVIDIA H100 80GB HBM3", "fp16")
    variants = [engine_cache_key("b" * 64, "10.3.0", "NVIDIA H100 80GB HBM3", "fp16"),
                engine_cache_key(SHA, "10.4.0", "NVIDIA H100 80GB HBM3", "fp16"),
                engine_cache_key(SHA, "10.3.0", "NVIDIA A100-SXM4-40GB", "fp16"),
                engine_cache_key(SHA, "10.3.0", "NVIDIA H100 80GB HBM3", "fp32"),
                engine_cache_key(SHA, "10.3.0", "NVIDIA H100 80GB HBM3", "fp16", EngineProfile(1, 8, 32))]
    assert len({base, *variants}) == 6
    assert base == engine_cache_key(SHA, "10.3.0", "NVIDIA H100 80GB HBM3", "fp16")
    assert all(c.isalnum() or c in "-." for c in base)  # safe as a file name
    assert "nvidia-h100-80gb-hbm3" in base


def test_engine_cache_key_and_profile_validate():
    with pytest.raises(ConfigError):
        engine_cache_key(SHA, "10.3.0", "gpu", "int8")
    with pytest.raises(ConfigError):
        engine_cache_key("not-a-sha", "10.3.0", "gpu", "fp16")
    with pytest.raises(ConfigError):
        EngineProfile(4, 2, 8)


def test_tensorrt_guard_names_the_fix():
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(MissingDependencyError, match="TensorRT") as e:
            import_tensorrt()
        assert "backend='onnxruntime'" in e.value.hint
    else:
        pytest.skip("tensorrt is installed: the guard has nothing to catch")


def test_tensorrt_engine_build(tmp_path, net):
    """Builds a real engine; runs only where TensorRT and a CUDA GPU exist (none here yet)."""
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (the builder is unverified)")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT engines need a CUDA GPU")
    from nullswap_sdk.export.tensorrt import build_engine

    onnx_path = export_onnx_file(net, tmp_path / "n.onnx")
    kw = {"precision": "fp16", "profile": EngineProfile(1, 2, 4), "cache_dir": tmp_path / "cache"}
    engine = build_engine(onnx_path, **kw)
    assert engine.stat().st_size > 0 and (tmp_path / "cache" / "timing.cache").is_file()
    assert build_engine(onnx_path, **kw) == engine  # cache hit
    trt = import_tensorrt()
    loaded = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(engine.read_bytes())
    assert loaded is not None and loaded.num_optimization_profiles == 1

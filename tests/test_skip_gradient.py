"""Skip gradient (recognisers/skipgrad.py): residual branches found in replayed ONNX graphs and
in the native Inception-ResNet, their gradient scaled by gamma, the forward pass untouched;
wired into PGD as ``skip_grad``."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nullswap_sdk.errors import ConfigError, ModelNotFoundError
from nullswap_sdk.recognisers.skipgrad import has_residuals, scale_grad, skip_gradient


def test_scale_grad_is_identity_forward_and_scales_backward():
    x = torch.randn(3, 5, requires_grad=True)
    y = scale_grad(x, 0.25)
    assert torch.equal(y, x)
    (y * torch.arange(5.0)).sum().backward()
    assert torch.allclose(x.grad, 0.25 * torch.arange(5.0).expand(3, 5))
    assert scale_grad(x, 1.0) is x  # off costs nothing


def _graph(nodes, inits):
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from nullswap_sdk.recognisers.onnx_torch import _build

    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 7, 5])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 7, 5])],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return _build(g, "synthetic")


def _residual_graph():
    from onnx import helper

    rng = np.random.default_rng(1)
    inits = {"w1": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
             "w2": rng.standard_normal((3, 4, 1, 1)).astype(np.float32)}
    return _graph([helper.make_node("Relu", ["x"], ["s"]),  # the skip: computed, not the graph input
                   helper.make_node("Conv", ["s", "w1"], ["a"], pads=[1, 1, 1, 1]),
                   helper.make_node("Relu", ["a"], ["b"]),
                   helper.make_node("Conv", ["b", "w2"], ["r"]),
                   helper.make_node("Add", ["r", "s"], ["y"])], inits)  # branch first: order must not matter


def _input_grad(m, x, v, gamma):
    x = x.clone().requires_grad_()
    with skip_gradient(m, gamma):
        y = m(x)
    (y * v).sum().backward()
    return y.detach(), x.grad


def test_one_residual_block_gradient_is_skip_plus_gamma_times_branch():
    """y = s + f(s), s = relu(x): dL/dx = relu'(x) * (v + gamma * J_f^T v). With gamma = 0 the
    branch is gone (the skip's share, by hand); in between the gradient is exactly linear."""
    m = _residual_graph()
    assert m._residual == {4: 0} and has_residuals(m)
    torch.manual_seed(0)
    x, v = torch.randn(2, 3, 7, 5), torch.randn(2, 3, 7, 5)
    y1, g1 = _input_grad(m, x, v, 1.0)
    y0, g0 = _input_grad(m, x, v, 0.0)
    y3, g3 = _input_grad(m, x, v, 0.3)
    assert torch.equal(y1, y0) and torch.equal(y1, y3)  # embeddings, hence cosines, unchanged
    assert torch.allclose(g0, v * (x > 0), atol=1e-6)
    assert torch.allclose(g3, 0.3 * g1 + 0.7 * g0, atol=1e-5)
    assert not torch.allclose(g1, g0, atol=1e-3)
    assert m.residual_grad == 1.0  # restored


def test_sums_that_are_not_residual_connections_are_left_alone():
    """A spelled-out PReLU adds two functions of one tensor; an Inception-style sum adds two
    convs of one input; neither feeds the other, so neither is a residual branch."""
    from onnx import helper

    rng = np.random.default_rng(2)
    inits = {"slope": np.full((1, 3, 1, 1), 0.125, np.float32),
             "w1": rng.standard_normal((3, 3, 3, 3)).astype(np.float32),
             "w2": rng.standard_normal((3, 3, 1, 1)).astype(np.float32)}
    prelu = _graph([helper.make_node("Relu", ["x"], ["p"]),
                    helper.make_node("Abs", ["x"], ["a"]),
                    helper.make_node("Sub", ["x", "a"], ["d"]),
                    helper.make_node("Mul", ["slope", "d"], ["n"]),
                    helper.make_node("Add", ["p", "n"], ["y"])], inits)
    assert prelu._residual == {} and not has_residuals(prelu)
    with pytest.raises(ConfigError, match="no residual"):
        with skip_gradient(prelu, 0.5):
            pass
    inception = _graph([helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
                        helper.make_node("Conv", ["x", "w2"], ["c2"]),
                        helper.make_node("Add", ["c1", "c2"], ["y"])], inits)
    assert inception._residual == {}


def test_gamma_outside_unit_interval_is_a_config_error():
    m = _residual_graph()
    for bad in (-0.1, 1.5):
        with pytest.raises(ConfigError, match="gamma"):
            with skip_gradient(m, bad):
                pass


def _load(name):
    from nullswap_sdk.recognisers.model import load_recogniser

    try:
        return load_recogniser(name)
    except ModelNotFoundError as e:
        pytest.skip(e.message)


def test_real_surrogates_residual_structure():
    """SFace is a plain conv stack; FaceNet's Inception-ResNet blocks are residual and their
    branch gradient moves the input gradient while the embedding stays bit-identical."""
    assert not has_residuals(_load("sface"))
    fn = _load("facenet")
    assert has_residuals(fn)
    torch.manual_seed(0)
    x = torch.rand(1, 3, 160, 160) * 255
    v = torch.randn(1, 512)
    y1, g1 = _input_grad(fn, x, v, 1.0)
    y5, g5 = _input_grad(fn, x, v, 0.5)
    assert torch.equal(y1, y5)
    cos = float(torch.nn.functional.cosine_similarity(g1.flatten(), g5.flatten(), dim=0))
    assert 0.0 < cos < 0.999, cos


def test_pgd_skip_grad_is_validated_and_needs_a_residual_surrogate():
    from nullswap_sdk.cloakers.pgd import PGDCloaker, PGDConfig

    for bad in (0.0, 1.2):
        with pytest.raises(ConfigError, match="skip_grad"):
            PGDConfig(skip_grad=bad)
    _load("sface")
    with pytest.raises(ConfigError, match="residual"):
        PGDCloaker(PGDConfig(steps=1, recognisers=("sface",), skip_grad=0.5))
    _load("facenet")
    pgd = PGDCloaker(PGDConfig(steps=1, recognisers=("sface", "facenet"), skip_grad=0.5))
    assert pgd._skip == [1.0, 0.5]

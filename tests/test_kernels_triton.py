"""Triton Cloaking-Block kernels vs their PyTorch references, on odd shapes.

CPU: runs under TRITON_INTERPRET=1 (set by CI before anything imports triton); shapes stay
tiny because the interpreter is slow. CUDA: the same cases, compiled.
"""
from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed (Linux x86-64: pip install triton==3.6.0)")

DEV = "cuda" if torch.cuda.is_available() else "cpu"
if DEV == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no CUDA device and TRITON_INTERPRET is not 1 (set it before running pytest)",
                allow_module_level=True)

from nullswap_sdk.errors import ConfigError  # noqa: E402
from nullswap_sdk.kernels.triton_conv import conv2d_fused, conv2d_fused_reference  # noqa: E402
from nullswap_sdk.kernels.triton_finalize import finalize, finalize_reference  # noqa: E402
from nullswap_sdk.kernels.triton_net import TritonNullSwapNet, cloaking_reference  # noqa: E402
from nullswap_sdk.kernels.triton_se import se_gate, se_gate_reference  # noqa: E402
from nullswap_sdk.network.model import NetworkConfig, NullSwapNet  # noqa: E402

@pytest.fixture(autouse=True)
def _ieee_reference():
    """cuDNN/cuBLAS default to TF32 on Ampere+; the kernels' fp32 dots are IEEE: compare like with like."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


# dtype → (atol, rtol) on O(1) activations; fp16 stores round to ~1e-3 relative.
TOL = {torch.float32: (1e-4, 1e-4), torch.float16: (2e-2, 1e-2)}


def _rand(*shape, dtype=torch.float32, scale=1.0):
    return (torch.randn(*shape, generator=_GEN) * scale).to(DEV, dtype)


_GEN = torch.Generator().manual_seed(1234)

# (B, CA, CB, H, W, Cout, ksize, options)
CONV_CASES = [
    (2, 3, 0, 7, 9, 5, 3, {}),
    (1, 5, 3, 11, 6, 7, 3, {"a_affine": (0.7, 0.0), "relu_channels": 3}),  # γ-scaled concat
    (2, 4, 3, 5, 5, 6, 3, {"b_affine": (1 / 127.5, -1.0), "relu_channels": 6}),  # [h, xn] concat
    (2, 3, 0, 9, 7, 5, 1, {"pool": True, "block_p": 16}),  # 4 tiles of partial sums
    (1, 3, 0, 5, 7, 12, 3, {"shuffle": True, "relu_channels": 12}),
    (2, 6, 0, 6, 5, 8, 3, {"se": True, "shuffle": True, "relu_channels": 8}),
    (2, 4, 0, 9, 9, 3, 3, {"epilogue": "bound", "block_p": 32}),
    (1, 4, 0, 7, 9, 3, 3, {"epilogue": "mask"}),
    (2, 5, 0, 7, 7, 3, 3, {"epilogue": "bound_nosum"}),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"{c[0]}x{c[1]}+{c[2]}x{c[3]}x{c[4]}-{c[5]}k{c[6]}"
                         + "".join(f"-{k}" for k in c[7] if k != "block_p"))
def test_conv2d_fused_matches_reference(case, dtype):
    B, CA, CB, H, W, cout, k, opts = case
    opts = dict(opts)
    a = _rand(B, CA, H, W, dtype=dtype)
    kw = {key: opts[key] for key in ("a_affine", "b_affine", "relu_channels", "shuffle", "pool", "epilogue", "block_p")
          if key in opts}
    if CB:
        b = _rand(B, CB, H, W, scale=100.0) + 127.5 if "b_affine" in opts else _rand(B, CB, H, W, dtype=dtype)
        kw["b"] = b
    if opts.get("se"):
        kw["se"] = torch.rand(B, CA, generator=_GEN).to(DEV)
        wide = _rand(B, 2 * CA, H, W, dtype=dtype)  # skip as a channel slice, like the real block
        kw["skip"] = wide[:, CA:]
    if "epilogue" in opts:
        kw["mask"] = torch.rand(H, W, generator=_GEN).to(DEV)
        kw["eps"] = 6.0
    weight = _rand(cout, (CA + CB) * k * k, dtype=dtype, scale=0.3)
    bias = _rand(cout, scale=0.5)
    out, part = conv2d_fused(a, weight, bias, ksize=k, **kw)
    ref, sums = conv2d_fused_reference(a, weight, bias, ksize=k, **kw)
    atol, rtol = TOL[dtype]
    assert out.shape == ref.shape and out.dtype == ref.dtype
    torch.testing.assert_close(out.float(), ref.float(), atol=atol, rtol=rtol)
    if sums is not None:
        torch.testing.assert_close(part.sum(1), sums, atol=atol * H * W, rtol=rtol)
    else:
        assert part is None


def test_se_gate_matches_reference():
    B, C, hid, npt, hw = 3, 7, 5, 3, 37
    part = _rand(B, npt, C, scale=10.0)
    w1, b1, w2, b2 = _rand(hid, C), _rand(hid), _rand(C, hid), _rand(C)
    torch.testing.assert_close(se_gate(part, hw, w1, b1, w2, b2),
                               se_gate_reference(part.sum(1), hw, w1, b1, w2, b2), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("budget,floor", [("cap", 30.0), ("cap", 60.0), ("fixed", 40.0), ("none", None)])
@pytest.mark.parametrize("xdtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_finalize_matches_reference(budget, floor, xdtype):
    B, S = 2, 13  # 3·13² = 507: not a multiple of the block
    x = (torch.rand(B, 3, S, S, generator=_GEN) * 255).to(DEV, xdtype)
    x[0, 0, 0, :4] = torch.tensor([0.0, 255.0, 1.0, 254.0])  # clamp edges
    d = _rand(B, 3, S, S, scale=4.0)
    part = (d * d).reshape(B, 3, -1).sum(-1)[:, None, :].contiguous() if budget != "none" else None
    out = finalize(x, d, part, budget=budget, psnr_floor=floor, eps=8.0, block=128)
    ref = finalize_reference(x, d, None if part is None else part.sum((1, 2)), budget=budget, psnr_floor=floor, eps=8.0)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-5)
    assert ((x.float() + out) >= 0).all() and ((x.float() + out) <= 255).all()


def _net(budget: str, floor: float | None) -> NullSwapNet:
    """Tiny net with odd widths and non-trivial BN statistics, so the folding is exercised."""
    g = torch.Generator().manual_seed(7)
    cfg = NetworkConfig(size=16, width=6, tail_width=5, id_blocks=1, pert_blocks=0, feat_blocks=1,
                        budget=budget, psnr_floor=floor)
    m = NullSwapNet(cfg)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.copy_(torch.rand(mod.num_features, generator=g) - 0.5)
                mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
                mod.weight.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
                mod.bias.copy_(torch.rand(mod.num_features, generator=g) * 0.4 - 0.2)
        m.tail[-1].bias.copy_(torch.rand(3, generator=g) * 2 - 1)
        m.gamma.fill_(0.8)
    return m.eval().to(DEV)


@pytest.mark.parametrize("budget,floor", [("cap", 30.0), ("fixed", 42.0), ("cap", None)])
def test_triton_net_matches_model(budget, floor):
    m = _net(budget, floor)
    x = (torch.rand(3, 3, 16, 16, generator=_GEN) * 255).to(DEV)
    with torch.no_grad():
        ref = m.perturbation(x)
        xn = x / 127.5 - 1.0
        block_ref = cloaking_reference(m, m.noise(m.perturb_block(m.identity(xn))), m.features(xn), x)
    torch.testing.assert_close(block_ref, ref, atol=1e-4, rtol=0)  # the reference is the model
    out = TritonNullSwapNet(m, cuda_graphs=False).perturbation(x)
    assert out.dtype == torch.float32 and out.shape == x.shape
    torch.testing.assert_close(out, ref, atol=2e-3, rtol=0)  # 0–255 units
    assert ref.abs().max() > 0.5  # the comparison is not between two zero maps


def test_triton_net_fp16_activations():
    m = _net("cap", 30.0)
    x = (torch.rand(2, 3, 16, 16, generator=_GEN) * 255).to(DEV)
    with torch.no_grad():
        ref = m.perturbation(x)
    out = TritonNullSwapNet(m, cuda_graphs=False, act_dtype=torch.float16).perturbation(x)
    torch.testing.assert_close(out, ref, atol=0.05, rtol=0)


@pytest.mark.skipif(DEV != "cuda", reason="CUDA graphs need a GPU")
def test_cuda_graph_replay_matches_eager():
    m = _net("cap", 30.0)
    net, eager = TritonNullSwapNet(m), TritonNullSwapNet(m, cuda_graphs=False)
    for seed in (0, 1):  # second call replays the captured graph with new data
        x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(seed)).to(DEV) * 255
        torch.testing.assert_close(net.perturbation(x), eager.perturbation(x), atol=1e-5, rtol=0)


def test_launchers_reject_bad_inputs():
    a = _rand(1, 3, 5, 5)
    w, bias = _rand(4, 27), _rand(4)
    with pytest.raises(ConfigError, match="weight must be"):
        conv2d_fused(a, _rand(4, 26), bias)
    with pytest.raises(ConfigError, match="weight must be one of"):
        conv2d_fused(a, w.half(), bias)
    with pytest.raises(ConfigError, match="float32 or float16"):
        conv2d_fused(a.double(), w, bias)
    with pytest.raises(ConfigError, match="needs the feather mask"):
        conv2d_fused(a, w, bias, epilogue="bound")
    with pytest.raises(ConfigError, match="budget must be"):
        finalize(a[:, :3], a[:, :3], None, budget="soft", psnr_floor=40.0, eps=8.0)
    m = _net("cap", 30.0).train()
    with pytest.raises(ConfigError, match="training mode"):
        TritonNullSwapNet(m)
    with pytest.raises(ConfigError, match="expects"):
        TritonNullSwapNet(m.eval(), cuda_graphs=False).perturbation(_rand(1, 3, 15, 15))

"""The cloaking network: shapes, output bounds, determinism, size, weights round trip, and the
``CloakMethod`` wrapper. Small configs keep it fast; the default config is checked for size."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nullswap_sdk.cloakers.base import CloakMethod
from nullswap_sdk.errors import ConfigError, ModelFormatError, ModelNotFoundError
from nullswap_sdk.network import (NetworkCloaker, NetworkConfig, NullSwapNet, PatchDiscriminator, count_flops,
                                  count_params, load_network, save_network, working_template)

SMALL = NetworkConfig(width=8, tail_width=8, size=64, eps=6.0, psnr_floor=None)


def _x(b: int, s: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, s, s, generator=torch.Generator().manual_seed(seed)) * 255


@pytest.mark.parametrize("batch", [1, 3])
def test_shapes_and_bounds(batch):
    torch.manual_seed(0)
    net = NullSwapNet(SMALL)
    with torch.no_grad():  # a large last layer drives tanh into saturation: bounds must still hold
        net.tail[-1].weight.mul_(50)
    x = _x(batch, 64)
    x[:, :, :8] = 255.0  # saturated pixels: the clamp must keep the output in range
    for mode in (net.train, net.eval):
        mode()
        with torch.no_grad():
            y, d = net(x), net.raw_delta(x)
        assert y.shape == x.shape and y.dtype == torch.float32
        assert float(y.min()) >= 0 and float(y.max()) <= 255
        assert float(d.abs().max()) <= SMALL.eps + 1e-4
        assert float(d.abs().max()) > 0.5 * SMALL.eps  # saturated: the bound is what limits it
        # Feather: zero perturbation on the crop's outermost pixels.
        assert float(d[..., 0, :].abs().max()) < 0.05 * SMALL.eps


@pytest.mark.parametrize("budget", ["cap", "fixed"])
@pytest.mark.parametrize("gain", [0.01, 50.0])
def test_psnr_floor_and_linf_are_enforced(budget, gain):
    cfg = NetworkConfig(width=8, size=64, eps=8.0, psnr_floor=40.0, budget=budget)
    net = NullSwapNet(cfg).eval()
    with torch.no_grad():
        net.tail[-1].weight.mul_(gain)
        d = net.raw_delta(_x(2, 64))
    psnr = 10 * torch.log10(255.0**2 / d.pow(2).mean(dim=(1, 2, 3)))
    assert (psnr >= 40.0 - 1e-3).all() and float(d.abs().max()) <= 8.0 + 1e-4
    if budget == "fixed":  # spends nearly the whole budget whatever the raw output's scale
        assert (psnr < 41.5).all()  # (the smooth eps·tanh(z/eps) bound trims ~1 dB of peaks)


def test_eval_is_deterministic_and_train_is_not():
    net = NullSwapNet(SMALL)
    x = _x(2, 64)
    net.eval()
    with torch.no_grad():
        a, b = net(x), net(x)
    assert torch.equal(a, b)
    net.train()
    with torch.no_grad():  # fresh adaptive noise in training mode
        net.noise.beta.fill_(5.0)
        assert not torch.equal(net.perturbation(x), net.perturbation(x))


def test_rejects_wrong_input_shape():
    net = NullSwapNet(SMALL)
    with pytest.raises(ConfigError, match=r"\(B, 3, 64, 64\)"):
        net(_x(1, 32))
    with pytest.raises(ConfigError):
        NetworkConfig(size=30)


def test_default_size_is_real_time_class():
    net = NullSwapNet()
    params, flops = count_params(net), count_flops(net, net.cfg.size)
    # Sized for ≤ 10 ms per face on a 2-core CPU through ONNX Runtime (see the model docstring).
    assert 50_000 < params < 500_000
    assert flops < 0.3e9
    assert working_template(net.cfg).size == net.cfg.size


def test_discriminator_patch_map():
    d = PatchDiscriminator()
    out = d(_x(3, 64))
    assert out.shape == (3, 1, 8, 8)


def test_weights_round_trip_and_cloak_method(tmp_path):
    cfg = NetworkConfig(width=8, tail_width=8, size=128)  # cloak256 crops, working at 128
    net = NullSwapNet(cfg)
    with torch.no_grad():
        net.tail[-1].weight.mul_(20)
    path = save_network(net, tmp_path / "w.safetensors", {"steps": 5})
    loaded, meta = load_network(path)
    assert meta["steps"] == "5" and loaded.cfg == cfg
    cloaker = NetworkCloaker(path)
    assert isinstance(cloaker, CloakMethod) and cloaker.template == "cloak256"
    crops = (np.random.default_rng(0).random((3, 256, 256, 3)) * 255).astype(np.uint8)
    crops[0, :10] = 255
    d1 = cloaker.perturb(crops)
    assert d1.shape == crops.shape and d1.dtype == np.float32
    assert np.array_equal(d1, cloaker.perturb(crops))
    out = crops + d1
    assert out.min() >= 0 and out.max() <= 255
    assert np.abs(d1).max() <= cfg.eps + 1e-3 and np.abs(d1).max() > 0.5
    # The wrapper and the module agree on the working crop (the wrapper only resizes).
    ref = NetworkCloaker(model=loaded)
    assert np.allclose(ref.perturb(crops), d1, atol=1e-4)
    assert cloaker.describe()["trained"] == {"steps": "5"}
    with pytest.raises(ConfigError, match="uint8"):
        cloaker.perturb(crops.astype(np.float32))


def test_load_errors(tmp_path):
    with pytest.raises(ModelNotFoundError):
        load_network(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ModelFormatError):
        load_network(tmp_path / "other.safetensors")

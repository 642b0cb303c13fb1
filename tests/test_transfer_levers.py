"""Transfer levers (issue 10): luminance-only and texture-weighted perturbations in the network
and in PGD, the differentiable JPEG in PGD's EOT, and the texture weight itself."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nullswap_sdk.cloakers.texture import texture_weight
from nullswap_sdk.errors import ConfigError
from nullswap_sdk.network import NetworkConfig, NullSwapNet


def _face_like(b: int = 2, s: int = 64, seed: int = 0) -> torch.Tensor:
    """Flat left half (skin), textured right half (hair), mid-grey so no clamp bites."""
    g = torch.Generator().manual_seed(seed)
    x = torch.full((b, 3, s, s), 128.0)
    x[..., s // 2:] += torch.randn(b, 1, s, s - s // 2, generator=g) * 30
    return x.clamp(40, 215)


def test_texture_weight_moves_budget_to_texture():
    x = _face_like()
    w = texture_weight(x, power=1.0)
    assert w.shape == (2, 1, 64, 64)
    assert torch.allclose(w.mean(dim=(2, 3)), torch.ones(2), atol=0.15)  # same budget (up to the clip)
    flat, tex = w[..., 4:28].mean(), w[..., 36:60].mean()
    assert tex > 2 * flat and float(w.min()) >= 0.3 - 1e-6 and float(w.max()) <= 3.0 + 1e-6
    assert torch.equal(texture_weight(x, power=0.0), torch.ones_like(w))


@pytest.mark.parametrize("size", [32, 48])
def test_luminance_network_gives_one_delta_for_rgb(size):
    torch.manual_seed(0)
    net = NullSwapNet(NetworkConfig(size=size, width=8, tail_width=8, luminance=True, texture=1.0)).eval()
    assert net.tail[-1].out_channels == 1
    x = _face_like(3, size)
    with torch.no_grad():
        d = net.perturbation(x)
    assert d.shape == x.shape and float(d.abs().max()) > 0.01
    assert torch.allclose(d[:, 0], d[:, 1]) and torch.allclose(d[:, 1], d[:, 2])
    mse = d.pow(2).mean(dim=(1, 2, 3))
    assert (mse <= 255.0 ** 2 / 10 ** (42.0 / 10) * 1.001).all()  # the PSNR cap still holds


def test_texture_network_spends_less_on_flat_skin():
    torch.manual_seed(0)
    cfgs = [NetworkConfig(size=64, width=8, tail_width=8, psnr_floor=None, texture=t) for t in (0.0, 1.0)]
    nets = [NullSwapNet(c).eval() for c in cfgs]
    nets[1].load_state_dict(nets[0].state_dict())
    x = _face_like(2, 64)
    with torch.no_grad():
        flat, tex = nets[0].perturbation(x), nets[1].perturbation(x)
    ratio = lambda d: float(d[..., 8:28].abs().mean() / d[..., 36:56].abs().mean())  # noqa: E731
    assert ratio(tex) < 0.6 * ratio(flat)


def test_luminance_network_exports_to_onnx_with_parity():
    from nullswap_sdk.export.onnx import PARITY_MIN_DB, check_parity, export_onnx

    torch.manual_seed(0)
    net = NullSwapNet(NetworkConfig(size=32, width=8, tail_width=8, luminance=True, texture=1.0)).eval()
    assert check_parity(net, export_onnx(net)) >= PARITY_MIN_DB


def test_triton_kernels_refuse_variants_they_do_not_implement():
    from nullswap_sdk.backends import create_runner
    from nullswap_sdk.errors import BackendUnavailableError

    net = NullSwapNet(NetworkConfig(size=32, width=8, tail_width=8, luminance=True)).eval()
    with pytest.raises(BackendUnavailableError) as e:
        create_runner(net, "triton", "cuda")
    assert e.value.hint


@pytest.mark.parametrize("bad", [{"jpeg_p": 1.5}, {"jpeg_quality": (90, 50)}, {"texture": -1.0}, {"grad_blur": -1}])
def test_bad_levers_are_config_errors(bad):
    from nullswap_sdk.cloakers.pgd import PGDConfig

    with pytest.raises(ConfigError) as e:
        PGDConfig(**bad)
    assert e.value.hint
    with pytest.raises(ConfigError):
        NetworkConfig(texture=-1.0)


def test_pgd_luminance_and_jpeg_eot(lfw_rgb):
    from nullswap_sdk import Cloaker

    c = Cloaker.from_pretrained("pgd", recognisers=("sface",), steps=3, luminance=True, texture=1.0,
                                eot_samples=1, jpeg_p=1.0, psnr_floor=38.0, eps=12.0)
    out, (f,) = c.cloak(lfw_rgb, return_faces=True)
    d = out.astype(np.int16) - lfw_rgb
    assert f.linf > 0 and np.abs(d).max() > 0
    # One δ for R, G, B: channels differ only by rounding and where a channel is clipped.
    inner = (lfw_rgb > 20).all(2) & (lfw_rgb < 235).all(2)
    assert np.abs(d[..., 0] - d[..., 1])[inner].max() <= 1 and np.abs(d[..., 1] - d[..., 2])[inner].max() <= 1

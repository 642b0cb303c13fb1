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


def test_detail_texture_weight_ignores_shading():
    """Left: steep smooth shading (4 grey levels per px, as on the side of a nose); right: fine
    ±3 detail. Local std ranks the shading as more texture; the detail measure ranks it as flat."""
    h, w = 47, 61  # odd on purpose
    x = torch.full((1, 3, h, w), 128.0)
    x[..., : w // 2] = 40 + 4.0 * torch.arange(w // 2, dtype=torch.float32)
    ii, jj = torch.meshgrid(torch.arange(h), torch.arange(w - w // 2), indexing="ij")
    x[..., w // 2:] += 3.0 * (1 - 2 * ((ii + jj) % 2)).float()
    core = (slice(None), slice(None), slice(8, h - 8))
    std, det = texture_weight(x, radius=4), texture_weight(x, radius=4, detail=1.0)
    ramp, fine = (slice(8, w // 2 - 8), slice(w // 2 + 8, w - 8))
    assert std[core][..., ramp].mean() > 1.5 * std[core][..., fine].mean()
    assert det[core][..., fine].mean() > 1.5 * det[core][..., ramp].mean()
    assert float(det.min()) >= 0.3 - 1e-6 and float(det.max()) <= 3.0 + 1e-6
    # A geometric blend needs both: shading without fine detail gets nothing from it either.
    half = texture_weight(x, radius=4, detail=0.5)
    ratio = [float(w[core][..., fine].mean() / w[core][..., ramp].mean()) for w in (std, half, det)]
    assert ratio[0] < 1 < 1.5 < min(ratio[1:])
    with pytest.raises(ConfigError):
        texture_weight(x, detail=1.5)


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


@pytest.mark.parametrize("bad", [{"jpeg_p": 1.5}, {"jpeg_quality": (90, 50)}, {"texture": -1.0}, {"grad_blur": -1},
                                 {"texture_detail": 1.0}, {"texture": 1.0, "texture_detail": 1.5}])
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


def test_universal_map_starts_as_the_network_without_it_and_exports():
    from nullswap_sdk.export.onnx import PARITY_MIN_DB, check_parity, export_onnx

    torch.manual_seed(0)
    base = NullSwapNet(NetworkConfig(size=36, width=8, tail_width=8, luminance=True, texture=1.0)).eval()
    uni = NullSwapNet(NetworkConfig(size=36, width=8, tail_width=8, luminance=True, texture=1.0,
                                    universal=True)).eval()
    assert uni.universal.shape == (1, 1, 36, 36)
    missing = uni.load_state_dict(base.state_dict(), strict=False).missing_keys
    assert missing == ["universal"]  # what init_from leaves at its zero init
    x = _face_like(2, 36)
    with torch.no_grad():
        assert torch.equal(uni(x), base(x))
        uni.universal.copy_(torch.randn(1, 1, 36, 36) * 3)
        d = uni.perturbation(x)
    assert not torch.allclose(d, base.perturbation(x))
    assert (d.pow(2).mean(dim=(1, 2, 3)) <= 255.0 ** 2 / 10 ** (42.0 / 10) * 1.001).all()  # cap holds
    assert check_parity(uni, export_onnx(uni)) >= PARITY_MIN_DB


def test_coarse_branch_starts_as_the_network_without_it_and_exports():
    """The S/8 capacity branch: zero residual at init (a grown network is its parent, what
    ``Trainer.init_from`` relies on), live once its last conv moves; ONNX parity; bad sizes."""
    from nullswap_sdk.export.onnx import PARITY_MIN_DB, check_parity, export_onnx

    torch.manual_seed(0)
    kw = dict(size=40, width=8, tail_width=8, luminance=True, texture=1.0)
    base = NullSwapNet(NetworkConfig(**kw)).eval()
    grown = NullSwapNet(NetworkConfig(**kw, coarse_width=12, coarse_blocks=2)).eval()
    missing = grown.load_state_dict(base.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith("coarse.") for k in missing)
    x = _face_like(2, 40)
    with torch.no_grad():
        assert torch.equal(grown(x), base(x))
        grown.coarse[-1].weight.normal_(0, 0.5)
        d = grown.perturbation(x)
    assert not torch.allclose(d, base.perturbation(x))
    assert check_parity(grown, export_onnx(grown)) >= PARITY_MIN_DB
    for bad in (dict(coarse_width=7), dict(coarse_width=8, size=36), dict(coarse_width=8, coarse_blocks=-1)):
        with pytest.raises(ConfigError, match="coarse"):
            NetworkConfig(**{**kw, **bad})


def test_universal_map_trains_at_its_own_learning_rate():
    from training.config import TrainConfig
    from training.train import Trainer

    cfg = TrainConfig(network=NetworkConfig(size=32, width=8, tail_width=8, universal=True), universal_lr_mult=7.0)
    t = Trainer.__new__(Trainer)  # only the optimiser wiring: no data, no recognisers
    t.cfg, t.G = cfg, NullSwapNet(cfg.network)
    groups = Trainer._g_param_groups(t)
    assert [g["mult"] for g in groups] == [1.0, 7.0] and groups[1]["params"] == [t.G.universal]
    assert sum(len(g["params"]) for g in groups) == len(list(t.G.parameters()))


def test_pgd_warm_start_begins_at_the_networks_perturbation(lfw_rgb):
    from nullswap_sdk import Cloaker
    from nullswap_sdk.errors import ModelNotFoundError

    # A near-zero step, bounds wider than the network's (texture weight ≤ 3 × its L∞ 8): the
    # result is the network's δ.
    kw = dict(recognisers=("sface",), steps=1, step_size=1e-6, luminance=True, psnr_floor=30.0, eps=30.0)
    warm = Cloaker.from_pretrained("pgd", init="nullswap-net", **kw)
    net = Cloaker.from_pretrained("nullswap-net", backend="torch")
    cold = Cloaker.from_pretrained("pgd", **kw)
    out_w, out_n, out_c = (c.cloak(lfw_rgb) for c in (warm, net, cold))
    dw, dn = out_w.astype(np.int16) - lfw_rgb, out_n.astype(np.int16) - lfw_rgb
    inner = (lfw_rgb > 30).all(2) & (lfw_rgb < 225).all(2)  # no channel clipped (luminance = channel mean)
    assert np.abs(dn).max() >= 2 and np.abs(dw - dn)[inner].max() <= 1  # rounding only
    assert np.abs(out_c.astype(np.int16) - lfw_rgb).max() <= 1
    with pytest.raises(ModelNotFoundError):
        Cloaker.from_pretrained("pgd", init="no-such-net", **kw)
    with pytest.raises(ConfigError):
        Cloaker.from_pretrained("pgd", init="nullswap-net", init_scale=-1.0, **kw)


def test_pgd_l2_steps_spend_a_binding_psnr_budget_better_than_sign_steps(lfw_rgb):
    """Under a binding PSNR floor, L2-normalised steps lower the surrogate's cosine further than
    MI-FGSM sign steps in the same number of steps; both respect the floor and the L∞ bound."""
    import cv2

    from nullswap_sdk.cloakers.pgd import PGDCloaker, PGDConfig
    from nullswap_sdk.errors import ModelNotFoundError

    kw = dict(recognisers=("sface",), steps=4, eps=8.0, psnr_floor=41.0, luminance=True, texture=1.0)
    try:
        l2, sign = PGDCloaker(PGDConfig(norm="l2", **kw)), PGDCloaker(PGDConfig(**kw))
    except ModelNotFoundError as e:
        pytest.skip(e.message)
    h, w = lfw_rgb.shape[:2]
    crops = cv2.resize(lfw_rgb[h // 8:h - h // 8, w // 8:w - w // 8], (256, 256), interpolation=cv2.INTER_AREA)[None]
    d_l2 = l2.perturb(crops)
    loss_l2 = l2.last_stats["loss"][0]
    d_sign = sign.perturb(crops)
    loss_sign = sign.last_stats["loss"][0]
    assert loss_l2 < loss_sign - 0.05, (loss_l2, loss_sign)
    for d in (d_l2, d_sign):
        assert float(np.mean(d.astype(np.float64) ** 2)) <= 255.0 ** 2 / 10 ** 4.1 * 1.001
        assert float(np.abs(d).max()) <= 8.0 * 3.0 + 1e-3  # the texture weight scales the bound ≤ 3x
    with pytest.raises(ConfigError):
        PGDConfig(norm="l1")
    with pytest.raises(ConfigError):
        PGDConfig(norm="l2", step_size=0.0)


def test_stochastic_ensemble_steps_attack_the_drawn_surrogates_and_score_all(lfw_rgb):
    """``surrogates_per_step=1`` of two: each step runs one surrogate, both are drawn over the
    steps, the final iterate is scored on both, and the cloak still lowers both cosines."""
    import cv2

    from nullswap_sdk.cloakers.pgd import PGDCloaker, PGDConfig
    from nullswap_sdk.errors import ModelNotFoundError

    kw = dict(recognisers=("sface", "facenet"), steps=6, eps=8.0, psnr_floor=40.0, norm="l2", luminance=True)
    try:
        pgd = PGDCloaker(PGDConfig(surrogates_per_step=1, **kw))
    except ModelNotFoundError as e:
        pytest.skip(e.message)
    h, w = lfw_rgb.shape[:2]
    crops = cv2.resize(lfw_rgb[h // 8:h - h // 8, w // 8:w - w // 8], (256, 256), interpolation=cv2.INTER_AREA)[None]
    calls: list[tuple[int, bool]] = []
    embed = pgd._embed

    def counting(k, x, gen, *a, **kw):
        calls.append((k, x.requires_grad))
        return embed(k, x, gen, *a, **kw)

    pgd._embed = counting
    d = pgd.perturb(crops)
    stepped = [k for k, grad in calls if grad]
    assert len(stepped) == 6 and set(stepped) == {0, 1}
    assert [k for k, grad in calls[-2:]] == [0, 1] and not any(g for _, g in calls[-2:])  # final score: both
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float()
    xc = torch.from_numpy(np.clip(crops + d, 0, 255)).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        cos = [float((embed(k, xc, None)[0] * embed(k, x, None)[0]).sum()) for k in range(2)]
    assert max(cos) < 0.95, cos
    for bad in (-1, 3):
        with pytest.raises(ConfigError):
            PGDConfig(recognisers=("sface", "facenet"), surrogates_per_step=bad)


def test_pgd_nesterov_takes_each_gradient_at_the_look_ahead_point(lfw_rgb):
    """``nesterov``: step 0 is the plain step (no momentum yet); step 1's gradient is taken at
    δ1 − step·μ·unit(g) = (1 + μ)·δ1 here (no bound binds: wide L∞, 0.95 of the PSNR radius),
    where plain PGD takes it at δ1; the result still respects the floor and fools the surrogate."""
    import cv2

    from nullswap_sdk.cloakers.pgd import PGDCloaker, PGDConfig
    from nullswap_sdk.errors import ModelNotFoundError

    kw = dict(recognisers=("sface",), steps=4, eps=64.0, psnr_floor=40.0, norm="l2", momentum=0.9, step_size=0.5)
    try:
        plain, ahead = PGDCloaker(PGDConfig(**kw)), PGDCloaker(PGDConfig(nesterov=True, **kw))
    except ModelNotFoundError as e:
        pytest.skip(e.message)
    h, w = lfw_rgb.shape[:2]
    crops = cv2.resize(lfw_rgb[h // 8:h - h // 8, w // 8:w - w // 8], (256, 256), interpolation=cv2.INTER_AREA)[None]
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float()
    seen = {}
    for name, pgd in (("plain", plain), ("ahead", ahead)):
        inputs, embed = [], pgd._embed

        def recording(k, xx, *a, _inputs=inputs, _embed=embed, **kw2):
            if xx.requires_grad:
                _inputs.append((xx - x).detach())
            return _embed(k, xx, *a, **kw2)

        pgd._embed = recording
        d = pgd.perturb(crops)
        seen[name] = inputs
        assert float(np.mean(d.astype(np.float64) ** 2)) <= 255.0 ** 2 / 10 ** 4.0 * 1.001
        assert pgd.last_stats["loss"][0] < 0.6  # clean: 1.0
    p, a = seen["plain"], seen["ahead"]
    assert len(p) == len(a) == 4
    assert torch.allclose(p[0], a[0]) and float(p[0].abs().max()) == 0.0  # both start at δ = 0
    d1, look = p[1].flatten(), a[1].flatten()
    assert float(torch.nn.functional.cosine_similarity(d1, look, dim=0)) > 0.99  # pixel-range clipping aside
    assert float(look.norm() / d1.norm()) == pytest.approx(1.9, abs=0.05)

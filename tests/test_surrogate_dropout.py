"""Surrogate dropout (recognisers/dropout.py): conv outputs thinned inside both kinds of
surrogate module, restored afterwards, reproducible, rate calibrated to a fidelity target;
wired into PGD and the training loss."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from nullswap_sdk.errors import ConfigError
from nullswap_sdk.recognisers.dropout import calibrate_dropout, conv_dropout


def _conv_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.ReLU(), nn.Conv2d(8, 4, 3, bias=False), nn.Flatten())


def _onnx_conv_graph():
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from nullswap_sdk.recognisers.onnx_torch import OnnxGraphModule, _build

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((6, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((2, 6, 1, 1)).astype(np.float32), "w2")
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["a"], ["b"]),
         helper.make_node("Conv", ["b", "w2"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 9, 7])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 9, 7])], [w1, w2])
    m = _build(g, "synthetic")
    assert isinstance(m, OnnxGraphModule)
    return m


@pytest.mark.parametrize("make", [_conv_net, _onnx_conv_graph], ids=["torch-conv2d", "onnx-graph"])
def test_dropout_thins_reproducibly_and_restores(make):
    net = make()
    x = torch.rand(3, 3, 9, 7) * 255  # odd spatial shape on purpose
    with torch.no_grad():
        exact = net(x)
        with conv_dropout(net, 0.0):
            assert torch.equal(net(x), exact)
        with conv_dropout(net, 0.2, torch.Generator().manual_seed(5)):
            a = net(x)
        with conv_dropout(net, 0.2, torch.Generator().manual_seed(5)):
            b = net(x)
        with conv_dropout(net, 0.2, torch.Generator().manual_seed(6)):
            c = net(x)
        assert torch.equal(a, b) and not torch.equal(a, c) and not torch.allclose(a, exact)
        assert torch.equal(net(x), exact)  # hooks removed
        with pytest.raises(RuntimeError), conv_dropout(net, 0.2):
            raise RuntimeError("boom")
        assert torch.equal(net(x), exact)  # ... also after an exception


def test_dropout_keeps_the_expected_activation():
    """Inverted dropout: a linear (bias-free, no-ReLU) conv keeps its mean output."""
    torch.manual_seed(1)
    net = nn.Conv2d(3, 16, 3, bias=False)
    x = torch.rand(8, 3, 33, 31)
    with torch.no_grad():
        exact = net(x).mean()
        with conv_dropout(net, 0.3, torch.Generator().manual_seed(0)):
            thinned = net(x).mean()
    assert abs(float(thinned / exact) - 1) < 0.02


def test_pool_masks_are_bernoulli_and_fresh_per_call():
    """Masks are windows of one random pool at generator-drawn offsets: each keeps the asked
    share, consecutive calls differ, a tensor larger than half the pool is still covered by
    independent windows."""
    from nullswap_sdk.recognisers import dropout as D

    g = torch.Generator().manual_seed(0)
    big = torch.Size([3, 7, 311, 353])  # > half the pool: several windows
    assert math.prod(big) > D._POOL_SIZE // 2
    for keep in (0.7, 1 - 1e-4):
        m = D._keep_mask(big, keep, torch.device("cpu"), g)
        assert m.shape == big and abs(float(m.float().mean()) - keep) < 3e-3
    a, b = (D._keep_mask(torch.Size([4, 9, 13]), 0.5, torch.device("cpu"), g) for _ in range(2))
    assert not torch.equal(a, b)
    # The second window starts at its own offset: not the first one's continuation in the pool.
    chunk = D._POOL_SIZE // 2
    m = D._keep_mask(big, 0.5, torch.device("cpu"), torch.Generator().manual_seed(1)).flatten()
    offs = torch.randint(0, D._POOL_SIZE - chunk + 1, (2,), generator=torch.Generator().manual_seed(1)).tolist()
    pool = D._pool(torch.device("cpu")) < round(0.5 * D._POOL_LEVELS)
    assert torch.equal(m[chunk:chunk + 1000], pool[offs[1]:offs[1] + 1000]) and offs[1] != offs[0] + chunk
    # The multiply-ready masks are the same masks, scaled: same generator state, same windows.
    for shape in (big, torch.Size([2, 5, 7]), torch.Size([0, 3])):
        ref = D._keep_mask(shape, 0.8, torch.device("cpu"), torch.Generator().manual_seed(3)).float() / 0.8
        got = D._scaled_mask(shape, 0.8, torch.device("cpu"), torch.float32, torch.Generator().manual_seed(3))
        assert got.shape == shape and torch.equal(got, ref)


def test_dropout_rejects_bad_rates_and_convless_models():
    with pytest.raises(ConfigError):
        with conv_dropout(_conv_net(), 0.7):
            pass
    with pytest.raises(ConfigError, match="no convolution"):
        with conv_dropout(nn.Linear(3, 3), 0.1):
            pass


def test_calibration_bisects_to_the_target():
    fidelity = lambda p: math.exp(-10 * p)  # noqa: E731 - the known monotone response
    p = calibrate_dropout(fidelity, 0.8, iters=20)
    assert fidelity(p) >= 0.8 and p == pytest.approx(math.log(1 / 0.8) / 10, rel=1e-3)
    assert calibrate_dropout(lambda p: 0.99, 0.9) == 0.5  # insensitive model: the maximum rate
    with pytest.raises(ConfigError):
        calibrate_dropout(fidelity, 1.0)


def test_pgd_config_validates_fidelity():
    from nullswap_sdk.cloakers.pgd import PGDConfig

    for bad in (0.3, 1.2):
        with pytest.raises(ConfigError, match="dropout_fidelity"):
            PGDConfig(dropout_fidelity=bad)
    for bad in ({"feature_weight": -1.0}, {"feature_depth": 1.5}):
        with pytest.raises(ConfigError, match="feature_"):
            PGDConfig(**bad)


def test_real_surrogates_calibrate_to_fidelity():
    """On face-like input the calibrated rates differ per recogniser and hit the target."""
    from nullswap_sdk.cloakers.pgd import PGDCloaker, PGDConfig
    from nullswap_sdk.errors import ModelNotFoundError

    try:
        pgd = PGDCloaker(PGDConfig(steps=1, recognisers=("sface", "facenet"), dropout_fidelity=0.9))
    except ModelNotFoundError as e:
        pytest.skip(e.message)
    from tests.test_recognisers_onnx import lfw_faces

    x = torch.nn.functional.interpolate(torch.from_numpy(lfw_faces(128)), size=(256, 256), mode="bilinear")
    with torch.no_grad():
        refs = [pgd._embed(k, x, None)[0] for k in range(2)]
        rates = [pgd._dropout_rate(k, x, r) for k, r in enumerate(refs)]
        for k, (r, p) in enumerate(zip(refs, rates)):
            fid = float((pgd._embed(k, x, torch.Generator().manual_seed(0), 0, p)[0] * r).sum(1).mean())
            assert 0.85 <= fid <= 0.95, (k, p, fid)
    assert 0 < min(rates) and max(rates) > 2 * min(rates)  # FaceNet tolerates far more than SFace


def test_training_loss_uses_and_skips_dropout():
    """Rates calibrate on clean crops; training cosines (with a generator) go through thinned
    surrogates, validation cosines (without) through the exact ones."""
    from nullswap_sdk.errors import ModelNotFoundError
    from nullswap_sdk.network import NetworkConfig
    from nullswap_sdk.network.model import working_template
    from nullswap_sdk.recognisers.model import load_recogniser
    from training.config import EOTTrainConfig, LossConfig, TrainConfig
    from training.losses import IdentityLoss

    with pytest.raises(ConfigError, match="dropout_fidelity"):
        TrainConfig(loss=LossConfig(dropout_fidelity=0.2))
    try:
        rec = load_recogniser("facenet")
    except ModelNotFoundError as e:
        pytest.skip(e.message)
    from tests.test_recognisers_onnx import lfw_faces

    x = torch.from_numpy(lfw_faces(128))
    loss = IdentityLoss([rec], working_template(NetworkConfig()), EOTTrainConfig(p_degrade=0.0))
    assert loss.calibrate_dropout(x, 1.0) == [0.0]
    with torch.no_grad():
        refs = loss.references(x)
        exact = loss.cosines(x, refs, torch.Generator().manual_seed(3))[0]
        (p,) = loss.calibrate_dropout(x, 0.9)
        thinned = loss.cosines(x, refs, torch.Generator().manual_seed(3))[0]
        val = loss.cosines(x, refs, None)[0]
    assert 0 < p <= 0.5 and float(thinned.mean()) < float(exact.mean()) - 0.03
    assert torch.allclose(val, torch.ones_like(val), atol=1e-4)


@pytest.mark.parametrize("make", [_conv_net, _onnx_conv_graph], ids=["torch-conv2d", "onnx-graph"])
def test_feature_tap_reads_the_chosen_conv_beside_dropout(make):
    from nullswap_sdk.recognisers.taps import feature_tap

    net = make()
    x = torch.rand(2, 3, 9, 7) * 255
    first = net[0] if isinstance(net, nn.Sequential) else None
    with torch.no_grad():
        exact = net(x)
        with feature_tap(net, 0.0) as got:
            net(x)
            net(x)
        assert len(got) == 2 and torch.equal(got[0], got[1]) and got[0].shape[:2] == (2, first.out_channels if first else 6)
        if first is not None:
            assert torch.equal(got[0], first(x))
        with conv_dropout(net, 0.3, torch.Generator().manual_seed(0)), feature_tap(net, 1.0) as last:
            thinned = net(x)
        assert len(last) == 1 and not torch.allclose(thinned, exact)
        assert torch.equal(net(x), exact)  # both hooks gone
    with pytest.raises(ConfigError):
        with feature_tap(net, 1.5):
            pass


def _sface_pair(base: dict, **lever):
    """PGD against SFace with ``lever`` and without it (same config otherwise), and two smooth
    random 256-px crops (float BCHW) to attack."""
    from nullswap_sdk.cloakers.pgd import PGDCloaker, PGDConfig
    from nullswap_sdk.errors import ModelNotFoundError

    kw = dict(recognisers=("sface",), eps=12.0, psnr_floor=36.0, luminance=True, **base)
    try:
        with_lever, plain = PGDCloaker(PGDConfig(**kw, **lever)), PGDCloaker(PGDConfig(**kw))
    except ModelNotFoundError as e:
        pytest.skip(e.message)
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.interpolate(torch.rand(2, 3, 8, 8, generator=g) * 200 + 25, size=(256, 256),
                                        mode="bicubic").clamp(0, 255).round()
    return with_lever, plain, x


def test_fia_importance_is_the_aggregate_gradient_and_lowers_the_weighted_features():
    """FIA weights = the normalised mean gradient of the identity cosine w.r.t. the tapped
    features over pixel-dropped copies; PGD with the term lowers those weighted features more
    than PGD without it."""
    fia, plain, x = _sface_pair(dict(steps=5), feature_weight=4.0, feature_mode="fia", fia_copies=3, fia_drop=0.3)
    with torch.no_grad():
        ref = fia._embed(0, x, None)[0]
    w = fia._feature_importance(0, x, ref, torch.Generator().manual_seed(1))
    # Reference: the same masks, each copy's gradient by plain autograd, summed and normalised.
    gen, agg = torch.Generator().manual_seed(1), 0
    for _ in range(3):
        keep = (torch.rand(2, 1, 256, 256, generator=gen) >= 0.3).float()
        xm = (x * keep).requires_grad_()
        e = fia._embed(0, xm, None)[0]
        agg = agg + torch.autograd.grad((e * ref).sum(), fia._feat)[0]
    assert torch.allclose(w, agg / agg.flatten(1).norm(dim=1).view(-1, 1, 1, 1), atol=1e-5)
    assert torch.allclose(w.flatten(1).norm(dim=1), torch.ones(2), atol=1e-5)

    crops = x.permute(0, 2, 3, 1).byte().numpy()
    d_fia, d_plain = fia.perturb(crops), plain.perturb(crops)
    imp = fia._importance[0]

    def weighted(d):
        with torch.no_grad():
            fia._embed(0, (x + torch.from_numpy(d).permute(0, 3, 1, 2)).clamp(0, 255), None)
            return float((imp * fia._feat).flatten(1).sum(1).mean())

    assert weighted(d_fia) < weighted(d_plain)


def test_ila_guides_the_second_stage_along_the_first_stages_feature_shift():
    """ILA: the guide is the exact surrogate's feature shift of the first stage's result, unit
    length; the second stage pushes the features further along it than the same number of
    plain steps from the same first stage (both runs share the first stage: same seed, same loss)."""
    ila, plain, x = _sface_pair(dict(steps=6, norm="l2"), feature_weight=2.0, feature_mode="ila", ila_split=0.5)
    crops = x.permute(0, 2, 3, 1).byte().numpy()
    d_ila, d_plain = ila.perturb(crops), plain.perturb(crops)
    (u, length), = ila._guides
    assert torch.allclose(u.flatten(1).norm(dim=1), torch.ones(2), atol=1e-5) and bool((length > 0).all())

    def feats(d):
        with torch.no_grad():
            ila._embed(0, (x + torch.from_numpy(d).permute(0, 3, 1, 2)).clamp(0, 255), None)
            return ila._feat

    f0 = feats(np.zeros_like(d_ila))
    # _ila_guides by hand, at an arbitrary point: the shift from the clean features, normalised.
    d = np.random.default_rng(1).normal(0, 3, d_ila.shape).astype(np.float32)
    (u1, n1), = ila._ila_guides((x + torch.from_numpy(d).permute(0, 3, 1, 2)).clamp(0, 255))
    shift = feats(d) - f0
    assert torch.allclose(n1, shift.flatten(1).norm(dim=1), rtol=1e-5)
    assert torch.allclose(u1, shift / n1.view(-1, 1, 1, 1), atol=1e-6)

    def along(d):
        return ((feats(d) - f0) * u).flatten(1).sum(1) / length

    assert bool((along(d_ila) > along(d_plain)).all())


def test_feature_mode_is_checked():
    from nullswap_sdk.cloakers.pgd import PGDConfig

    for bad in (dict(feature_mode="bogus"), dict(fia_copies=0), dict(fia_drop=1.0), dict(ila_split=0.0),
                dict(ila_split=1.0)):
        with pytest.raises(ConfigError, match="feature_mode"):
            PGDConfig(**bad)

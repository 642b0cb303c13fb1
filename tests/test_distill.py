"""Distillation targets (training/distill.py): PGD perturbations under the network's own bound,
built resumably, and read by the trainer with each target beside its (flipped) crop."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nullswap_sdk.errors import ConfigError, ModelNotFoundError
from nullswap_sdk.network.model import NetworkConfig, working_template
from training.config import TrainConfig, apply_overrides
from training.distill import DistillConfig, build_targets, load_targets, network_bound, pgd_targets

NET = NetworkConfig(luminance=True, texture=1.0, psnr_floor=41.6)


def _sface_loss():
    from nullswap_sdk.recognisers.model import load_recogniser
    from training.losses import IdentityLoss

    try:
        rec = load_recogniser("sface", "cpu")
    except ModelNotFoundError as e:
        pytest.skip(e.message)
    return IdentityLoss([rec], working_template(NET), TrainConfig().eot)


def _face_crops(lfw_rgb, n: int = 3) -> np.ndarray:
    """LFW photo, centre region at 128 px (roughly the working template), shifted copies."""
    import cv2

    h, w = lfw_rgb.shape[:2]
    out = []
    for k in range(n):
        c = lfw_rgb[h // 8 + k:h - h // 8 + k, w // 8:w - w // 8]
        out.append(cv2.resize(c, (128, 128), interpolation=cv2.INTER_AREA))
    return np.stack(out)


def test_targets_respect_the_network_bound_and_lower_the_surrogate_cosine(lfw_rgb):
    idl = _sface_loss()
    x = torch.from_numpy(_face_crops(lfw_rgb, 2)).permute(0, 3, 1, 2).float()
    d, after = pgd_targets(x, idl, NET, DistillConfig(steps=3, dropout_fidelity=1.0), torch.Generator().manual_seed(0))
    assert d.shape == (2, 1, 128, 128)
    bound = network_bound(x, NET)
    assert bool((d.abs() <= bound + 1e-4).all())
    max_mse = 255.0 ** 2 / 10 ** (41.6 / 10)
    assert bool((d.pow(2).mean(dim=(1, 2, 3)) <= max_mse * 1.001).all())
    assert bool(((x + d).amin(1) >= -1e-3).all() and ((x + d).amax(1) <= 255 + 1e-3).all())  # no clipping
    assert float(after.max()) < 0.9  # three steps at 41.6 dB already move SFace far from 1
    with pytest.raises(ConfigError):
        pgd_targets(x, idl, NetworkConfig(), DistillConfig(steps=1), torch.Generator())  # RGB network
    with pytest.raises(ConfigError):
        DistillConfig(step=0.0)


def test_targets_resume_and_trainer_reads_them_beside_their_crops(lfw_rgb, tmp_path):
    from training.data import CropSet
    from training.train import Trainer

    idl = _sface_loss()
    crops = _face_crops(lfw_rgb, 5)
    dcfg = DistillConfig(steps=2, batch=2, dropout_fidelity=1.0)
    key = {"test": 1}
    # Stopped after the first chunk, then resumed: the same as one uninterrupted build.
    part = build_targets(tmp_path / "a", crops, idl, NET, dcfg, 4, key, time_limit=0.0)
    assert part["done"] == 2
    build_targets(tmp_path / "a", crops, idl, NET, dcfg, 4, key)
    build_targets(tmp_path / "b", crops, idl, NET, dcfg, 4, key)
    ia, ta = load_targets(tmp_path / "a", 5, NET)
    ib, tb = load_targets(tmp_path / "b", 5, NET)
    assert np.array_equal(ia, ib) and np.array_equal(np.asarray(ta), np.asarray(tb)) and len(ia) == 4
    with pytest.raises(ConfigError):
        build_targets(tmp_path / "a", crops, idl, NET, dcfg, 4, {"test": 2})  # another config
    with pytest.raises(ConfigError):
        load_targets(tmp_path / "a", 6, NET)  # another training set
    with pytest.raises(ConfigError):
        load_targets(tmp_path / "a", 5, NetworkConfig(luminance=True, texture=1.0, psnr_floor=40.0))  # another bound
    load_targets(tmp_path / "a", 5, NetworkConfig(luminance=True, texture=1.0, psnr_floor=41.6, coarse_width=16))
    with pytest.raises(ConfigError):
        load_targets(tmp_path / "missing", 5, NET)

    cfg = apply_overrides(TrainConfig(), [
        "recognisers=[\"sface\"]", "val_recognisers=[]", "steps=1", "batch_size=3", "device=cpu",
        "network.width=8", "discriminator.width=8", "network.luminance=true", "network.texture=1.0",
        "network.psnr_floor=41.6", "loss.w_distill=1.0", f"data.distill_dir=\"{tmp_path / 'a'}\"",
        "data.distill_share=0.67"])
    names = ["t"] * 5
    tr = Trainer(cfg, tmp_path / "run", CropSet(crops, names, [""] * 5), CropSet(crops[:2], names[:2], ["i"] * 2))
    for step in range(4):
        x, t = tr._batch(step)
        assert x.shape == (3, 3, 128, 128) and t.shape == (2, 1, 128, 128)
        for j in range(2):  # each target is its crop's, flipped with it
            xj = x[j].permute(1, 2, 0).numpy().astype(np.uint8)
            k = next(k for k in range(5) if np.array_equal(crops[k], xj) or np.array_equal(crops[k][:, ::-1], xj))
            flipped = not np.array_equal(crops[k], xj)
            ref = np.asarray(ta[list(ia).index(k)], dtype=np.float32)
            assert np.array_equal(t[j, 0].numpy(), ref[:, ::-1] if flipped else ref)
    (tmp_path / "run").mkdir()
    rec = tr.train_step()
    assert 0.0 <= rec["distill"] <= 2.0 and np.isfinite(rec["loss"])
    with pytest.raises(ConfigError):
        apply_overrides(TrainConfig(), ["loss.w_distill=1.0"])  # no targets named

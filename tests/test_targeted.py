"""Feature-space targeted PGD (cloakers/targets.py): the pool file's checks, the choice of the
farthest target per face, and that the target term pulls the embedding toward it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nullswap_sdk.cloakers.targets import build_target_pool, load_target_pool
from nullswap_sdk.errors import ConfigError, NoFaceError


def _smooth_crops(n: int, seed: int, size: int = 256) -> np.ndarray:
    """Low-frequency colour fields: distinct enough for distinct embeddings, no data needed."""
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.interpolate(torch.rand(n, 3, 8, 8, generator=g) * 200 + 25, size=(size, size),
                                        mode="bicubic", align_corners=False)
    return x.clamp(0, 255).round().byte().permute(0, 2, 3, 1).numpy()


def _pool(tmp_path, crops, template="cloak256"):
    p = tmp_path / "pool.npz"
    np.savez(p, crops=crops, template=np.array(template))
    return p


def test_pool_file_errors_are_typed(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_target_pool(tmp_path / "none.npz", "cloak256", 256)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ConfigError, match="not a pool file"):
        load_target_pool(bad, "cloak256", 256)
    with pytest.raises(ConfigError, match="template"):
        load_target_pool(_pool(tmp_path, _smooth_crops(2, 0, 128), "arcface112"), "cloak256", 256)
    assert load_target_pool(_pool(tmp_path, _smooth_crops(2, 0)), "cloak256", 256).shape == (2, 256, 256, 3)


def test_build_pool_without_faces_is_typed(tmp_path):
    with pytest.raises(NoFaceError):
        build_target_pool([np.full((120, 120, 3), 128, np.uint8)], tmp_path / "p.npz")
    assert not (tmp_path / "p.npz").exists()


def test_build_pool_from_a_real_photo(tmp_path, lfw_photo_path):
    assert build_target_pool([lfw_photo_path, np.zeros((64, 64, 3), np.uint8)], tmp_path / "p.npz") == 1
    assert load_target_pool(tmp_path / "p.npz", "cloak256", 256).shape == (1, 256, 256, 3)


def test_targeted_pgd_picks_the_farthest_face_and_moves_toward_it(tmp_path):
    from nullswap_sdk.cloakers.pgd import PGDCloaker, PGDConfig
    from nullswap_sdk.errors import ModelNotFoundError

    pool, x = _smooth_crops(5, 1), _smooth_crops(2, 2)
    kw = dict(steps=6, recognisers=("sface",), eps=12.0, psnr_floor=36.0, luminance=True)
    try:
        plain = PGDCloaker(PGDConfig(**kw))
        aimed = PGDCloaker(PGDConfig(**kw, target_pool=str(_pool(tmp_path, pool))))
    except ModelNotFoundError as e:
        pytest.skip(e.message)

    def embed(crops):
        with torch.no_grad():
            return aimed._embed(0, torch.from_numpy(np.asarray(crops)).permute(0, 3, 1, 2).float(), None)[0]

    e_pool, e_x = embed(pool), embed(x)
    far = (e_x @ e_pool.T).argmin(1)
    d_aimed = aimed.perturb(x)
    assert aimed.last_stats["target"] == far.tolist()
    d_plain = plain.perturb(x)
    to_target = [float((embed(np.clip(x + d, 0, 255).round().astype(np.uint8)) * e_pool[far]).sum(1).mean())
                 for d in (d_plain, d_aimed)]
    assert to_target[1] > to_target[0] + 0.02, to_target


def test_target_weight_is_checked():
    from nullswap_sdk.cloakers.pgd import PGDConfig

    with pytest.raises(ConfigError, match="target_weight"):
        PGDConfig(target_weight=-1.0)

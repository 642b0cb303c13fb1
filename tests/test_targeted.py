"""Feature-space targeted PGD (cloakers/targets.py): the pool file's checks, the choice of the
farthest or nearest targets per face, and that the target term pulls the embedding toward it."""
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


def _plain_and_aimed(tmp_path, pool, **target):
    """A plain and a targeted SFace PGD (otherwise equal), and the embedder they share."""
    from nullswap_sdk.cloakers.pgd import PGDCloaker, PGDConfig
    from nullswap_sdk.errors import ModelNotFoundError

    kw = dict(steps=6, recognisers=("sface",), eps=12.0, psnr_floor=36.0, luminance=True)
    try:
        plain = PGDCloaker(PGDConfig(**kw))
        aimed = PGDCloaker(PGDConfig(**kw, target_pool=str(_pool(tmp_path, pool)), **target))
    except ModelNotFoundError as e:
        pytest.skip(e.message)

    def embed(crops):
        with torch.no_grad():
            return aimed._embed(0, torch.from_numpy(np.asarray(crops)).permute(0, 3, 1, 2).float(), None)[0]

    return plain, aimed, embed


def _pull(plain, aimed, embed, x, target) -> list[float]:
    """Mean cosine to ``target`` of the plainly and the aimed cloaked crops, as saved (uint8)."""
    return [float((embed(np.clip(x + c.perturb(x), 0, 255).round().astype(np.uint8)) * target).sum(1).mean())
            for c in (plain, aimed)]


def test_targeted_pgd_picks_the_farthest_face_and_moves_toward_it(tmp_path):
    pool, x = _smooth_crops(5, 1), _smooth_crops(2, 2)
    plain, aimed, embed = _plain_and_aimed(tmp_path, pool)
    e_pool, e_x = embed(pool), embed(x)
    far = (e_x @ e_pool.T).argmin(1)
    to_target = _pull(plain, aimed, embed, x, e_pool[far])
    assert aimed.last_stats["target"] == far.tolist()
    assert to_target[1] > to_target[0] + 0.02, to_target


def test_near_targets_are_the_most_alike_faces_and_their_mean_pulls(tmp_path):
    pool, x = _smooth_crops(7, 3), _smooth_crops(2, 4)
    plain, aimed, embed = _plain_and_aimed(tmp_path, pool, target_choice="near", target_k=3)
    e_pool, e_x = embed(pool), embed(x)
    sim = (e_x @ e_pool.T).numpy()
    aimed.perturb(x)
    chosen = np.array(aimed.last_stats["target"])
    assert chosen.shape == (2, 3)
    for i in range(2):  # the three highest similarities, in order; none of the others is higher
        assert sim[i, chosen[i]].tolist() == sorted(sim[i], reverse=True)[:3]
    target = torch.nn.functional.normalize(e_pool[torch.from_numpy(chosen)].mean(1), dim=1)
    to_target = _pull(plain, aimed, embed, x, target)
    assert to_target[1] > to_target[0] + 0.02, to_target


def test_target_weight_is_checked():
    from nullswap_sdk.cloakers.pgd import PGDConfig

    with pytest.raises(ConfigError, match="target_weight"):
        PGDConfig(target_weight=-1.0)
    with pytest.raises(ConfigError, match="target_choice"):
        PGDConfig(target_choice="random")
    with pytest.raises(ConfigError, match="target_k"):
        PGDConfig(target_k=0)

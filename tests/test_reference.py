"""Identity references for per-image cloaking (cloakers/reference.py): the file format, which
faces a reference applies to, that it moves the loss's reference, and the typed errors of the
SDK and CLI paths."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from .conftest import data_path
from nullswap_sdk.cloakers.reference import IdentityReference
from nullswap_sdk.errors import ConfigError, ModelNotFoundError, NoFaceError

# One surrogate and few steps: the mechanism, not the protection (that is the lab's job).
PGD = dict(recognisers=("sface",), steps=4, luminance=True, norm="l2", psnr_floor=40.0, eps=12.0)


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def test_reference_file_round_trip_and_errors(tmp_path):
    g = np.random.default_rng(0)
    ref = IdentityReference({"sface": _unit(g.normal(size=128)), "facenet": _unit(g.normal(size=512))}, photos=3)
    back = IdentityReference.load(ref.save(tmp_path / "me.npz"))
    assert back.photos == 3 and sorted(back.embeddings) == ["facenet", "sface"]
    assert all(np.array_equal(back.embeddings[k], ref.embeddings[k]) for k in ref.embeddings)
    with pytest.raises(ConfigError, match="not found"):
        IdentityReference.load(tmp_path / "none.npz")
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ConfigError, match="not an identity reference"):
        IdentityReference.load(tmp_path / "bad.npz")
    with pytest.raises(ConfigError, match="unit"):
        IdentityReference({"sface": np.ones(128, np.float32)}, photos=1)
    with pytest.raises(ConfigError):
        IdentityReference({}, photos=1)


def _photos():
    root = data_path("lfw", "Colin_Powell")
    other = data_path("lfw", "Aaron_Eckhart", "Aaron_Eckhart_0001.jpg")
    return [root / f"Colin_Powell_000{i}.jpg" for i in range(1, 5)], other


def _pgd_cloaker(**kw):
    from nullswap_sdk import Cloaker

    try:
        return Cloaker.from_pretrained("pgd", **{**PGD, **kw})
    except ModelNotFoundError as e:
        pytest.skip(e.message)


def test_reference_applies_to_the_matching_face_only():
    from nullswap_sdk.imageio import load_image

    powell, eckhart = _photos()
    with _pgd_cloaker() as c:
        own = c.reference(powell[1:3])
        assert own.photos == 2 and sorted(own.embeddings) == ["sface"]
        stranger = c.reference([eckhart, np.zeros((64, 64, 3), np.uint8)])  # the blank photo is skipped
        assert stranger.photos == 1
        img = load_image(powell[0]).rgb
        plain, f_plain = c.cloak(img, return_faces=True)
        matched, f_matched = c.cloak(img, return_faces=True, reference=own)
        assert [f.reference for f in f_plain] == [False] and [f.reference for f in f_matched] == [True]
        assert c.method.last_stats["reference_score"][0] > 0.35
        assert not np.array_equal(plain, matched)
        # Another person's reference matches no face: the cloak is the plain one, bit for bit.
        other, f_other = c.cloak(img, return_faces=True, reference=stranger)
        assert [f.reference for f in f_other] == [False]
        assert np.array_equal(other, plain)


def test_reference_moves_the_loss_reference():
    """With reference_mix 1 the loss pushes away from the person's mean embedding, so the
    cloaked crop ends farther from it (white-box, on the attacked surrogate) than without."""
    from nullswap_sdk.faces.align import align_face
    from nullswap_sdk.faces.detect import FaceDetector
    from nullswap_sdk.imageio import load_image

    powell, _ = _photos()
    with _pgd_cloaker(reference_mix=1.0) as c:
        method = c.method
        det = FaceDetector()
        crops = []
        for p in powell:
            rgb = load_image(p).rgb
            crops.append(align_face(rgb, max(det.detect(rgb), key=lambda f: f.size).landmarks, c.crop_template)[0])
        x = np.stack(crops[:1])
        ref = method.embed_reference(np.stack(crops[1:]))
        r = ref.embeddings["sface"]

        def cos_to_ref(delta):
            cloaked = np.clip(np.rint(x + delta), 0, 255).astype(np.float32)
            with torch.no_grad():
                e = method._embed(0, torch.from_numpy(cloaked).permute(0, 3, 1, 2), None)[0]
            return float(e[0].numpy() @ r)

        plain, steered = cos_to_ref(method.perturb(x)), cos_to_ref(method.perturb(x, reference=ref))
        # The pipeline tier applies it the same way.
        crops_tier = c.cloak_crops(x, reference=ref)
        assert np.array_equal(crops_tier, np.clip(np.rint(x + method.perturb(x, reference=ref)), 0, 255))
    assert steered < plain - 0.02, (plain, steered)


def test_reference_errors_are_typed(lfw_photo_path, caplog):
    from nullswap_sdk import Cloaker

    powell, _ = _photos()
    with _pgd_cloaker() as c:
        with pytest.raises(ConfigError, match="non-empty list"):
            c.reference([])
        with pytest.raises(ConfigError, match="non-empty list"):
            c.reference(str(powell[1]))
        with pytest.raises(NoFaceError):
            c.reference([np.full((96, 96, 3), 128, np.uint8)])
        g = np.random.default_rng(1)
        foreign = IdentityReference({"facenet": _unit(g.normal(size=512))}, photos=1)
        with pytest.raises(ConfigError, match="built for"):
            c.check_reference(foreign)
        with pytest.raises(ConfigError, match="IdentityReference"):
            c.cloak(np.zeros((64, 64, 3), np.uint8), reference={"sface": 1})
        with caplog.at_level("WARNING", logger="nullswap_sdk.cloaker"):
            own = c.reference(powell[1:2])
        assert "reference from one photo" in caplog.text  # measured: no gain; say so
    with Cloaker.from_pretrained(backend="torch") as net:  # the default network: one forward pass
        with pytest.raises(ConfigError, match="does not take identity references"):
            net.reference(powell[1:2])
        with pytest.raises(ConfigError, match="level='max'"):
            net.cloak(np.zeros((64, 64, 3), np.uint8), reference=own)


def test_cli_reference(tmp_path, capsys):
    from nullswap_sdk.cli import main

    powell, _ = _photos()
    args = ["--level", "max", "--set", "steps=1", "--set", 'recognisers=["sface"]']
    assert main(["cloak", str(powell[0]), "-o", str(tmp_path / "a.jpg"), *args,
                 "--reference", str(powell[1]), "--reference", str(powell[2])]) == 0
    assert "1 face(s) cloaked (1 matched the reference)" in capsys.readouterr().out
    assert main(["cloak", str(powell[0]), "-o", str(tmp_path / "b.jpg"), *args,
                 "--reference", str(tmp_path / "missing.jpg")]) == 2
    assert not (tmp_path / "b.jpg").exists()
    # A saved reference for other surrogates is refused before any image is touched.
    g = np.random.default_rng(2)
    saved = IdentityReference({"facenet": _unit(g.normal(size=512))}, photos=1).save(tmp_path / "r.npz")
    assert main(["cloak", str(powell[0]), "-o", str(tmp_path / "c.jpg"), *args, "--reference", str(saved)]) == 2
    assert not (tmp_path / "c.jpg").exists()
    # The default network takes no reference: a usage error, nothing written.
    assert main(["cloak", str(powell[0]), "-o", str(tmp_path / "d.jpg"), "--reference", str(powell[1])]) == 2
    assert not (tmp_path / "d.jpg").exists()


def test_cli_reference_command_saves_what_cloak_reuses(tmp_path, capsys):
    """``nullswap reference`` writes the reference ``cloak --reference FILE.npz`` takes; photos
    without a face are left out and counted; it never clobbers a file or writes a bad one."""
    from PIL import Image

    from nullswap_sdk.cli import main

    powell, _ = _photos()
    blank = tmp_path / "blank.png"
    Image.new("RGB", (96, 96), (128, 128, 128)).save(blank)
    sets = ["--set", 'recognisers=["sface"]']
    out = tmp_path / "me.npz"
    assert main(["reference", str(powell[1]), str(blank), str(powell[2]), "-o", str(out), *sets]) == 0
    assert "reference from 2/3 photo(s) (sface), 1 without a face skipped" in capsys.readouterr().out
    ref = IdentityReference.load(out)
    assert ref.photos == 2 and sorted(ref.embeddings) == ["sface"]
    assert main(["cloak", str(powell[0]), "-o", str(tmp_path / "a.jpg"), "--level", "max", "--set", "steps=1",
                 *sets, "--reference", str(out)]) == 0
    assert "1 face(s) cloaked (1 matched the reference)" in capsys.readouterr().out
    before = out.read_bytes()
    assert main(["reference", str(powell[1]), "-o", str(out), *sets]) == 2  # exists: --overwrite needed
    assert out.read_bytes() == before
    assert main(["reference", str(powell[1]), "-o", str(tmp_path / "me.json"), *sets]) == 2
    assert main(["reference", str(blank), "-o", str(tmp_path / "none.npz"), *sets]) == 2  # no face anywhere
    assert main(["reference", str(tmp_path / "missing.jpg"), "-o", str(tmp_path / "m.npz"), *sets]) == 2
    assert not (tmp_path / "none.npz").exists() and not (tmp_path / "m.npz").exists()
    assert main(["reference", str(powell[1]), "-o", str(tmp_path / "n.npz"), "--level", "mid"]) == 2  # the network


def test_reference_config_is_checked():
    from nullswap_sdk.cloakers.pgd import PGDConfig

    with pytest.raises(ConfigError, match="reference_mix"):
        PGDConfig(reference_mix=1.5)
    with pytest.raises(ConfigError, match="reference_match"):
        PGDConfig(reference_match=2.0)


def test_the_protocol_gives_probes_their_references(tmp_path):
    """``evaluate`` builds each probe's reference from its photos and records whether it was
    used; reference photos without a face leave the probe cloaked without one, not a crash."""
    from PIL import Image

    from nullswap_sdk.evaluation.protocol import EvalConfig, Probe, evaluate

    powell, eckhart = _photos()
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((96, 96, 3), 128, np.uint8)).save(blank)
    gallery = [("Colin_Powell", powell[3]), ("Aaron_Eckhart", eckhart)]
    probes = [Probe("Colin_Powell", powell[0], references=(powell[1], powell[2])),
              Probe("Colin_Powell", powell[0], references=(blank,))]
    with _pgd_cloaker(steps=1) as c:
        rep = evaluate(probes, gallery, EvalConfig(recognisers=("sface",), transforms=()), cloaker=c, progress=False)
    assert [p["reference"] for p in rep["per_probe"]] == [True, False]

"""The transfer lab's probe selection must not depend on where the data lives: its face-size
cache once keyed photos by absolute path, so a checkout reaching the data by another path
silently picked the first photos instead of the largest faces (the session-4 baseline shift)."""
from __future__ import annotations

import json
from pathlib import Path

from training.lab import _face_key, _largest_faces


def _ids(root: Path) -> dict[str, list[Path]]:
    return {n: [root / "celeba-wild" / n / f"{i:06d}.jpg" for i in range(3)] for n in ("a", "b", "c")}


def test_largest_faces_reads_a_cache_written_from_another_path(tmp_path):
    sizes = {"a": [50, 400, 60], "b": [90, 80, 70], "c": [10, 20, 300]}
    written_from = _ids(Path("/elsewhere/shared/data"))
    cache = {str(f): sizes[n][i] for n, files in written_from.items() for i, f in enumerate(files)}
    (tmp_path / "celeba_face_px.json").write_text(json.dumps(cache))

    picked = _largest_faces(_ids(Path("/tmp/shared/data")), 2, tmp_path)  # no detection: all cached

    assert [(n, f.name) for n, f in picked] == [("a", "000001.jpg"), ("c", "000002.jpg")]
    rewritten = json.loads((tmp_path / "celeba_face_px.json").read_text())
    assert rewritten["a/000001.jpg"] == 400 and not any(k.startswith("/") for k in rewritten)


def test_face_key_is_identity_and_file():
    assert _face_key("/x/y/lfw/Ann_Lee/Ann_Lee_0001.jpg") == _face_key("../z/Ann_Lee/Ann_Lee_0001.jpg")


def test_a_pgd_recipe_attacks_with_its_own_recognisers():
    """A recipe naming its recognisers (the fourth-surrogate one) is attacked with them, not the
    default three (the session-5 k4 recipe silently ran as drop90: same figures), and --loo
    leaves each of its own out; unavailable ones are dropped; networks attack nothing."""
    from training.lab import RECIPES, attack_sets

    everything = ("sface", "facenet", "mobilefacenet", "facenet-keras", "faceres")
    k4 = RECIPES["pgd-38-lum-drop90-k4"]
    assert attack_sets(k4, everything, False) == [("sface", "facenet", "mobilefacenet", "facenet-keras")]
    loo = attack_sets(k4, everything, True)
    assert len(loo) == 5 and all(len(a) == 3 for a in loo[1:]) and ("sface", "facenet", "mobilefacenet") in loo
    assert attack_sets(RECIPES["pgd-38-lum"], ("sface", "mobilefacenet"), False) == [("sface", "mobilefacenet")]
    assert attack_sets(RECIPES["net-v1"], everything, True) == [None]


def test_a_pgd_level_is_measured_with_the_surrogates_the_sdk_runs():
    """level-max attacks what ``Cloaker.from_pretrained(level="max")`` attacks (the shipped
    surrogates), not the lab's three: the lab measures the product."""
    from nullswap_sdk import Cloaker
    from training.lab import RECIPES, attack_sets

    everything = ("sface", "facenet", "mobilefacenet", "facenet-keras", "faceres")
    sdk = Cloaker.from_pretrained(level="max").method.config.recognisers
    assert attack_sets(RECIPES["level-max"], everything, False) == [tuple(sdk)]


def test_a_port_of_a_judge_is_no_judge_and_blinds_it_when_attacking():
    """dlib-torch carries dlib-resnet's weights: it is never measured itself, and a run attacking
    with it does not count dlib-resnet as black-box (a later run leaving it out does)."""
    from training.lab import blackbox_view, judges

    available = ("dlib-resnet", "dlib-torch", "faceres", "sface")
    assert judges(available) == ("dlib-resnet", "faceres", "sface")
    m = {"cosine": 0.5, "cosine_clean_baseline": 0.9, "top1": 0.2, "top1_clean": 0.9}
    rec = {"none": m, "jpeg75": m, "resize0.5": m}
    runs = [{"attack": ["dlib-torch", "sface"], "identity": {r: rec for r in judges(available)}},
            {"attack": ["sface"], "identity": {r: rec for r in judges(available)}}]
    view = blackbox_view(runs, available)
    assert sorted(view) == ["dlib-resnet", "faceres"]
    assert view["faceres"]["attack"] == ["dlib-torch", "sface"] and view["dlib-resnet"]["attack"] == ["sface"]


def test_reference_photos_are_held_out_of_the_gallery():
    """``--references K``: every probe's identity has ≥ 2 + K photos, its K reference photos are
    neither the probe nor in the gallery (the gallery photo is the same as without references),
    and only recipes that take references get them."""
    from tests.conftest import data_path

    data_path("lfw")
    from training.lab import RECIPES, lab_sets

    probes, gallery = lab_sets(12, 2, 560, n_refs=2)
    plain, gallery0 = lab_sets(12, 2, 560)
    in_gallery = {str(p) for _, p in gallery}
    assert len(probes) == 14 and len(gallery) == len(gallery0) >= 500
    by_id = dict(gallery)
    assert all(dict(gallery0).get(p.identity, by_id[p.identity]) == by_id[p.identity] for p in probes)
    for p in probes:
        assert len(p.references) == 2 and p.clean not in p.references
        assert not {str(r) for r in p.references} & in_gallery
        assert all(r.parent == p.clean.parent for r in p.references)  # the same person's folder
    assert not any(p.references for p in plain)
    assert RECIPES["level-max-ref"].references and not RECIPES["level-max"].references
    assert RECIPES["level-max-ref"].overrides == RECIPES["level-max"].overrides

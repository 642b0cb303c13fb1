"""Dataset listing and deterministic selection. Tests on the real data skip when it is absent;
the rest run on a tiny fake tree (empty files: nothing here decodes images)."""
from __future__ import annotations

from pathlib import Path

import pytest

from nullswap_sdk.errors import ConfigError
from nullswap_sdk.evaluation import datasets as ds


def _real_root():
    try:
        return ds.data_dir()
    except ds.DataNotFoundError:
        return None


needs_data = pytest.mark.skipif(
    _real_root() is None or not (_real_root() / "lfw").is_dir(), reason="shared data folder absent")


@pytest.fixture
def fake_root(tmp_path, monkeypatch):
    """lfw/ with identities holding 1..5 images, plus celeba-wild/ and utkface/."""
    for k in range(40):
        d = tmp_path / "lfw" / f"Person_{k:02d}"
        d.mkdir(parents=True)
        for i in range(1 + k % 5):
            (d / f"Person_{k:02d}_{i + 1:04d}.jpg").touch()
    (tmp_path / "lfw" / "README.txt").touch()  # stray file at the top level is ignored
    for k in range(3):
        d = tmp_path / "celeba-wild" / str(100 + k)
        d.mkdir(parents=True)
        (d / "000001.jpg").touch()
        (d / "notes.txt").touch()
    (tmp_path / "utkface").mkdir()
    for name in ("9_0_0_x.jpg.chip.jpg", "1_1_2_y.jpg.chip.jpg"):
        (tmp_path / "utkface" / name).touch()
    monkeypatch.setenv(ds.ENV_VAR, str(tmp_path))
    return tmp_path


def test_default_dir_is_beside_repo():
    assert ds.DEFAULT_DATA_DIR == Path(ds.__file__).resolve().parents[3] / "shared" / "data"


def test_missing_data_dir_is_typed_with_hint(tmp_path, monkeypatch):
    monkeypatch.setenv(ds.ENV_VAR, str(tmp_path / "nope"))
    with pytest.raises(ds.DataNotFoundError) as e:
        ds.data_dir()
    assert isinstance(e.value, ConfigError) and ds.ENV_VAR in e.value.hint
    monkeypatch.setenv(ds.ENV_VAR, str(tmp_path))
    with pytest.raises(ds.DataNotFoundError):
        ds.lfw_identities()  # root exists, lfw/ does not


def test_listing_on_fake_tree(fake_root):
    ids = ds.lfw_identities()
    assert len(ids) == 40 and list(ids) == sorted(ids)
    assert all(v == sorted(v) and all(p.suffix == ".jpg" for p in v) for v in ids.values())
    assert len(ids["Person_04"]) == 5
    cw = ds.celeba_wild_identities()
    assert sorted(cw) == ["100", "101", "102"] and all(len(v) == 1 for v in cw.values())
    assert [p.name for p in ds.utkface_images()] == ["1_1_2_y.jpg.chip.jpg", "9_0_0_x.jpg.chip.jpg"]


def test_split_identities_properties():
    names = [f"id_{i}" for i in range(5000)]
    train, val = ds.split_identities(names)
    assert not set(train) & set(val) and set(train) | set(val) == set(names)
    assert 0.08 < len(val) / len(names) < 0.12
    assert ds.split_identities(reversed(names)) == (train, val)  # order-free, deterministic
    # Stable under subset: every name keeps its side whatever else is passed in.
    sub = names[::7]
    sub_train, sub_val = ds.split_identities(sub)
    assert set(sub_val) == set(val) & set(sub) and set(sub_train) == set(train) & set(sub)
    other_train, other_val = ds.split_identities(names, seed="other")
    assert other_val != val
    assert ds.split_identities(names, val_fraction=0.0)[1] == []
    with pytest.raises(ConfigError):
        ds.split_identities(names, val_fraction=1.5)


def test_pairs_on_fake_tree(fake_root):
    ids = ds.lfw_identities()
    pairs = ds.lfw_pairs(ids, 30, 50, seed=3)
    assert pairs == ds.lfw_pairs(ids, 30, 50, seed=3)
    assert pairs != ds.lfw_pairs(ids, 30, 50, seed=4)
    assert [s for *_, s in pairs] == [True] * 30 + [False] * 50
    keys = {frozenset((a, b)) for a, b, _ in pairs}
    assert len(keys) == 80, "no repeated pair"
    for a, b, same in pairs:
        assert a != b and (a.parent == b.parent) == same
    # Asking for more same pairs than exist is an error that says how many exist.
    n_possible = sum(len(v) * (len(v) - 1) // 2 for v in ids.values())
    with pytest.raises(ConfigError, match=str(n_possible)):
        ds.lfw_pairs(ids, n_possible + 1, 0, seed=0)


def test_identification_sets_on_fake_tree(fake_root):
    ids = ds.lfw_identities()
    gallery, probes = ds.identification_sets(ids)
    eligible = sorted(n for n, v in ids.items() if len(v) >= 2)
    assert [n for n, _ in gallery] == eligible == [n for n, _ in probes]
    for (n, g), (m, p) in zip(gallery, probes):
        assert g != p and g in ids[n] and p in ids[n]
    assert (gallery, probes) == ds.identification_sets(ids)
    # Independent per identity: a subset gets the same gallery/probe for the names it keeps.
    sub = {n: ids[n] for n in eligible[::3]}
    g2, p2 = ds.identification_sets(sub)
    assert set(g2) <= set(gallery) and set(p2) <= set(probes)
    g3, _ = ds.identification_sets(ids, min_images=4, max_identities=5)
    assert len(g3) == 5 and all(len(ids[n]) >= 4 for n, _ in g3)
    with pytest.raises(ConfigError):
        ds.identification_sets(ids, min_images=1)


@needs_data
def test_real_lfw_counts_and_split():
    ids = ds.lfw_identities()
    assert len(ids) == 5181 and sum(map(len, ids.values())) == 12059
    train, val = ds.split_identities(ids)
    assert 0.08 < len(val) / len(ids) < 0.12
    multi = {n for n, v in ids.items() if len(v) >= 2}
    n_val_multi = len(multi & set(val))
    assert 100 < n_val_multi < 200  # ~10% of the ~1,520 identities with ≥ 2 images
    gallery, probes = ds.identification_sets({n: ids[n] for n in val})
    assert len(gallery) == len(probes) == n_val_multi
    pairs = ds.lfw_pairs({n: ids[n] for n in val}, 100, 100, seed=0)
    assert len(pairs) == 200


@needs_data
def test_real_celeba_and_utkface():
    assert len(ds.celeba_wild_identities()) == 42
    assert len(ds.utkface_images()) == 6000

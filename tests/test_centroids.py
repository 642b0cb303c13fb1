"""Identity centroids (training/centroids.py): leave-one-out means by hand, the reference blend."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training.centroids import loo_centroids, mix_references


def _unit(v):
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_leave_one_out_centroids_by_hand():
    e = _unit([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [3, 4, 0], [0, 0, 2]])
    ids = ["a", "a", "a", "b", "", "c"]  # b and c have one crop each, "" is unknown
    has, c = loo_centroids(e, ids)
    assert has.tolist() == [True, True, True, False, False, False]
    # crop 0's centroid: mean of crops 1 and 2 = (0, 1, 1) / sqrt 2
    np.testing.assert_allclose(c[0], [0, 2 ** -0.5, 2 ** -0.5], atol=1e-6)
    np.testing.assert_allclose(c[2], [2 ** -0.5, 2 ** -0.5, 0], atol=1e-6)
    assert not c[3:].any()


def test_two_opposite_crops_keep_their_own_reference():
    has, c = loo_centroids(_unit([[1, 0], [-1, 0], [0, 1]]), ["a", "a", "a"])
    # crop 2's centroid is (1, 0) + (-1, 0) = 0: no direction, so no centroid for it
    assert has.tolist() == [True, True, False]
    with pytest.raises(ValueError):
        loo_centroids(np.zeros((2, 3)), ["a"])


def test_mix_references_blends_only_where_a_centroid_exists():
    torch.manual_seed(0)
    refs, cents = F.normalize(torch.randn(5, 7), dim=1), F.normalize(torch.randn(5, 7), dim=1)
    has = torch.tensor([True, False, True, True, False])
    out = mix_references(refs, cents, has, 0.3)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(5))
    torch.testing.assert_close(out[~has], refs[~has])
    torch.testing.assert_close(out[0], F.normalize(0.7 * refs[0] + 0.3 * cents[0], dim=0))
    torch.testing.assert_close(mix_references(refs, cents, has, 1.0)[has], cents[has])
    torch.testing.assert_close(mix_references(refs, cents, has, 0.0), refs)
    # The cosine to the blend is a positive combination of the cosines to both parts.
    z = F.normalize(torch.randn(7), dim=0)
    a, b = float(refs[2] @ z), float(cents[2] @ z)
    s = float((0.7 * refs[2] + 0.3 * cents[2]).norm())
    assert float(out[2] @ z) == pytest.approx((0.7 * a + 0.3 * b) / s, abs=1e-6)
    with pytest.raises(ValueError):
        mix_references(refs, cents, has, 1.5)

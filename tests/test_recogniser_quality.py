"""Each recogniser, through our detection + alignment, separates LFW identities."""
from __future__ import annotations

import pytest

from tests.conftest import data_path


@pytest.mark.slow
def test_lfw_pair_separation():
    from nullswap_sdk.evaluation import datasets
    from nullswap_sdk.evaluation.verification import pair_separation
    from nullswap_sdk.recognisers import available_recognisers

    data_path("lfw")
    names = list(available_recognisers())  # file found and loader module importable
    if not names:
        pytest.skip("no recogniser files available")
    ids = datasets.lfw_identities()
    _, val = datasets.split_identities(ids)
    pairs = datasets.lfw_pairs({n: ids[n] for n in val}, 40, 40)
    res = pair_separation(tuple(names), pairs)
    for name, r in res.items():
        assert r["pairs"] >= 70, (name, r)
        assert r["auc"] > 0.95, (name, r)  # model cards report 0.996-0.999 on 600 pairs
        # dlib's unit descriptors sit close together (100+100 pairs: same 0.951, different 0.835);
        # dlib-torch is the same network.
        assert r["cos_same"] > r["cos_diff"] + (0.08 if name in ("dlib-resnet", "dlib-torch") else 0.2), (name, r)

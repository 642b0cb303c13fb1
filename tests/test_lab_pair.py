"""training/lab_pair.py: discordant probes and the exact sign test, on hand-made reports."""
from __future__ import annotations

import math

import pytest

from nullswap_sdk.errors import ConfigError
from training.lab_pair import paired, sign_test


def _report(name: str, hits: list[bool], files: list[str]) -> dict:
    ident = {"none": {"top1": sum(hits) / len(hits), "top1_clean": 1.0, "cosine": 0.8},
             "jpeg75": {"top1": 0.5}, "resize0.5": {"top1": 0.5}}
    return {"recipe": name, "blackbox": {"faceres": {}},
            "runs": [{"per_probe": [{"file": f, "top1_faceres": h, "top1_sface": True} for f, h in zip(files, hits)],
                      "identity": {"faceres": ident}}]}


def test_sign_test_by_hand():
    assert sign_test(0, 0) == 1.0
    assert sign_test(5, 0) == pytest.approx(2 / 32)
    assert sign_test(10, 2) == pytest.approx(2 * sum(math.comb(12, k) for k in range(3)) / 4096)
    assert sign_test(3, 3) == 1.0


def test_paired_counts_discordant_probes_of_black_box_recognisers_only():
    files = ["a", "b", "c", "d"]
    a, b = _report("A", [True, True, False, True], files), _report("B", [False, True, True, False], files)
    got = paired(a, b)
    assert list(got) == ["faceres"]  # sface is not black-box in these reports
    assert (got["faceres"]["b_hid"], got["faceres"]["b_revealed"]) == (2, 1)
    with pytest.raises(ConfigError, match="different probes"):
        paired(a, _report("C", [True] * 4, ["a", "b", "c", "x"]))

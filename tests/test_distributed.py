"""Ray Data batch cloaking on a real local Ray cluster (2 CPUs, one per test run).

Few tests on purpose: each Ray Data job starts its actors and loads a model per actor.
"""
from __future__ import annotations

import os
import shutil
import sys

import numpy as np
import pytest
from PIL import Image

from tests.conftest import data_path

pytest.importorskip("ray")
pytest.importorskip("pyarrow")


def _photo_tree(root):
    """in/ with LFW faces in two nested folders, photos without faces (PNG, GIF) and bad files."""
    lfw = data_path("lfw")
    people = sorted(p for p in lfw.iterdir() if p.is_dir())[:5]
    for i, person in enumerate(people):
        dst = root / ("a" if i % 2 else "b/c")
        dst.mkdir(parents=True, exist_ok=True)
        shutil.copy(sorted(person.glob("*.jpg"))[0], dst)
    noise = np.random.default_rng(0).integers(0, 256, (60, 90, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "a" / "noise.png")
    Image.fromarray(noise).convert("P").save(root / "b" / "noise.gif")  # written as noise.png
    (root / "a" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "b" / "empty.png").write_bytes(b"")
    return root


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_cli_ray_matches_single_process_cli(ray_cluster, tmp_path, capsys, monkeypatch):
    """Same files byte for byte, same summary, same exit code; existing outputs fail alike."""
    from nullswap_sdk.cli import main

    monkeypatch.chdir(tmp_path)  # relative paths in the summary, as a user types them
    _photo_tree(tmp_path / "in")
    for out in ("single", "ray"):  # one pre-existing output: reported as failed, not replaced
        (tmp_path / out / "a").mkdir(parents=True)
        (tmp_path / out / "a" / "noise.png").write_bytes(b"keep me")
    capsys.readouterr()
    rc_single = main(["cloak", "in", "-o", "single"])
    summary_single = capsys.readouterr().out
    rc_ray = main(["cloak", "--ray", "local", "--workers", "2", "in", "-o", "ray"])
    summary_ray = capsys.readouterr().out

    assert rc_single == rc_ray == 1
    assert summary_ray == summary_single.replace("single/", "ray/")
    assert "6/9 image(s) written, 5 face(s) cloaked, 1 without faces, 3 failed" in summary_ray
    assert "in/a/corrupt.jpg" in summary_ray and "in/b/empty.png is empty" in summary_ray
    single, ray = _files(tmp_path / "single"), _files(tmp_path / "ray")
    assert single.keys() == ray.keys() and len(single) == 7
    assert all(single[k] == ray[k] for k in single), "outputs differ between --ray and the plain CLI"
    assert (tmp_path / "ray" / "a" / "noise.png").read_bytes() == b"keep me"

    # --skip-existing: a rerun only retries what is missing (here the two bad files).
    assert main(["cloak", "in", "-o", "single", "--skip-existing"]) == 1
    assert capsys.readouterr().out.startswith(
        "0/2 image(s) written, 0 face(s) cloaked, 0 without faces, 2 failed, 7 skipped (already written)")

    # Equal to the SDK called directly (decode, cloak, save as the README shows).
    from nullswap_sdk import Cloaker
    from nullswap_sdk.imageio import load_image, save_image

    name = next(k for k in ray if str(k).endswith(".jpg"))
    src = tmp_path / "in" / name
    with Cloaker.from_pretrained() as cloaker:
        img = load_image(src)
        save_image(tmp_path / "sdk.jpg", cloaker.cloak(img.rgb), quality=95, icc_profile=img.icc_profile)
    assert (tmp_path / "sdk.jpg").read_bytes() == ray[name]


def test_cloak_dataset_survives_a_worker_crash_and_resumes(ray_cluster, tmp_path):
    """A worker killed mid-batch is restarted by Ray and its batch retried: every output is
    written whole, no temp file is left; a rerun skips what exists and writes what is missing."""
    import ray.cloudpickle

    from nullswap_sdk.distributed import BatchConfig, cloak_dataset
    from nullswap_sdk.distributed.worker import CloakWorker

    _photo_tree(tmp_path / "in")
    marker = tmp_path / "crashed-once"

    class CrashOnce(CloakWorker):
        """Kills its own process (no cleanup) the first time it reaches the third image."""

        def cloak_one(self, path, data):
            if path.endswith("b/c/AJ_Cook_0001.jpg") and not marker.exists():
                marker.write_text("x")
                os._exit(1)
            return super().cloak_one(path, data)

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    from nullswap_sdk.distributed.plan import filesystem, list_images, mirror_items
    from nullswap_sdk.distributed.run import run_batch

    fs, root = filesystem(str(tmp_path / "in"))
    out = str(tmp_path / "out")
    items = mirror_items(list_images(fs, root)[0], root, os.path.abspath(out), same_fs=True,
                         in_uri=str(tmp_path / "in"))
    config = BatchConfig(workers=2, batch_size=4)
    report = run_batch(items, config, worker_cls=CrashOnce)
    assert marker.exists(), "the crash was not injected"
    assert report.count("written") == 5 and report.count("noface") == 2, report.outcomes
    assert {o.src.rsplit("/", 1)[1] for o in report.failures} == {"corrupt.jpg", "empty.png"}
    assert all(o.error and "hint:" in o.error for o in report.failures)
    written = _files(tmp_path / "out")
    assert len(written) == 7 and not [k for k in written if k.name.startswith(".")]

    cloaked = tmp_path / "out" / "b" / "c" / "AJ_Cook_0001.jpg"
    cloaked.unlink()
    again = cloak_dataset(str(tmp_path / "in"), out, config=config, address="auto", progress=False)
    assert again.count("written") == 1 and again.count("skipped") == 6 and len(again.failures) == 2
    assert _files(tmp_path / "out")[cloaked.relative_to(tmp_path / "out")] == written[
        cloaked.relative_to(tmp_path / "out")]

    # The object-store path (any non-local pyarrow filesystem: encode in memory, write beside,
    # rename) writes the same bytes as the local one.
    from pyarrow import fs as pafs

    from nullswap_sdk.distributed.plan import BatchItem

    (tmp_path / "out_fs").mkdir()
    in_fs = pafs.SubTreeFileSystem(str(tmp_path / "in"), pafs.LocalFileSystem())
    out_fs = pafs.SubTreeFileSystem(str(tmp_path / "out_fs"), pafs.LocalFileSystem())
    names = ["a/noise.png", "b/c/AJ_Cook_0001.jpg", "a/corrupt.jpg"]
    remote = run_batch([BatchItem(n, f"mem://{n}", n) for n in names], config, in_fs=in_fs, out_fs=out_fs)
    assert [o.status for o in remote.outcomes] == ["noface", "written", "failed"]
    assert "mem://a/corrupt.jpg" in remote.outcomes[2].error
    for n in names[:2]:
        assert (tmp_path / "out_fs" / n).read_bytes() == (tmp_path / "out" / n).read_bytes()
    assert sorted(p.name for p in (tmp_path / "out_fs").rglob("*") if p.is_file()) == ["AJ_Cook_0001.jpg", "noise.png"]

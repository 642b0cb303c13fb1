"""Video latency: ``Cloaker.cloak_video`` end to end (decode, track, network, paste, encode).

Frame rate per clip is in ``extra_info["fps"]``; the fuller sweep with protection after the
codec is ``bench/video_fps.py``. Figures and the machine: bench/README.md, section "Video".
"""
from __future__ import annotations

import pytest

av = pytest.importorskip("av")

FRAMES = 30
SIZES = {"720p": (720, 1280), "1080p": (1080, 1920)}


@pytest.fixture(scope="module")
def clip(photo, tmp_path_factory):
    """clip(size, n_faces) -> path of a 30-frame panning H.264 clip of real LFW faces."""
    from nullswap_sdk.video.synth import camera_frames, write_video

    cache: dict = {}
    folder = tmp_path_factory.mktemp("video")

    def make(size: str, n: int):
        if (size, n) not in cache:
            scene = photo(SIZES[size], n)
            cache[size, n] = write_video(folder / f"{size}_{n}.mp4", camera_frames(scene, FRAMES, motion="pan"),
                                         fps=30, crf=20)
        return cache[size, n]

    return make


@pytest.mark.parametrize("n_faces", [1, 3])
@pytest.mark.parametrize("size", list(SIZES))
def test_cloak_video(benchmark, cloaker, clip, tmp_path, size, n_faces):
    src, dst = clip(size, n_faces), tmp_path / "out.mp4"
    report = benchmark.pedantic(cloaker.cloak_video, (src, dst), {"overwrite": True}, rounds=2, warmup_rounds=0)
    assert report.frames == FRAMES and report.frames_with_faces == FRAMES
    benchmark.extra_info["fps"] = FRAMES / benchmark.stats.stats.median
    benchmark.extra_info["cpu_ms_per_frame"] = 1e3 * report.cpu_seconds / FRAMES

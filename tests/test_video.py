"""Video cloaking (nullswap_sdk.video) on clips made by nullswap_sdk.video.synth from LFW photos."""
from __future__ import annotations

import sys

import numpy as np
import pytest

av = pytest.importorskip("av")

from nullswap_sdk import Cloaker  # noqa: E402
from nullswap_sdk.cloakers import build_method  # noqa: E402
from nullswap_sdk.errors import MissingDependencyError, OutputExistsError, VideoDecodeError  # noqa: E402
from nullswap_sdk.video.stability import perturbation_flicker  # noqa: E402
from nullswap_sdk.video.synth import camera_frames, make_scene, write_video  # noqa: E402
from tests.conftest import data_path  # noqa: E402

W, H, N = 320, 240, 16


@pytest.fixture(scope="module")
def cloaker():
    return Cloaker(build_method("noise"))


@pytest.fixture(scope="module")
def scene(lfw_rgb):
    return make_scene([lfw_rgb], W, H)


def decode(path):
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = [(f.to_ndarray(format="rgb24"), f.pts, f.rotation, f.format.name) for f in c.decode(v)]
        audio = [s.codec_context.name for s in c.streams.audio]
    return frames, audio


def test_pan_keeps_frames_timing_audio_and_cloaks_the_face(tmp_path, scene):
    src = write_video(tmp_path / "in.mp4", camera_frames(scene, N, motion="pan"), metadata={"title": "clip"})
    r = Cloaker.from_pretrained("nullswap-net").cloak_video(src, tmp_path / "out.mp4")
    a, a_audio = decode(src)
    b, b_audio = decode(tmp_path / "out.mp4")
    assert r.frames == len(a) == len(b) == N and r.frames_with_faces == N and r.tracks == 1
    assert r.detections == -(-N // 5)  # every 5th frame, the rest tracked
    assert [p for _, p, _, _ in a] == [p for _, p, _, _ in b]
    assert b_audio == a_audio == ["aac"] and r.audio == ["aac copied"]
    with av.open(str(tmp_path / "out.mp4")) as c:
        assert c.metadata.get("title") == "clip"
    # The perturbation sits on the face: there the output differs from the input much more
    # than a re-encode without cloaking does (the codec alone); away from it, no more.
    Cloaker(build_method("noise", psnr=200.0)).cloak_video(src, tmp_path / "codec.mp4")
    c, _ = decode(tmp_path / "codec.mp4")

    def diff(x, y, region):
        return np.mean([np.abs(p[0][region].astype(int) - q[0][region]).mean() for p, q in zip(x, y)])

    face, corner = (slice(H // 2 - 30, H // 2 + 30), slice(W // 2 - 25, W // 2 + 25)), (slice(0, 30), slice(0, 30))
    assert diff(a, b, face) > 1.3 * diff(a, c, face), (diff(a, b, face), diff(a, c, face))
    assert diff(a, b, corner) < 1.5 * diff(a, c, corner) + 0.1
    assert not list(tmp_path.glob(".*tmp*")), "temporary file left behind"


@pytest.mark.parametrize("rotation", [90, 180, -90])
def test_rotation_metadata_is_kept_and_faces_found_upright(tmp_path, cloaker, scene, rotation):
    frames = list(camera_frames(scene, 8, motion="static"))
    src = write_video(tmp_path / "rot.mp4", frames, rotation=rotation, audio=False)
    r = cloaker.cloak_video(src, tmp_path / "out.mp4", detect_every=4)
    b, _ = decode(tmp_path / "out.mp4")
    assert (r.rotation - rotation) % 360 == 0 and (b[0][2] - rotation) % 360 == 0  # 180 reads as -180
    k = rotation // 90
    assert b[0][0].shape == np.rot90(frames[0], -k).shape  # coded frames stay stored rotated
    assert r.frames_with_faces == 8  # YuNet saw the upright face
    # ... and the cloak landed on it: shown upright, the change is on the face, not beside it.
    up = np.rot90(b[3][0], k).astype(int) - frames[3]
    assert np.abs(up[H // 2 - 30:H // 2 + 30, W // 2 - 25:W // 2 + 25]).mean() > 2 * np.abs(up[:, :40]).mean()


@pytest.mark.parametrize("size,pix_fmt", [((320, 240), "yuv420p10le"), ((321, 241), "yuv444p")])
def test_ten_bit_and_odd_sizes(tmp_path, cloaker, lfw_rgb, size, pix_fmt):
    w, h = size
    frames = list(camera_frames(make_scene([lfw_rgb], w, h), 6, motion="zoom"))
    src = write_video(tmp_path / "in.mkv", frames, pix_fmt=pix_fmt, audio=False)
    r = cloaker.cloak_video(src, tmp_path / "out.mkv")
    b, _ = decode(tmp_path / "out.mkv")
    assert b[0][0].shape == (h, w, 3) and len(b) == 6
    assert b[0][3] == pix_fmt == r.pix_fmt_out
    assert r.frames_with_faces == 6


def test_variable_frame_rate_timestamps_survive(tmp_path, cloaker, scene):
    src = write_video(tmp_path / "vfr.mp4", camera_frames(scene, 10, motion="pan"), vfr=True)
    cloaker.cloak_video(src, tmp_path / "out.mp4")
    a, _ = decode(src)
    b, _ = decode(tmp_path / "out.mp4")
    pa = [p for _, p, _, _ in a]
    assert len(set(np.diff(pa))) == 2  # really variable
    assert [p for _, p, _, _ in b] == pa


def test_audio_is_reencoded_when_the_container_refuses_it(tmp_path, cloaker, scene):
    """WebM takes no AAC: the audio becomes Opus, as long as before."""
    src = write_video(tmp_path / "in.mp4", camera_frames(scene, 6), audio=True)
    r = cloaker.cloak_video(src, tmp_path / "out.webm", codec="libvpx-vp9", crf=40)
    assert r.audio == ["aac re-encoded to libopus"]
    with av.open(str(src)) as a, av.open(str(tmp_path / "out.webm")) as b:
        sa = sum(f.samples for f in a.decode(audio=0)) / 16000
        assert [s.codec_context.name for s in b.streams.audio] == ["opus"]
        fb = list(b.decode(audio=0))
        sb = sum(f.samples for f in fb) / fb[0].sample_rate
        assert abs(sa - sb) < 0.05, (sa, sb)
    assert len(decode(tmp_path / "out.webm")[0]) == 6


def test_no_faces_is_not_an_error(tmp_path, cloaker):
    grad = np.tile(np.linspace(0, 255, W, dtype=np.uint8)[None, :, None], (H, 1, 3))
    src = write_video(tmp_path / "empty.mp4", camera_frames(grad, 6, motion="pan"))
    r = cloaker.cloak_video(src, tmp_path / "out.mp4")
    assert r.frames == 6 and r.faces_cloaked == 0 and r.frames_with_faces == 0


def test_bad_inputs_raise_typed_errors(tmp_path, cloaker, scene):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    good = write_video(tmp_path / "good.mp4", camera_frames(scene, 6), audio=True)
    truncated = tmp_path / "trunc.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # moov atom lost
    audio_only = tmp_path / "audio.m4a"
    with av.open(str(audio_only), "w") as c:
        s = c.add_stream("aac", rate=16000, layout="mono")
        f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        f.sample_rate, f.pts = 16000, 0
        for p in [*s.encode(f), *s.encode()]:
            c.mux(p)
    for bad, words in [(junk, "cannot open"), (empty, "empty"), (truncated, "cannot open"),
                       (audio_only, "no video stream"), (tmp_path / "missing.mp4", "no such file")]:
        with pytest.raises(VideoDecodeError, match=words) as e:
            cloaker.cloak_video(bad, tmp_path / f"out_{bad.stem}.mp4")
        assert e.value.hint
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["junk.mp4", "empty.mp4", "good.mp4",
                                                                 "trunc.mp4", "audio.m4a"])


@pytest.mark.parametrize("bad", [{"detect_every": 0}, {"temporal": 0.0}, {"perturb_every": 0}])
def test_bad_settings_release_the_input_and_leave_no_temp_file(tmp_path, monkeypatch, cloaker, scene, bad):
    from nullswap_sdk.errors import ConfigError
    from nullswap_sdk.video import pipeline

    src = write_video(tmp_path / "in.mp4", camera_frames(scene, 3), audio=False)
    closed = []

    class Spy:  # the input container, recording close()
        def __init__(self, c):
            self._c = c

        def __getattr__(self, name):
            return getattr(self._c, name)

        def close(self):
            closed.append(True)
            self._c.close()

    real = pipeline.open_video

    def spied(path):
        container, *rest = real(path)
        return (Spy(container), *rest)

    monkeypatch.setattr(pipeline, "open_video", spied)
    with pytest.raises(ConfigError):
        cloaker.cloak_video(src, tmp_path / "out.mp4", **bad)
    assert closed and sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_never_overwrites_unless_asked(tmp_path, cloaker, scene):
    src = write_video(tmp_path / "in.mp4", camera_frames(scene, 4), audio=False)
    before = src.read_bytes()
    with pytest.raises(OutputExistsError):
        cloaker.cloak_video(src, src)
    out = tmp_path / "out.mp4"
    out.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError):
        cloaker.cloak_video(src, out)
    assert src.read_bytes() == before and out.read_bytes() == b"keep me"
    cloaker.cloak_video(src, out, overwrite=True)
    assert len(decode(out)[0]) == 4


def test_tracking_follows_camera_motion_between_detections(scene):
    """Tracked landmarks on non-detection frames stay near the detector's own answer there."""
    from nullswap_sdk.faces.detect import FaceDetector
    from nullswap_sdk.video.tracker import FaceTracker

    det = FaceDetector()
    frames = list(camera_frames(scene, 24, motion="pan", amplitude=0.08))
    tr = FaceTracker(det.detect, detect_every=8, min_cutoff=100.0, still_px=0.0)  # no smoothing lag
    err_track, err_hold = [], []
    held = None
    for i, f in enumerate(frames):
        tracks = tr.update(f, i / 25)
        truth = det.detect(f)[0].landmarks
        if i % 8 == 0:
            held = truth
        else:
            err_track.append(np.abs(tracks[0].raw - truth).max())
            err_hold.append(np.abs(held - truth).max())
    assert np.mean(err_track) < 3.0 and np.mean(err_track) < 0.5 * np.mean(err_hold), (
        np.mean(err_track), np.mean(err_hold))


def test_a_face_that_walks_in_is_cloaked_before_the_detection_that_finds_it(tmp_path, cloaker, lfw_rgb):
    """The face slides in from the right; the detector (frames 0 and 5) first sees it on
    frame 5. Frames 1-4 are backfilled by tracking it backwards, so more than the 6 frames
    from 5 on are cloaked."""
    import cv2

    canvas = make_scene([lfw_rgb], 2 * W, H)  # face centred at x = W
    frames = [cv2.warpAffine(canvas, np.float32([[1, 0, 60 - 20 * i], [0, 1, 0]]), (W, H),
                             borderMode=cv2.BORDER_CONSTANT) for i in range(11)]  # centre x = 380 - 20 i
    src = write_video(tmp_path / "in.mp4", frames, audio=False)
    r = cloaker.cloak_video(src, tmp_path / "out.mp4", detect_every=5)
    assert r.tracks == 1 and r.backfilled >= 2, r
    assert r.frames_with_faces >= 6 + 2, r


def test_static_scene_perturbation_does_not_flicker(scene):
    """Same noisy still scene: per-frame photo cloaking vs the video path, same network."""
    net = Cloaker.from_pretrained("nullswap-net")  # the shipped network: smooth in its input
    frames = list(camera_frames(scene, 12, motion="static", noise=2.0))
    per_frame = [net.cloak(f) for f in frames]
    video = list(net.cloak_frames(frames, fps=25))
    f_photo = perturbation_flicker(frames, per_frame)
    f_video = perturbation_flicker(frames, video)
    assert f_video["magnitude"] > 1.0  # grey levels: a real cloak is applied
    # Measured ~0.06 vs ~0.4 grey levels (the scene's own noise changes pixels by ~2.3).
    assert f_video["flicker"] < 0.15 and f_video["flicker"] < 0.5 * f_photo["flicker"], (f_video, f_photo)


def test_perturb_every_reuses_the_crop_perturbation(tmp_path, scene):
    """K = 3: the network runs on a third of the frames, every frame is still cloaked."""
    net = Cloaker.from_pretrained("nullswap-net")
    src = write_video(tmp_path / "in.mp4", camera_frames(scene, 9, motion="pan"), audio=False)
    r = net.cloak_video(src, tmp_path / "out.mp4", perturb_every=3, batch_frames=4)
    assert r.faces_cloaked == 9 and r.perturbations == 3
    frames = list(camera_frames(scene, 9, motion="pan"))

    def changed(k):  # mean |cloaked - clean| per frame
        out = net.cloak_frames(frames, perturb_every=k, lookahead=4, temporal=1.0)
        return np.array([np.abs(o.astype(int) - f).mean() for o, f in zip(out, frames)])

    every, third = changed(1), changed(3)
    # Reused frames carry a perturbation as strong as computed ones (a paste of nothing would
    # leave them at 0); the network's own magnitude varies ~30 % from frame to frame.
    assert every.min() > 0.02 and third.min() > 0.6 * every.min(), (every, third)
    assert 0.75 < third.mean() / every.mean() < 1.33, (every, third)


def test_cloak_frames_latency_order_and_inputs_untouched(cloaker, scene):
    frames = list(camera_frames(scene, 7, motion="pan"))
    copies = [f.copy() for f in frames]
    pulled = []

    def source():
        for i, f in enumerate(frames):
            pulled.append(i)
            yield f[..., ::-1]  # BGR, as cv2 cameras give

    out = []
    for k, o in enumerate(cloaker.cloak_frames(source(), lookahead=3, image_format="BGR")):
        assert len(pulled) - 1 - k <= 2  # yielded within `lookahead` frames of arriving
        out.append(o[..., ::-1])
    assert len(out) == 7 and all(np.array_equal(a, b) for a, b in zip(frames, copies))
    assert all(np.abs(o.astype(int) - f).max() > 0 for o, f in zip(out, frames))


@pytest.mark.parametrize("fps", [0, -30.0, float("nan")])
def test_cloak_frames_rejects_a_bad_fps(cloaker, scene, fps):
    from nullswap_sdk.errors import ConfigError

    with pytest.raises(ConfigError, match="fps"):
        list(cloaker.cloak_frames(camera_frames(scene, 2), fps=fps))


def test_missing_pyav_names_the_extra(monkeypatch):
    from nullswap_sdk.video._av import require_av

    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(MissingDependencyError, match="PyAV") as e:
        require_av()
    assert "[video]" in e.value.hint


def test_cli_cloak_video_exit_codes(tmp_path, scene, capsys):
    from nullswap_sdk.cli import main

    data_path("lfw")
    src = write_video(tmp_path / "in.mp4", camera_frames(scene, 5), audio=False)
    out = tmp_path / "out.mp4"
    assert main(["-q", "cloak-video", str(src), "-o", str(out), "--model", "noise",
                 "--report", str(tmp_path / "r.json")]) == 0
    assert out.is_file() and (tmp_path / "r.json").is_file()
    assert main(["-q", "cloak-video", str(src), "-o", str(out), "--model", "noise"]) == 1  # exists
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    assert main(["-q", "cloak-video", str(bad), "-o", str(tmp_path / "o2.mp4"), "--model", "noise"]) == 1
    assert main(["-q", "cloak-video", str(src), "-o", str(tmp_path / "o3.mp4"), "--model", "pgd"]) == 2


def test_cli_cloak_video_report_folder_checked_up_front(tmp_path, scene):
    from nullswap_sdk.cli import main

    src = write_video(tmp_path / "in.mp4", camera_frames(scene, 3), audio=False)
    out = tmp_path / "out.mp4"
    assert main(["-q", "cloak-video", str(src), "-o", str(out), "--model", "noise",
                 "--report", str(tmp_path / "missing" / "r.json")]) == 2
    assert not out.exists()  # a usage error: nothing written


@pytest.mark.parametrize("codec", ["aac", "no-such-encoder"])
def test_a_codec_that_is_not_a_video_encoder_is_a_config_error(tmp_path, cloaker, scene, codec):
    from nullswap_sdk.errors import ConfigError

    src = write_video(tmp_path / "in.mp4", camera_frames(scene, 2), audio=False)
    with pytest.raises(ConfigError, match="video encoder") as e:
        cloaker.cloak_video(src, tmp_path / "out.mkv", codec=codec)
    assert e.value.hint and sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


@pytest.mark.parametrize("bad", [{"preset": "bogus"}, {"crf": -5}])
def test_encoder_settings_it_refuses_are_a_config_error(tmp_path, cloaker, scene, bad):
    from nullswap_sdk.errors import ConfigError

    src = write_video(tmp_path / "in.mp4", camera_frames(scene, 2), audio=False)
    with pytest.raises(ConfigError, match="refused") as e:
        cloaker.cloak_video(src, tmp_path / "out.mp4", **bad)
    assert e.value.hint and sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]

"""Where a video frame's time goes: CPU milliseconds per stage, one thread each.

    OMP_NUM_THREADS=1 python bench/video_profile.py [--clips DIR]

CPU time (``time.thread_time``) rather than wall time, because this 2-core machine is shared
(training, other engineers' tests): wall time there measures the load as much as the code.
Every stage runs single-threaded (decoder and x264 with 1 thread) on the clips of
``bench/video_fps.py``; the median over frames is reported. Sum / 1000 is the CPU-seconds a
frame costs; with the three pipeline threads overlapping perfectly, two free cores give at
most 2000 / sum fps and one free core 1000 / sum.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def cpu_ms(fn, *a, **k):
    t = time.thread_time()
    out = fn(*a, **k)
    return out, 1000 * (time.thread_time() - t)


def profile(clip: Path, cloaker, detect_every: int, perturb_every: int, preset: str) -> dict:
    import av
    import cv2

    from nullswap_sdk.faces.align import align_face
    from nullswap_sdk.faces.paste import paste_delta
    from nullswap_sdk.video.frames import FrameBatchCloaker

    st: dict[str, list[float]] = {k: [] for k in ("decode", "yuv2rgb", "detect", "track", "align", "perturb",
                                                   "paste", "rgb2yuv", "encode")}
    proc = FrameBatchCloaker(cloaker, detect_every=detect_every)
    inp = av.open(str(clip))
    v = inp.streams.video[0]
    v.codec_context.thread_count = 1
    out = av.open("/dev/null", "w", format="mp4")
    enc = out.add_stream("libx264", rate=30)
    enc.width, enc.height, enc.pix_fmt = v.codec_context.width, v.codec_context.height, "yuv420p"
    enc.codec_context.thread_count = 1
    enc.codec_context.options = {"crf": "18", "preset": preset}
    tracker = None
    packets = inp.demux(v)
    n = 0
    while True:
        t = time.thread_time()
        frames = []
        for pk in packets:
            frames = pk.decode()
            if frames:
                break
        else:
            break
        st["decode"].append(1000 * (time.thread_time() - t))
        for f in frames:
            yuv = f.to_ndarray()
            rgb, ms = cpu_ms(cv2.cvtColor, yuv, cv2.COLOR_YUV2RGB_I420)
            st["yuv2rgb"].append(ms)
            tracker = tracker or proc.prepare(rgb.shape)
            faces = None
            if tracker.is_keyframe(n):
                faces, ms = cpu_ms(tracker.detect, rgb)
                st["detect"].append(ms / detect_every)  # amortised per frame
            tracks, ms = cpu_ms(tracker.update, rgb, n / 30, faces)
            st["track"].append(ms)
            a_ms = p_ms = q_ms = 0.0
            for tr in tracks:
                (crop, M), ms = cpu_ms(align_face, rgb, tr.landmarks, proc.template)
                a_ms += ms
                if n % perturb_every == 0 or tr.delta is None:
                    d, ms = cpu_ms(cloaker.method.perturb, crop[None])
                    tr.delta = d[0]
                    p_ms += ms
                _, ms = cpu_ms(paste_delta, rgb, tr.delta, M, feather=0.0, out=rgb)
                q_ms += ms
            st["align"].append(a_ms)
            st["perturb"].append(p_ms)
            st["paste"].append(q_ms)
            y2, ms = cpu_ms(cv2.cvtColor, rgb, cv2.COLOR_RGB2YUV_I420)
            st["rgb2yuv"].append(ms)
            t = time.thread_time()
            for p in enc.encode(av.VideoFrame.from_ndarray(y2, format="yuv420p")):
                out.mux(p)
            st["encode"].append(1000 * (time.thread_time() - t))
            n += 1
    inp.close()
    # Mean, not median, where a stage runs on some frames only (perturb, detect amortised).
    res = {k: round(float(np.mean(v)), 2) for k, v in st.items() if v}
    res["sum"] = round(sum(res.values()), 1)
    res["fps_bound_2_free_cores"] = round(2000 / res["sum"], 1)
    res["fps_bound_1_free_core"] = round(1000 / res["sum"], 1)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", default="/tmp/nullswap-video-clips")
    ap.add_argument("--sizes", default="720p,1080p")
    ap.add_argument("--faces", default="1,3")
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--detect-every", type=int, default=5)
    ap.add_argument("--perturb-every", type=int, default=2)
    ap.add_argument("--preset", default="ultrafast")
    ap.add_argument("--model", default="nullswap-net")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from video_fps import make_clip

    from nullswap_sdk import Cloaker

    cloaker = Cloaker.from_pretrained(args.model)
    clips = Path(args.clips)
    clips.mkdir(parents=True, exist_ok=True)
    for size in args.sizes.split(","):
        for faces in (int(f) for f in args.faces.split(",")):
            clip = make_clip(clips, size, faces, args.frames)
            r = profile(clip, cloaker, args.detect_every, args.perturb_every, args.preset)
            print(json.dumps({"size": size, "faces": faces, "detect_every": args.detect_every,
                              "perturb_every": args.perturb_every, "preset": args.preset,
                              "cpu_ms_per_frame": r}), flush=True)


if __name__ == "__main__":
    main()

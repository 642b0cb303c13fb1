"""Temporal stability vs protection of the video path, against per-frame photo cloaking.

    OMP_NUM_THREADS=1 python bench/video_stability.py

Static scene: one LFW face, 640x360, 30 frames, Gaussian sensor noise sigma 2 (a real camera
never repeats a frame); flicker = mean |Δ perturbation| between consecutive frames over the
touched pixels (``nullswap_sdk.video.stability``), before any codec. Moving scene: the same
face under a panning, rolling camera, 60 frames, cloaked to H.264 (crf 18, ultrafast);
protection = cosine between clean and cloaked embeddings of frames decoded from the output
(full photo path, SFace and FaceNet), every 6th frame.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

CONFIGS = [  # (label, cloak_frames / cloak_video keyword arguments)
    ("no smoothing, network every frame", {"perturb_every": 1, "min_cutoff": 1e3, "still_px": 0.0}),
    ("One-Euro + hold, network every frame", {"perturb_every": 1}),
    ("One-Euro + hold, network every 2nd frame (default)", {"perturb_every": 2}),
    ("... every 3rd frame", {"perturb_every": 3}),
    ("... every 2nd frame + temporal blend 0.5", {"perturb_every": 2, "temporal": 0.5}),
]


def main() -> None:
    import torch

    torch.set_num_threads(1)
    from PIL import Image
    from video_fps import LFW, decode, protection

    from nullswap_sdk import Cloaker
    from nullswap_sdk.evaluation.datasets import data_dir
    from nullswap_sdk.evaluation.embedder import PhotoEmbedder
    from nullswap_sdk.video.stability import perturbation_flicker
    from nullswap_sdk.video.synth import camera_frames, make_scene, write_video

    cloaker = Cloaker.from_pretrained("nullswap-net")
    emb = PhotoEmbedder(("sface", "facenet"))
    photo = np.asarray(Image.open(data_dir() / "lfw" / LFW[0]).convert("RGB"))
    scene = make_scene([photo], 640, 360)
    static = list(camera_frames(scene, 30, motion="static", noise=2.0))
    tmp = Path(tempfile.mkdtemp(prefix="nullswap-stability-"))
    src = write_video(tmp / "pan.mp4", camera_frames(scene, 60, motion="pan", noise=1.0), fps=30, crf=20)
    clean = decode(src, 6)
    rows = [{"config": "photo path, every frame independently",
             **{k: round(v, 3) for k, v in perturbation_flicker(static, [cloaker.cloak(f) for f in static]).items()},
             "protection_no_codec": protection(emb, clean, [cloaker.cloak(f) for f in clean])}]
    print(json.dumps(rows[-1]), flush=True)
    for label, kw in CONFIGS:
        fl = perturbation_flicker(static, cloaker.cloak_frames(static, fps=30, **kw))
        cloaker.cloak_video(src, tmp / "out.mp4", overwrite=True, **kw)
        rows.append({"config": label, **{k: round(v, 3) for k, v in fl.items()},
                     "protection_after_codec": protection(emb, clean, decode(tmp / "out.mp4", 6))})
        print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()

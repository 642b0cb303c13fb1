"""Video cloaking: end-to-end fps (decode + track + cloak + encode) and protection after the codec.

    OMP_NUM_THREADS=1 python bench/video_fps.py --out bench/results/video.json

Clips are made by nullswap_sdk.video.synth from LFW photos (../shared/data): a panning,
rolling camera over 1 or 3 faces, sensor noise 1 grey level, 30 fps, H.264 crf 20, with AAC
audio. For each (resolution, faces, settings) it records fps, busy seconds per stage, the
machine's load average, and on sampled frames decoded from the OUTPUT file (after the codec):
PSNR against the decoded input (whole frame and face box) and cosine between clean and
cloaked embeddings (full photo path: re-detect, re-align per recogniser) for SFace and
FaceNet, with the codec-only baseline (input re-encoded without cloaking) beside it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

LFW = ["Aaron_Eckhart/Aaron_Eckhart_0001.jpg", "AJ_Cook/AJ_Cook_0001.jpg", "AJ_Lamas/AJ_Lamas_0001.jpg"]
SIZES = {"720p": (1280, 720), "1080p": (1920, 1080)}


def make_clip(folder: Path, size: str, faces: int, frames: int) -> Path:
    from PIL import Image

    from nullswap_sdk.evaluation.datasets import data_dir
    from nullswap_sdk.video.synth import camera_frames, make_scene, write_video

    path = folder / f"{size}_{faces}f_{frames}.mp4"
    if not path.exists():
        photos = [np.asarray(Image.open(data_dir() / "lfw" / p).convert("RGB")) for p in LFW[:faces]]
        W, H = SIZES[size]
        scene = make_scene(photos, W, H, face_height=0.6 if faces == 1 else 0.45)
        write_video(path, camera_frames(scene, frames, motion="pan", noise=1.0), fps=30, crf=20)
    return path


def decode(path: Path, every: int) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for i, f in enumerate(c.decode(video=0)) if i % every == 0]


def protection(emb, clean: list[np.ndarray], cloaked: list[np.ndarray]) -> dict:
    from nullswap_sdk.evaluation.metrics import psnr

    cos = {n: [] for n in emb.names}
    p_all, p_face = [], []
    for a, b in zip(clean, cloaked):
        ea = emb.embed(a)
        if ea is None:
            continue
        eb = emb.embed(b, fallback=ea.face)
        for n in emb.names:
            cos[n].append(float(ea.embeddings[n] @ eb.embeddings[n]))
        x0, y0, x1, y1 = (int(round(v)) for v in ea.face.box)
        p_all.append(psnr(a, b))
        p_face.append(psnr(a, b, box=(x0, y0, x1, y1)))
    return {"cosine": {n: round(float(np.mean(v)), 3) for n, v in cos.items()},
            "psnr_frame": round(float(np.mean(p_all)), 2), "psnr_face": round(float(np.mean(p_face)), 2),
            "frames": len(p_all)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="720p,1080p")
    ap.add_argument("--faces", default="1,3")
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--model", default="nullswap-net")
    ap.add_argument("--detect-every", default="5", help="comma list")
    ap.add_argument("--perturb-every", default="2", help="comma list")
    ap.add_argument("--preset", default="ultrafast", help="comma list")
    ap.add_argument("--crf", type=float, default=18)
    ap.add_argument("--protection", action="store_true", help="also measure cosine/PSNR after the codec")
    ap.add_argument("--clips", default=None, help="folder to keep generated clips (default: a temp dir)")
    ap.add_argument("--out", default=None, help="append results to this JSON file")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from nullswap_sdk import Cloaker

    cloaker = Cloaker.from_pretrained(args.model)
    clips = Path(args.clips or tempfile.mkdtemp(prefix="nullswap-video-bench-"))
    clips.mkdir(parents=True, exist_ok=True)
    emb = None
    if args.protection:
        from nullswap_sdk.evaluation.embedder import PhotoEmbedder

        emb = PhotoEmbedder(("sface", "facenet"))
    rows = []
    for size in args.sizes.split(","):
        for faces in (int(f) for f in args.faces.split(",")):
            src = make_clip(clips, size, faces, args.frames)
            for de in (int(x) for x in args.detect_every.split(",")):
                for pe in (int(x) for x in args.perturb_every.split(",")):
                    for preset in args.preset.split(","):
                        dst = clips / f"out_{src.stem}_d{de}_p{pe}_{preset}.mp4"
                        load0 = os.getloadavg()[0]
                        r = cloaker.cloak_video(src, dst, detect_every=de, perturb_every=pe, preset=preset,
                                                crf=args.crf, overwrite=True)
                        row = {"size": size, "faces": faces, "detect_every": de, "perturb_every": pe,
                               "preset": preset, "crf": args.crf, "frames": r.frames, "fps": round(r.fps, 2),
                               "seconds": round(r.seconds, 2), "faces_cloaked": r.faces_cloaked,
                               # CPU time per frame of all threads: what the work costs whatever
                               # the machine's load; 2000 / it bounds fps on two free cores.
                               "cpu_ms_per_frame": round(1000 * r.cpu_seconds / r.frames, 1),
                               "ms_per_frame_busy": {k: round(1000 * v / r.frames, 1)
                                                     for k, v in r.stage_seconds.items()},
                               "bytes": dst.stat().st_size,
                               "loadavg_1min": [round(load0, 2), round(os.getloadavg()[0], 2)]}
                        if emb is not None and faces == 1:
                            clean = decode(src, 10)
                            row["protection"] = protection(emb, clean, decode(dst, 10))
                        rows.append(row)
                        print(json.dumps(row), flush=True)
            if emb is not None and faces == 1:  # codec-only baseline: re-encode without cloaking
                from nullswap_sdk.cloakers import build_method

                base = Cloaker(build_method("noise", psnr=200.0))  # ~0 perturbation: only the codec acts
                dst = clips / f"codec_only_{src.stem}.mp4"
                base.cloak_video(src, dst, crf=args.crf, overwrite=True)
                clean = decode(src, 10)
                row = {"size": size, "faces": faces, "codec_only": True,
                       "protection": protection(emb, clean, decode(dst, 10)),
                       # the photo path on the same decoded frames: no tracking, no codec after
                       "photo_path_no_codec": protection(emb, clean, [cloaker.cloak(f) for f in clean])}
                rows.append(row)
                print(json.dumps(row), flush=True)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        old = json.loads(out.read_text()) if out.exists() else []
        old.append({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": platform.node(),
                    "cpus": os.cpu_count(), "model": args.model, "rows": rows})
        out.write_text(json.dumps(old, indent=1))


if __name__ == "__main__":
    main()

"""Single-thread CPU ms per photo by stage, for the batch/service projections in bench/README.md.

    OMP_NUM_THREADS=1 python3 bench/stage_costs.py --out docs/results/stage_costs.json

Photos: a real LFW photo (250x250, one face) and LFW faces pasted on 1920x1080 and 4000x3000
canvases (bench/photos.py), each JPEG q95 as uploaded. Stages, timed with
``time.process_time`` (CPU of this process: robust to other jobs on a shared box): decode
(``load_image``), detect, the whole ``Cloaker.cloak`` (detect + align + network + paste),
the network alone per face (``method.perturb``, batch 1), encode (JPEG q95, 4:4:4).
``cloak - network`` is the CPU work that stays on the CPU when the network runs on a GPU.
"""
from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from pathlib import Path

from _record import emit  # bench/ is on sys.path when a script here runs

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from photos import RESOLUTIONS, compose_photo, lfw_photos  # noqa: E402


def _jpeg(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=95, subsampling=0)
    return buf.getvalue()


def _median_ms(fn, repeat: int) -> float:
    fn()
    ts = []
    for _ in range(repeat):
        t = time.process_time()
        fn()
        ts.append(time.process_time() - t)
    return round(statistics.median(ts) * 1e3, 2)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=9)
    p.add_argument("--out")
    args = p.parse_args()
    import torch

    from nullswap_sdk import Cloaker
    from nullswap_sdk.faces.align import align_face
    from nullswap_sdk.imageio import encode_image, load_image

    torch.set_num_threads(1)
    faces = lfw_photos(1)
    if faces is None:
        sys.exit("needs the LFW data (../shared/data/lfw)")
    photos = {"lfw 250x250": _jpeg(faces[0])}
    for size in ("1920x1080", "4000x3000"):
        photos[size] = _jpeg(compose_photo(*RESOLUTIONS[size], faces))
    rec = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": f"{os.cpu_count()} cores, no GPU",
           "clock": "time.process_time, one thread", "load_before": os.getloadavg(), "photos": {}}
    with Cloaker.from_pretrained() as c:
        for name, data in photos.items():
            img = load_image(data)
            found = c.detector.detect(img.rgb)
            out = c.cloak(img.rgb)
            crop = align_face(img.rgb, found[0].landmarks, c.crop_template)[0][None]
            row = {"faces": len(found), "jpeg_bytes": len(data),
                   "decode": _median_ms(lambda: load_image(data), args.repeat),
                   "detect": _median_ms(lambda: c.detector.detect(img.rgb), args.repeat),
                   "cloak": _median_ms(lambda: c.cloak(img.rgb), args.repeat),
                   "network_per_face": _median_ms(lambda: c.method.perturb(crop), args.repeat),
                   "encode": _median_ms(lambda: encode_image(out, "JPEG", icc_profile=img.icc_profile),
                                        args.repeat)}
            row["cpu_total"] = round(row["decode"] + row["cloak"] + row["encode"], 2)
            row["cpu_without_network"] = round(row["cpu_total"] - row["faces"] * row["network_per_face"], 2)
            rec["photos"][name] = row
    emit(rec, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where the time of one ``Cloaker.cloak`` goes: stage medians for one photo size.

    OMP_NUM_THREADS=1 python3 bench/profile_photo.py --size 1920x1080 --faces 1 [--min-face 48]

Stages are timed separately with the same functions ``Cloaker.cloak`` calls (detect, align,
network, paste, copies), then the whole call; decode is excluded.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from photos import RESOLUTIONS, compose_photo, lfw_photos  # noqa: E402


def _median_ms(fn, repeat: int, clock=time.perf_counter) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(repeat):
        t = clock()
        fn()
        ts.append(clock() - t)
    return statistics.median(ts) * 1e3


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="1920x1080", choices=sorted(RESOLUTIONS))
    p.add_argument("--faces", type=int, default=1)
    p.add_argument("--min-face", type=float, default=None, help="detector min_face_size (default: its own)")
    p.add_argument("--model", default="nullswap-net")
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--cpu", action="store_true",
                   help="time CPU seconds of this process (all threads) instead of wall time: on a "
                        "machine shared with other jobs this approximates an idle core")
    a = p.parse_args(argv)

    import numpy as np
    import torch

    from nullswap_sdk import Cloaker
    from nullswap_sdk.faces.align import align_face
    from nullswap_sdk.faces.detect import FaceDetector
    from nullswap_sdk.faces.paste import paste_delta

    torch.set_num_threads(1)
    faces_src = lfw_photos(a.faces)
    if faces_src is None:
        print("LFW data not available: nothing to profile", file=sys.stderr)
        return 1
    h, w = RESOLUTIONS[a.size]
    img = compose_photo(h, w, faces_src)
    base = Cloaker.from_pretrained(a.model)
    det = FaceDetector(min_face_size=a.min_face) if a.min_face else base.detector
    c = Cloaker(base.method, det)
    faces = det.detect(img)
    if len(faces) != a.faces:
        print(f"detector found {len(faces)} faces, expected {a.faces}", file=sys.stderr)
        return 1
    aligned = [align_face(img, f.landmarks, c.crop_template) for f in faces]
    crops = np.stack([x for x, _ in aligned])
    deltas = c.method.perturb(crops)
    out = img.copy()
    clock = time.process_time if a.cpu else time.perf_counter

    def ms(fn) -> float:
        return _median_ms(fn, a.repeat, clock)

    rows = [("detect", ms(lambda: det.detect(img)))]
    for s in det._scales(h, w):
        lvl = f"  level x{s:.3f} ({round(w * s)}x{round(h * s)})"
        rows.append((lvl, ms(lambda s=s: det._detect_level(img, s, True))))
    rows += [
        ("align (all faces)", ms(lambda: [align_face(img, f.landmarks, c.crop_template) for f in faces])),
        ("network perturb", ms(lambda: c.method.perturb(crops))),
        ("paste-back (all faces)", ms(
            lambda: [paste_delta(out, d, M, feather=0.0, out=out) for d, (_, M) in zip(deltas, aligned)])),
        ("output copy", ms(lambda: img.copy())),
        ("cloak(faces=given)", ms(lambda: c.cloak(img, faces=faces))),
        ("cloak (end to end)", ms(lambda: c.cloak(img))),
    ]
    print(f"{a.size}, {a.faces} face(s), {c!r}, min_face_size={det.min_face_size:g}, "
          f"median of {a.repeat} ({'CPU' if a.cpu else 'wall'} ms)")
    for name, t in rows:
        print(f"{name:<34} {t:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

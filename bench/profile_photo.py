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


def _median_ms(fn, repeat: int) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e3


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="1920x1080", choices=sorted(RESOLUTIONS))
    p.add_argument("--faces", type=int, default=1)
    p.add_argument("--min-face", type=float, default=None, help="detector min_face_size (default: its own)")
    p.add_argument("--model", default="nullswap-net")
    p.add_argument("--repeat", type=int, default=7)
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
    rows = [("detect", _median_ms(lambda: det.detect(img), a.repeat))]
    for s in det._scales(h, w):
        lvl = f"  level x{s:.3f} ({round(w * s)}x{round(h * s)})"
        rows.append((lvl, _median_ms(lambda s=s: det._detect_level(img, s, True), a.repeat)))
    rows += [
        ("align (all faces)", _median_ms(lambda: [align_face(img, f.landmarks, c.crop_template) for f in faces], a.repeat)),
        ("network perturb", _median_ms(lambda: c.method.perturb(crops), a.repeat)),
        ("paste-back (all faces)", _median_ms(
            lambda: [paste_delta(out, d, M, feather=0.0, out=out) for d, (_, M) in zip(deltas, aligned)], a.repeat)),
        ("output copy", _median_ms(lambda: img.copy(), a.repeat)),
        ("cloak(faces=given)", _median_ms(lambda: c.cloak(img, faces=faces), a.repeat)),
        ("cloak (end to end)", _median_ms(lambda: c.cloak(img), a.repeat)),
    ]
    print(f"{a.size}, {a.faces} face(s), {c!r}, min_face_size={det.min_face_size:g}, "
          f"median of {a.repeat} (ms)")
    for name, ms in rows:
        print(f"{name:<34} {ms:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

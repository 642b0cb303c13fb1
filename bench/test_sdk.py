"""SDK latency and memory: the crop tier by batch size, whole photos by size and face count.

Figures and the machine they came from: bench/README.md, section "SDK".
"""
from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from photos import RESOLUTIONS

ROUNDS = {"640x480": 5, "1920x1080": 5, "4000x3000": 3}


@pytest.mark.parametrize("batch", [1, 4, 16])
def test_crops_per_face(benchmark, cloaker, photo, batch):
    """``Cloaker.cloak_crops`` on a batch of aligned crops (network + strength clamp)."""
    from nullswap_sdk.faces.align import align_face

    img = photo(RESOLUTIONS["640x480"], 1)
    (face,) = cloaker.detector.detect(img)
    crop = align_face(img, face.landmarks, cloaker.crop_template)[0]
    crops = np.ascontiguousarray(np.broadcast_to(crop, (batch, *crop.shape)))
    out = benchmark.pedantic(cloaker.cloak_crops, (crops,), rounds=max(3, 48 // batch), warmup_rounds=1)
    assert out.shape == crops.shape and np.any(out != crops)
    benchmark.extra_info["per_face_ms"] = benchmark.stats.stats.median * 1e3 / batch


@pytest.mark.parametrize("n_faces", [1, 5])
@pytest.mark.parametrize("size", list(RESOLUTIONS))
def test_photo_end_to_end(benchmark, cloaker, photo, size, n_faces):
    """``Cloaker.cloak`` on a decoded photo: detect, align, network, paste-back, copies."""
    img = photo(RESOLUTIONS[size], n_faces)
    out, faces = benchmark.pedantic(cloaker.cloak, (img,), {"return_faces": True},
                                    rounds=ROUNDS[size], warmup_rounds=1)
    assert len(faces) == n_faces and out.shape == img.shape


def test_photo_1080p_fast_detector(benchmark, cloaker, photo):
    """1080p with video's detector schedule (one plain 640-px pass, faces ≥ 48 px)."""
    from nullswap_sdk import Cloaker
    from nullswap_sdk.video.frames import video_detector

    img = photo(RESOLUTIONS["1920x1080"], 1)
    fast = Cloaker(cloaker.method, video_detector(cloaker.detector, img.shape[:2], None))
    _, faces = benchmark.pedantic(fast.cloak, (img,), {"return_faces": True}, rounds=7, warmup_rounds=1)
    assert len(faces) == 1


_RSS_CHILD = r"""
import json, sys, numpy as np, torch
sys.path.insert(0, sys.argv[1])
torch.set_num_threads(1)
from photos import compose_photo, lfw_photos
from nullswap_sdk import Cloaker


def status(key):  # kB -> MiB, from /proc/self/status (Linux)
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024


c = Cloaker.from_pretrained("nullswap-net")
img = compose_photo(3000, 4000, lfw_photos(5))
c.cloak(img[:480, :640].copy())  # models and sessions allocated before the baseline
with open("/proc/self/clear_refs", "w") as f:  # reset the peak (VmHWM) to the current RSS
    f.write("5")
before = status("VmRSS")
out, faces = c.cloak(img, return_faces=True)
print(json.dumps({"faces": len(faces), "before_mb": before, "after_mb": status("VmHWM")}))
"""


def test_memory_4000x3000(benchmark, cloaker, photo):
    """Peak memory of one 12-megapixel photo: numpy/Python heap (tracemalloc) and process RSS.

    Bounds: heap peak ≤ 3x the photo itself (output + detector pyramid; no full-size float
    temporaries), RSS growth ≤ 1 GiB (YuNet's working memory, tiled at 2560 px).
    """
    img = photo(RESOLUTIONS["4000x3000"], 5)

    def traced():
        tracemalloc.start()
        try:
            cloaker.cloak(img)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    peak = benchmark.pedantic(traced, rounds=1, warmup_rounds=0)
    child = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(Path(__file__).parent)],
                           capture_output=True, text=True, timeout=600)
    if child.returncode != 0:
        pytest.skip(f"RSS probe needs Linux /proc: {child.stderr.strip().splitlines()[-1:]}")
    rss = json.loads(child.stdout.strip().splitlines()[-1])
    growth = rss["after_mb"] - rss["before_mb"]
    benchmark.extra_info.update(heap_peak_mb=peak / 2**20, photo_mb=img.nbytes / 2**20,
                                rss_before_mb=rss["before_mb"], rss_after_mb=rss["after_mb"])
    print(f"\n4000x3000: heap peak {peak / 2**20:.0f} MiB (photo {img.nbytes / 2**20:.0f} MiB); "
          f"RSS {rss['before_mb']:.0f} -> {rss['after_mb']:.0f} MiB")
    assert rss["faces"] == 5
    assert peak <= 3 * img.nbytes
    assert growth <= 1024

"""Target faces for feature-space targeted cloaking (the Fawkes lever, DESIGN.md §4).

Untargeted PGD pushes a face's embedding away from itself; targeted PGD also pulls it toward
another person's, chosen per face as the pool face farthest from it (mean cosine over the
attacking recognisers), so the cloaked face lands in a real identity's region instead of
anywhere "away". The pool is user-supplied — aligned crops of people who consent or do not
exist — saved as one ``.npz`` (``crops``: (N, S, S, 3) uint8 on the cloak template); nothing
is shipped or fetched.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ConfigError, NoFaceError

__all__ = ["build_target_pool", "load_target_pool"]


def build_target_pool(images, out: str | Path, template: str = "cloak256", limit: int | None = None) -> int:
    """Detect the largest face of each image (path or RGB array), align it to ``template`` and
    save the crops to ``out`` (.npz). Images without a face are skipped; returns the count."""
    from ..faces.align import align_largest_face
    from ..faces.detect import FaceDetector
    from ..faces.templates import get_template
    from ..imageio import load_image

    tpl, det, crops = get_template(template), FaceDetector(), []
    for im in images:
        rgb = load_image(im).rgb if isinstance(im, (str, Path)) else np.asarray(im)
        crop = align_largest_face(rgb[..., :3], det, tpl)
        if crop is None:
            continue
        crops.append(crop)
        if limit and len(crops) >= limit:
            break
    if not crops:
        raise NoFaceError("no face found in any target image", hint="pass photos with one clear face each")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez(tmp, crops=np.stack(crops).astype(np.uint8), template=np.array(template))
    tmp.replace(out)
    return len(crops)


def load_target_pool(path: str | Path, template: str, size: int) -> np.ndarray:
    """(N, size, size, 3) uint8 crops from a pool file, checked against the cloak template."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"target pool {p} not found",
                          hint="build one with nullswap_sdk.cloakers.targets.build_target_pool(images, path)")
    try:
        with np.load(p) as z:
            crops, tpl = z["crops"], str(z["template"])
    except Exception as e:  # a truncated or foreign file: say which, not a zipfile trace
        raise ConfigError(f"target pool {p} is not a pool file ({type(e).__name__}: {e})",
                          hint="rebuild it with build_target_pool") from e
    if tpl != template or crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[1:] != (size, size, 3) \
            or not len(crops):
        raise ConfigError(f"target pool {p} holds {crops.shape} {crops.dtype} crops on template {tpl!r}; "
                          f"this cloaker needs (N, {size}, {size}, 3) uint8 on {template!r}",
                          hint="rebuild the pool with the cloaker's template")
    return crops

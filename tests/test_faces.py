"""Detection, alignment, differentiable warp and paste-back.

Real photos come from ../shared/data (or $NULLSWAP_DATA_DIR); tests that need them skip
cleanly when it is absent. Everything else is synthetic.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from nullswap_sdk.errors import ConfigError, ModelIntegrityError, ModelNotFoundError, UnsupportedImageError
from nullswap_sdk.faces import detect as detect_mod
from nullswap_sdk.faces.align import (
    align_face,
    alignment_matrix,
    compose_affine,
    estimate_similarity,
    invert_affine,
    transform_points,
    warp_affine_torch,
)
from nullswap_sdk.faces.detect import Face, FaceDetector
from nullswap_sdk.faces.paste import crop_footprint_box, feather_mask, paste_delta
from nullswap_sdk.faces.templates import get_template
from nullswap_sdk.imageio import load_image

DATA = Path(os.environ.get("NULLSWAP_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
LFW, CELEBA = DATA / "lfw", DATA / "celeba-wild"
needs_lfw = pytest.mark.skipif(not LFW.is_dir(), reason=f"no LFW data at {LFW}")
needs_celeba = pytest.mark.skipif(not CELEBA.is_dir(), reason=f"no CelebA data at {CELEBA}")


def _lfw_images(n: int, start: int = 0) -> list[np.ndarray]:
    people = sorted(p for p in LFW.iterdir() if p.is_dir())[start:start + n]
    return [load_image(sorted(p.glob("*.jpg"))[0]).rgb for p in people]


def _lfw_canvas(n: int = 30, cols: int = 6, tile: int = 160) -> np.ndarray:
    """n LFW faces, centre-cropped to tile x tile, in a grid: a synthetic group photo."""
    tiles = [im[45:45 + tile, 45:45 + tile] for im in _lfw_images(n, start=200)]
    rows = [np.concatenate(tiles[r * cols:(r + 1) * cols], 1) for r in range(n // cols)]
    return np.ascontiguousarray(np.concatenate(rows, 0))


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector()


def _check_face(f: Face, shape) -> None:
    lm = f.landmarks
    assert lm.shape == (5, 2) and lm.dtype == np.float32
    le, re, nose, lm_, rm = lm
    assert le[0] < re[0] and lm_[0] < rm[0], "order must be image-left before image-right"
    assert max(le[1], re[1]) < nose[1] < min(lm_[1], rm[1]), "eyes above nose above mouth"
    x0, y0, x1, y1 = f.box
    assert x0 < lm[:, 0].min() and lm[:, 0].max() < x1 and y0 < lm[:, 1].min() < lm[:, 1].max() < y1
    assert 0 <= f.score <= 1


# ---------------------------------------------------------------- detection
@needs_lfw
def test_lfw_one_face_with_sane_landmarks(detector):
    for img in _lfw_images(8):
        faces = detector.detect(img)
        assert len(faces) >= 1
        f = faces[0]
        _check_face(f, img.shape)
        cx, cy = (f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2
        assert abs(cx - 125) < 30 and abs(cy - 125) < 35  # LFW is centred on the face
        mirrored = detector.detect(np.ascontiguousarray(img[:, ::-1]))[0]
        _check_face(mirrored, img.shape)  # order is by image side, not by the subject's side


@needs_celeba
def test_celeba_wild_mixed_sizes(detector):
    paths = sorted(CELEBA.glob("*/*.jpg"))[::25][:12]
    found = 0
    for p in paths:
        img = load_image(p).rgb
        faces = detector.detect(img)
        scores = [f.score for f in faces]
        assert scores == sorted(scores, reverse=True)
        if faces:
            found += 1
            _check_face(faces[0], img.shape)
            lm = faces[0].landmarks
            assert (lm >= -5).all() and (lm[:, 0] < img.shape[1] + 5).all() and (lm[:, 1] < img.shape[0] + 5).all()
    assert found >= 0.9 * len(paths)


@needs_lfw
def test_many_faces_in_one_canvas(detector):
    canvas = _lfw_canvas()  # 800 x 960, 30 faces of ~100 px
    faces = detector.detect(canvas)
    assert len(faces) >= 25
    cells = {(int((f.box[1] + f.box[3]) / 2 // 160), int((f.box[0] + f.box[2]) / 2 // 160)) for f in faces}
    assert len(cells) >= 25  # spread over the grid (a tile may also hold a bystander's face)
    boxes = np.array([f.box for f in faces])
    for i in range(len(boxes)):  # no duplicates
        ix = np.clip(np.minimum(boxes[i, 2], boxes[:, 2]) - np.maximum(boxes[i, 0], boxes[:, 0]), 0, None)
        iy = np.clip(np.minimum(boxes[i, 3], boxes[:, 3]) - np.maximum(boxes[i, 1], boxes[:, 1]), 0, None)
        inter = ix * iy
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        iou = inter / (area[i] + area - inter)
        assert (iou[np.arange(len(boxes)) != i] < 0.3).all()
    top = FaceDetector(max_faces=5).detect(canvas)
    assert len(top) == 5 and [f.score for f in top] == sorted((f.score for f in faces), reverse=True)[:5]


@needs_lfw
def test_small_and_large_faces_in_a_big_photo():
    """Pyramid (default, min_face_size=24): 40 px faces in a 3000x2000 photo and one face
    filling 1200 px are all found; min_face_size=48 skips the 40 px ones."""
    detector = FaceDetector()
    rng = np.random.default_rng(0)
    canvas = np.full((2000, 3000, 3), 110, np.uint8)
    faces = _lfw_images(9, start=400)
    for i, img in enumerate(faces[:8]):  # LFW box ~97 px of 250: 100 px image → ~40 px face
        small = cv2.resize(img, (100, 100), interpolation=cv2.INTER_AREA)
        y, x = 150 + (i // 4) * 500 + rng.integers(0, 100), 100 + (i % 4) * 400 + rng.integers(0, 100)
        canvas[y:y + 100, x:x + 100] = small
    canvas[700:1900, 1750:2950] = cv2.resize(faces[8][40:210, 40:210], (1200, 1200))
    found = detector.detect(canvas)
    assert sum(f.size < 80 for f in found) >= 7
    assert sum(f.size > 500 for f in found) == 1
    coarse = FaceDetector(min_face_size=48).detect(canvas)
    assert all(f.size >= 48 for f in coarse) and sum(f.size > 500 for f in coarse) == 1


def _street_photo(seed: int):
    """bench/photos.py's 1080p street photo: 16 LFW faces of 28-200 px, true boxes."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "bench" / "photos.py"
    spec = importlib.util.spec_from_file_location("bench_photos", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.sized_faces_photo(1080, 1920, seed=seed)


@needs_lfw
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_finds_every_face_from_28_to_200_px_in_1080p(detector, seed):
    """Issue 12: the photo default finds every face down to ~24 px, and nothing much else."""
    img, truth = _street_photo(seed)
    faces = detector.detect(img)
    boxes = np.array([f.box for f in faces])
    best = detect_mod.box_iou(truth, boxes).max(1)
    sizes = np.minimum(truth[:, 2] - truth[:, 0], truth[:, 3] - truth[:, 1])
    missed = [round(float(z)) for z, b in zip(sizes, best) if b < 0.4]
    assert not missed, f"missed faces of {missed} px"
    assert len(faces) <= len(truth) + 1
    assert sizes.min() < 30 and sizes.max() > 190
    for f in faces:
        _check_face(f, img.shape)


def test_default_and_video_schedules():
    """Photos: 24-px faces via a 960x540 pass (+ proposals confirmed on crops) and a 320x180
    pass at 1080p; video keeps one plain 640-px pass (48 px at 1080p)."""
    from nullswap_sdk.video.frames import video_detector

    photo = FaceDetector()
    assert photo.min_face_size == 24 and photo.confirm_small
    assert photo._scales(1080, 1920) == pytest.approx([1 / 6, 1 / 2])
    assert photo._scales(250, 250) == [1.0]  # small photos: one native pass, as before
    video = video_detector(photo, (1080, 1920), None)
    assert video.min_face_size == pytest.approx(48) and not video.confirm_small
    assert video._scales(1080, 1920) == pytest.approx([1 / 3])
    assert video_detector(video, (1080, 1920), None) is video


def test_blank_and_tiny_images(detector):
    assert detector.detect(np.zeros((480, 640, 3), np.uint8)) == []
    assert detector.detect(np.full((300, 200, 3), 255, np.uint8)) == []
    assert detector.detect(np.zeros((4, 4, 3), np.uint8)) == []


@needs_lfw
def test_face_below_min_size_is_skipped():
    img = _lfw_images(1, start=3)[0]
    canvas = np.full((200, 200, 3), 128, np.uint8)
    canvas[60:110, 60:110] = cv2.resize(img, (50, 50), interpolation=cv2.INTER_AREA)  # ~19 px box
    assert FaceDetector(min_face_size=24).detect(canvas) == []
    small = FaceDetector(min_face_size=8).detect(canvas)
    assert len(small) == 1 and small[0].size < 24


@needs_lfw
def test_detector_is_thread_safe(detector):
    imgs = _lfw_images(6, start=50)
    serial = [[f.box for f in detector.detect(im)] for im in imgs]
    results: dict[int, list] = {}

    def work(i):
        results[i] = [f.box for f in detector.detect(imgs[i % 6])]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(12):
        np.testing.assert_allclose(results[i], serial[i % 6], atol=1e-4)


def test_detector_errors(monkeypatch, detector):
    with pytest.raises(UnsupportedImageError):
        detector.detect(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(ConfigError):
        FaceDetector(score_threshold=2.0)
    monkeypatch.setattr(detect_mod, "YUNET_SHA256", "0" * 64)
    with pytest.raises(ModelIntegrityError) as ei:
        FaceDetector()
    assert ei.value.hint
    monkeypatch.setattr(detect_mod, "YUNET_PACKAGE", "no_such_package_nullswap")
    with pytest.raises(ModelNotFoundError):
        FaceDetector()


# ---------------------------------------------------------------- alignment
def test_similarity_recovers_exact_transform_and_refuses_reflection():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(5, 2)) * 40 + 100
    A = cv2.getRotationMatrix2D((30.0, -20.0), 37.0, 1.7)
    M = estimate_similarity(src, transform_points(A, src))
    np.testing.assert_allclose(M, A, atol=1e-9)
    np.testing.assert_allclose(compose_affine(invert_affine(M), M), np.eye(3)[:2], atol=1e-12)
    mirrored = src * [-1, 1]
    assert np.linalg.det(estimate_similarity(src, mirrored)[:, :2]) > 0
    with pytest.raises(ConfigError):
        estimate_similarity(np.zeros((5, 2)), src)


@needs_lfw
def test_align_puts_landmarks_on_template(detector):
    # A similarity cannot absorb pose and expression, so a few px of residual are normal;
    # exactness itself is tested on synthetic points above.
    tpl = get_template("arcface112")
    errs = []
    for img in _lfw_images(12, start=10):
        f = detector.detect(img)[0]
        crop, M = align_face(img, f.landmarks, tpl)
        assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
        err = np.linalg.norm(transform_points(M, f.landmarks) - tpl.points, axis=1)
        errs.append(err.mean())
        assert err.mean() < 5.0
        np.testing.assert_allclose(M, alignment_matrix(f.landmarks, tpl))
    assert np.median(errs) < 3.0


def _smooth_image(h=120, w=150, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.uniform(0, 255, (h, w, 3)).astype(np.float32), (0, 0), 1.5) * 3 - 255


@pytest.mark.parametrize("border,mode", [(cv2.BORDER_REFLECT, "reflection"), (cv2.BORDER_CONSTANT, "zeros"),
                                         (cv2.BORDER_REPLICATE, "border")])
def test_warp_affine_torch_matches_cv2(border, mode):
    torch = pytest.importorskip("torch")
    imgs = [np.clip(_smooth_image(seed=s), 0, 255) for s in (0, 1)]
    Ms = [cv2.getRotationMatrix2D((70.0, 60.0), 23.0, 1.3), cv2.getRotationMatrix2D((40.0, 50.0), -50.0, 0.6)]
    Ms[1][:, 2] += [10.5, -3.25]
    out_hw = (90, 110)
    ref = [cv2.warpAffine(im, M, out_hw[::-1], flags=cv2.INTER_LINEAR, borderMode=border) for im, M in zip(imgs, Ms)]
    batch = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2)
    got = warp_affine_torch(batch, torch.from_numpy(np.stack(Ms)), out_hw, padding_mode=mode)
    got = got.permute(0, 2, 3, 1).numpy()
    for g, r in zip(got, ref):
        assert np.abs(g - r)[2:-2, 2:-2].max() < 0.5
    # The natural-image case: uint8 LFW-like texture, interior only.
    nat = np.random.default_rng(3).integers(0, 256, (64, 64, 3)).astype(np.float32)
    M = cv2.getRotationMatrix2D((32.0, 32.0), 10.0, 1.1)
    r = cv2.warpAffine(nat, M, (64, 64), flags=cv2.INTER_LINEAR, borderMode=border)
    g = warp_affine_torch(torch.from_numpy(nat).permute(2, 0, 1)[None], M, (64, 64), padding_mode=mode)
    assert np.abs(g[0].permute(1, 2, 0).numpy() - r)[8:-8, 8:-8].max() < 0.5


def test_warp_affine_torch_is_differentiable():
    torch = pytest.importorskip("torch")
    img = torch.rand(1, 3, 32, 32, requires_grad=True)
    M = torch.tensor(cv2.getRotationMatrix2D((16.0, 16.0), 15.0, 1.2), dtype=torch.float32, requires_grad=True)
    warp_affine_torch(img, M, (24, 24)).square().mean().backward()
    assert img.grad is not None and torch.isfinite(img.grad).all() and img.grad.abs().sum() > 0
    assert M.grad is not None and torch.isfinite(M.grad).all() and M.grad.abs().sum() > 0


# ---------------------------------------------------------------- paste-back
def _face_setup(detector):
    img = _lfw_images(1, start=20)[0]
    f = detector.detect(img)[0]
    tpl = get_template("cloak256")
    crop, M = align_face(img, f.landmarks, tpl)
    rng = np.random.default_rng(0)
    delta = cv2.GaussianBlur(rng.normal(size=(256, 256, 3)).astype(np.float32), (0, 0), 8)
    return img, M, delta * (6.0 / delta.std())


def test_feather_mask_shape():
    m = feather_mask(256, 0.0625)
    assert m.dtype == np.float32 and m.min() >= 0 and m.max() == 1.0
    assert m[0, 0] < 0.01 and m[128, 0] < 0.05 and m[16:-16, 16:-16].min() == 1.0
    np.testing.assert_array_equal(m, m[::-1, ::-1])
    assert (feather_mask(64, 0) == 1).all()


@needs_lfw
def test_paste_outside_footprint_is_bit_identical(detector):
    img, M, delta = _face_setup(detector)
    big = np.random.default_rng(1).integers(0, 256, (img.shape[0] + 300, img.shape[1] + 400, 3), np.uint8)
    big[100:100 + img.shape[0], 200:200 + img.shape[1]] = img
    Mb = compose_affine(M, np.array([[1.0, 0, -200], [0, 1.0, -100]]))
    out = paste_delta(big, delta, Mb)
    x0, y0, x1, y1 = crop_footprint_box(Mb, 256, big.shape)
    outside = np.ones(big.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    np.testing.assert_array_equal(out[outside], big[outside])
    # Inside the ROI but outside the warped crop's footprint, also untouched.
    foot = cv2.warpAffine(np.ones((256, 256), np.float32), invert_affine(Mb), big.shape[1::-1],
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT) > 0
    np.testing.assert_array_equal(out[~foot], big[~foot])
    assert (out != big).any()
    np.testing.assert_array_equal(paste_delta(big, np.zeros_like(delta), Mb), big)


@needs_lfw
def test_paste_round_trip_recovers_delta(detector):
    img, M, delta = _face_setup(detector)
    out = paste_delta(img, delta, M)
    warp = lambda a: cv2.warpAffine(a.astype(np.float32), M, (256, 256), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REFLECT)
    clean, est = warp(img), warp(out) - warp(img)
    inner = (slice(32, 224), slice(32, 224))
    ok = ((clean > 12) & (clean < 243))[inner]  # saturated pixels clip, which is expected
    err = np.abs(est - delta)[inner][ok]
    assert err.mean() < 0.5 and np.percentile(err, 99) < 1.5, (err.mean(), np.percentile(err, 99))


def test_paste_modes_and_edges():
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (200, 300, 4), np.uint8)  # RGBA: alpha must survive
    M = np.array([[2.0, 0, -100], [0, 2.0, -80]])  # image → 128 crop; footprint x 50..114
    delta = np.full((128, 128, 3), 5.0, np.float32)
    out = paste_delta(img, delta, M)
    np.testing.assert_array_equal(out[:, :, 3], img[:, :, 3])
    assert (out[80:90, 75:90, :3].astype(int) - img[80:90, 75:90, :3] > 0).any()
    inplace = img.copy()
    assert paste_delta(inplace, delta, M, out=inplace) is inplace
    np.testing.assert_array_equal(inplace, out)
    # Two faces: repeated calls compose.
    M2 = np.array([[2.0, 0, -400], [0, 2.0, -80]])
    twice = paste_delta(out, delta, M2)
    np.testing.assert_array_equal(twice[:, :150], out[:, :150])
    # Crop entirely outside the image: nothing to do.
    far = np.array([[1.0, 0, 5000], [0, 1.0, 5000]])
    assert crop_footprint_box(far, 128, img.shape)[0] == crop_footprint_box(far, 128, img.shape)[2]
    np.testing.assert_array_equal(paste_delta(img, delta, far), img)
    with pytest.raises(ConfigError):
        paste_delta(img, np.zeros((128, 64, 3), np.float32), M)
    with pytest.raises(UnsupportedImageError):
        paste_delta(img.astype(np.float32), delta, M)

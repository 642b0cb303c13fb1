"""Identity embeddings through the full photo path: detect -> align per recogniser -> embed.

This is the attacker's path (DESIGN.md §4): a cloaked photo is re-detected from scratch,
so a perturbation that only works with our own landmarks does not count.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from ..faces.align import align_face
from ..faces.detect import Face, FaceDetector
from ..faces.templates import get_template
from ..recognisers.registry import get_recogniser_config

__all__ = ["PhotoEmbedding", "PhotoEmbedder"]


@dataclass
class PhotoEmbedding:
    face: Face | None  # the face that was embedded (largest detection), None if fell back
    detected: bool  # False: no face found; embedded with the fallback landmarks
    embeddings: dict[str, np.ndarray]  # recogniser -> (D,) L2-normalised


class PhotoEmbedder:
    """Embeds the largest face of a photo with several recognisers.

    """

    def __init__(self, recognisers: tuple[str, ...], detector: FaceDetector | None = None) -> None:
        self.names = tuple(recognisers)
        # The protocol's attacker keeps the detector RESULTS were measured with (plain passes,
        # 640-px coarse copy, faces >= 48 px): the photo default's proposals would move the figures.
        self.detector = detector or FaceDetector(min_face_size=48, detect_max_side=640, confirm_small=False)
        self._runners = {n: self._make_runner(n) for n in self.names}
        self._lock = threading.Lock()

    @staticmethod
    def _make_runner(name: str):
        # Torch ports for every recogniser: one code path, parity-tested against ONNX Runtime
        # / cv2.dnn to cosine >= 0.9999 (tests/test_recognisers_onnx.py, test_facenet.py).
        # ORT would dequantise SFace's int8 weights on every call (~4x slower here).
        # dlib-resnet is dlib's own runtime behind a torch module (tests/test_dlib_recogniser.py).
        import torch

        from ..recognisers.model import load_recogniser

        module = load_recogniser(get_recogniser_config(name))

        def run(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return module(torch.from_numpy(x)).numpy()

        return run

    def largest_face(self, rgb: np.ndarray) -> Face | None:
        faces = self.detector.detect(rgb)
        if not faces:
            return None
        return max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))

    def embed(self, rgb: np.ndarray, fallback: Face | None = None) -> PhotoEmbedding | None:
        """Embed the largest detected face; if none is found use ``fallback``'s landmarks
        (conservative: measures identity even when the cloak defeats detection)."""
        face = self.largest_face(rgb)
        detected = face is not None
        if face is None:
            face = fallback
        if face is None:
            return None
        return PhotoEmbedding(face=face, detected=detected, embeddings=self.embed_face(rgb, face))

    def embed_face(self, rgb: np.ndarray, face: Face) -> dict[str, np.ndarray]:
        """recogniser -> (D,) L2-normalised embedding of ``face`` (aligned on its landmarks)."""
        out = {}
        for name in self.names:
            cfg = get_recogniser_config(name)
            crop, _ = align_face(rgb, face.landmarks, get_template(cfg.template))
            x = crop.astype(np.float32).transpose(2, 0, 1)[None]
            e = np.asarray(self._runners[name](x), np.float32).reshape(-1)
            out[name] = e / max(float(np.linalg.norm(e)), 1e-12)
        return out

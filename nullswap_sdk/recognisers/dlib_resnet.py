"""dlib's ResNet face recogniser (``dlib_face_recognition_resnet_model_v1``) run through dlib's
own C++ runtime, as a torch module, for validation only.

The weights (and the 5-point shape predictor dlib aligns with) ship in the PyPI data package
``face_recognition_models==0.3.0``; the runtime is the prebuilt wheel ``dlib-bin`` (import
name ``dlib``), never built from source. dlib is imported lazily and the data package never
(its ``__init__`` needs ``pkg_resources``; the file is found by ``find_spec``): the SDK imports
without them and ``available_recognisers()`` skips ``dlib-resnet`` when either is missing.

There is no torch port: the module cannot give gradients, so it refuses an input that
requires them under grad mode (validation recognisers must never be in a loss). dlib compares
its raw 128-d descriptors by Euclidean distance (same person below 0.6). Measured on 40 LFW
validation photos, their norms are 1.25-1.53 (median 1.43), so on the unit embeddings the SDK
compares that rule is about cosine > 1 - (0.6 / 1.43)² / 2 = 0.91, and different people already
sit at cosine 0.84 on average (max 0.93 over 780 pairs): dlib's cosines are not comparable with
the other recognisers' — compare Top-1.

``DlibReference`` is dlib's own photo path (HOG frontal detector, 5-point predictor,
``get_face_chip_details(size=150, padding=0.25)``, descriptor): the yardstick that the
``dlib150`` template (faces/templates.py) and the parity test are measured against.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import MissingDependencyError, NonDifferentiableError

__all__ = ["DLIB_PACKAGE", "SHAPE_PREDICTOR_5_FILE", "SHAPE_PREDICTOR_5_SHA256", "CHIP_SIZE", "CHIP_PADDING",
           "import_dlib", "load_dlib_resnet", "DlibReference", "chip_matrix"]

DLIB_PACKAGE = "face_recognition_models"  # import name of the PyPI data package
SHAPE_PREDICTOR_5_FILE = "models/shape_predictor_5_face_landmarks.dat"
SHAPE_PREDICTOR_5_SHA256 = "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888"
CHIP_SIZE = 150  # the chip compute_face_descriptor(img, shape) extracts ...
CHIP_PADDING = 0.25  # ... with this padding (its default)


def import_dlib():
    try:
        import dlib
    except ImportError as e:
        raise MissingDependencyError(
            "the dlib runtime is not installed (needed by recogniser 'dlib-resnet')",
            hint="pip install dlib-bin==20.0.1.post1 (prebuilt wheel; `bash scripts/install.sh --dev` does it)",
        ) from e
    return dlib


def _module_cls():
    import torch

    class DlibResNet(torch.nn.Module):
        """(B, 3, 150, 150) float RGB in [0, 255], aligned to ``dlib150`` -> (B, 128) float32.

        Rounds to uint8 HWC (dlib's input type) and runs dlib's batch
        ``compute_face_descriptor``. No gradients: an input that requires grad under grad
        mode raises ``NonDifferentiableError``; wrap calls in ``torch.no_grad()``.
        """

        def __init__(self, path: Path) -> None:
            super().__init__()
            self.path = str(path)
            self.model = import_dlib().face_recognition_model_v1(self.path)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if torch.is_grad_enabled() and x.requires_grad:
                raise NonDifferentiableError(
                    "recogniser 'dlib-resnet' runs in dlib's C++ runtime and has no gradients",
                    hint="it is validation-only: never put it in a loss; embed under torch.no_grad()",
                )
            u8 = x.detach().clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            chips = [np.ascontiguousarray(c) for c in u8]
            desc = self.model.compute_face_descriptor(chips) if chips else []
            out = np.array([np.asarray(d) for d in desc], np.float32).reshape(len(chips), 128)
            return torch.from_numpy(out).to(x.device)

        def extra_repr(self) -> str:
            return f"dlib runtime, file={Path(self.path).name}"

    return DlibResNet


def load_dlib_resnet(path: Path):
    """The dlib descriptor model at ``path`` (already sha256-verified) as a torch module."""
    return _module_cls()(path)


def chip_matrix(details) -> np.ndarray:
    """(2, 3) map from image pixels to the pixels of the chip dlib extracts for ``details``
    (a ``dlib.chip_details``): dlib's ``get_mapping_to_chip``, which the Python API lacks —
    the chip's corners (0, 0), (cols-1, 0), (0, rows-1) are ``details.rect``'s corners rotated
    by ``details.angle`` about its centre. Checked against ``dlib.extract_image_chip``
    (cv2.warpAffine with it differs by ≤ 1 grey level: scripts/derive_dlib_template.py)."""
    import cv2

    r = details.rect
    left, top, right, bottom = r.left(), r.top(), r.right(), r.bottom()
    centre = np.array([(left + right) / 2, (top + bottom) / 2])
    a = details.angle
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    src = (np.array([[left, top], [right, top], [left, bottom]]) - centre) @ rot.T + centre
    dst = np.array([[0, 0], [details.cols - 1, 0], [0, details.rows - 1]], np.float64)
    return cv2.getAffineTransform(src.astype(np.float32), dst.astype(np.float32)).astype(np.float64)


class DlibReference:
    """dlib's own path on a photo: HOG detector -> 5-point shape -> 150-px chip -> descriptor.

    ``rgb``: (H, W, 3) uint8 RGB. Uses the ``dlib-resnet`` registry entry's file (verified).
    """

    def __init__(self) -> None:
        from ..errors import ModelIntegrityError
        from .registry import get_recogniser_config, package_file, sha256_file, verified_file

        dlib = import_dlib()
        sp = package_file(DLIB_PACKAGE, SHAPE_PREDICTOR_5_FILE)
        if sha256_file(sp) != SHAPE_PREDICTOR_5_SHA256:
            raise ModelIntegrityError(f"{sp}: sha256 differs from the registered {SHAPE_PREDICTOR_5_SHA256}")
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(sp))
        self.model = dlib.face_recognition_model_v1(str(verified_file(get_recogniser_config("dlib-resnet"))))
        self._dlib = dlib

    def shape(self, rgb: np.ndarray, upsample: int = 1):
        """The 5-point ``full_object_detection`` of the largest detected face, or None."""
        dets = self.detector(rgb, upsample)
        if len(dets) == 0:
            return None
        return self.predictor(rgb, max(dets, key=lambda d: d.area()))

    def chip_details(self, shape):
        return self._dlib.get_face_chip_details(shape, CHIP_SIZE, CHIP_PADDING)

    def chip(self, rgb: np.ndarray, shape) -> np.ndarray:
        return self._dlib.get_face_chip(rgb, shape, CHIP_SIZE, CHIP_PADDING)

    def descriptor(self, rgb: np.ndarray, shape) -> np.ndarray:
        """dlib's descriptor of ``shape``'s face in the full photo, (128,) float32 (not normalised)."""
        return np.asarray(self.model.compute_face_descriptor(rgb, shape, 0, CHIP_PADDING), np.float32)

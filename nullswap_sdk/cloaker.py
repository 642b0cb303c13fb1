"""``Cloaker``: detect faces, cloak each on its aligned crop, paste back at native resolution."""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Literal, overload

import numpy as np

from .cloakers import CloakMethod, build_method
from .errors import ConfigError, UnsupportedImageError
from .faces.align import align_face
from .faces.detect import Face, FaceDetector
from .faces.paste import paste_delta
from .faces.templates import get_template

__all__ = ["Cloaker", "FaceResult", "DEFAULT_MODEL"]

log = logging.getLogger(__name__)
DEFAULT_MODEL = "pgd"  # until the trained network ships (issue 3)


@dataclass(frozen=True)
class FaceResult:
    """What was done to one face."""

    box: tuple[float, float, float, float]  # (x0, y0, x1, y1) image pixels
    landmarks: np.ndarray  # (5, 2) float32
    score: float  # detector confidence
    linf: float  # max |perturbation| applied on the crop, pixel units (0-255)
    psnr_crop: float  # PSNR of the perturbation on the aligned crop, dB


class Cloaker:
    """Cloaks faces in photos.

    >>> cloaker = Cloaker.from_pretrained("pgd")
    >>> protected = cloaker.cloak(rgb)  # (H, W, 3) uint8 RGB -> same shape/dtype

    Calls are serialised by an internal lock (the detector and torch modules are shared),
    so one instance may be used from several threads.
    """

    def __init__(self, method: CloakMethod, detector: FaceDetector | None = None) -> None:
        if not isinstance(method, CloakMethod):
            raise ConfigError(f"{type(method).__name__} does not implement CloakMethod")
        self.method = method
        self.detector = detector or FaceDetector()
        self._template = get_template(method.template)
        self._lock = threading.Lock()

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | None = None, backend: str = "auto", device: str | None = None, **overrides
    ) -> "Cloaker":
        """Build a cloaker by model name (``nullswap info`` lists them).

        ``name_or_path``: a model name, or a ``.safetensors`` file written by training.
        ``backend``/``device``: ``auto`` picks torch on CPU for the current methods.
        ``overrides`` go to the method's config (e.g. ``steps=20`` for PGD).
        """
        name = name_or_path or DEFAULT_MODEL
        if backend not in ("auto", "torch"):
            raise ConfigError(f"backend {backend!r} is not available for {name!r}", hint="use backend='auto' or 'torch'")
        if str(name).endswith(".safetensors"):  # trained network weights (training/)
            from .network.cloaker import NetworkCloaker

            return cls(NetworkCloaker(name, device=device or "cpu", **overrides))
        if device is not None and name.startswith("pgd"):
            overrides.setdefault("device", device)
        return cls(build_method(name, **overrides))

    def __repr__(self) -> str:
        if self.method is None:
            return "Cloaker(closed)"
        d = self.method.describe()
        dev = getattr(self.method, "device", None) or d.get("config", {}).get("device", "cpu")
        return f"Cloaker(model={self.method.name!r}, backend='torch', device={dev!r})"

    def __enter__(self) -> "Cloaker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release references to models; the instance must not be used afterwards."""
        self.method = None  # type: ignore[assignment]

    def describe(self) -> dict:
        return self.method.describe()

    @overload
    def cloak(self, image: np.ndarray, image_format: str = ..., *, faces: list[Face] | None = ...,
              return_faces: Literal[False] = ...) -> np.ndarray: ...
    @overload
    def cloak(self, image: np.ndarray, image_format: str = ..., *, faces: list[Face] | None = ...,
              return_faces: Literal[True]) -> tuple[np.ndarray, list[FaceResult]]: ...

    def cloak(self, image, image_format="RGB", *, faces=None, return_faces=False):
        """Cloak every face of ``image``.

        Args:
            image: (H, W, 3) uint8 array in ``image_format`` channel order ("RGB" or "BGR").
            faces: detections to use instead of running the detector.
            return_faces: also return one ``FaceResult`` per cloaked face.
        Returns:
            A new (H, W, 3) uint8 array in the same channel order; pixels away from faces are
            bit-identical to the input. A photo without faces is returned unchanged (a copy).
        """
        if self.method is None:
            raise ConfigError("this Cloaker was closed", hint="create a new one with Cloaker.from_pretrained()")
        rgb = _as_rgb(image, image_format)
        with self._lock:
            if faces is None:
                faces = self.detector.detect(rgb)
            out = rgb.copy()
            results: list[FaceResult] = []
            if faces:
                aligned = [align_face(rgb, f.landmarks, self._template) for f in faces]
                crops = np.stack([c for c, _ in aligned])
                deltas = self.method.perturb(crops)
                for face, (crop, M), delta in zip(faces, aligned, deltas):
                    out = paste_delta(out, delta, M, feather=0.0, out=out)
                    results.append(_face_result(face, delta))
        if image_format.upper() == "BGR":
            out = out[..., ::-1].copy()
        return (out, results) if return_faces else out


def _as_rgb(image: np.ndarray, image_format: str) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise UnsupportedImageError(f"expected a numpy array, got {type(image).__name__}",
                                    hint="load files with nullswap_sdk.imageio.load_image(path).rgb")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise UnsupportedImageError(f"expected (H, W, 3) uint8, got shape {image.shape} dtype {image.dtype}",
                                    hint="convert grayscale/RGBA/16-bit with nullswap_sdk.imageio.load_image")
    fmt = image_format.upper()
    if fmt == "RGB":
        return np.ascontiguousarray(image)
    if fmt == "BGR":
        return np.ascontiguousarray(image[..., ::-1])
    raise ConfigError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")


def _face_result(face: Face, delta: np.ndarray) -> FaceResult:
    mse = float(np.mean(delta.astype(np.float64) ** 2))
    return FaceResult(
        box=tuple(float(v) for v in face.box),
        landmarks=np.asarray(face.landmarks, np.float32),
        score=float(face.score),
        linf=float(np.abs(delta).max()),
        psnr_crop=float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse)),
    )

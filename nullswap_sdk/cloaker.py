"""``Cloaker``: detect faces, cloak each on its aligned crop, paste back at native resolution."""
from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Sequence, overload

import numpy as np

from .cloakers import CloakMethod, build_method
from .errors import ConfigError, UnsupportedImageError
from .faces.align import align_face, align_largest_face
from .faces.detect import Face, FaceDetector
from .faces.interop import as_faces
from .faces.paste import paste_delta
from .faces.templates import get_template

if TYPE_CHECKING:
    import torch

    from .cloakers.reference import IdentityReference

__all__ = ["Cloaker", "FaceResult", "DEFAULT_MODEL"]

log = logging.getLogger(__name__)
DEFAULT_MODEL = "nullswap-net"  # the shipped network (nullswap_sdk/models); "pgd" stays by name


@dataclass(frozen=True)
class FaceResult:
    """What was done to one face."""

    box: tuple[float, float, float, float]  # (x0, y0, x1, y1) image pixels
    landmarks: np.ndarray  # (5, 2) float32
    score: float  # detector confidence
    linf: float  # max |perturbation| applied on the crop, pixel units (0-255)
    psnr_crop: float  # PSNR of the perturbation on the aligned crop, dB
    strength: float = 1.0  # the strength factor that was applied (see ``Cloaker.strength``)
    reference: bool = False  # an identity reference (``Cloaker.reference``) was matched and used


class Cloaker:
    """Cloaks faces in photos.

    >>> cloaker = Cloaker.from_pretrained()
    >>> protected = cloaker.cloak(rgb)  # (H, W, 3) uint8 RGB -> same shape/dtype

    Two tiers: ``cloak`` takes whole photos (numpy HWC uint8); ``cloak_crops`` (numpy BHWC
    uint8) and ``cloak_tensor`` (torch BCHW) take faces already aligned to
    ``crop_template`` for pipelines that align themselves.

    ``level`` ("low" | "mid" | "high", default "mid") picks a measured operating point
    (``nullswap_sdk.levels``); ``strength`` (0..4; "mid" is 1.0) sets the scale directly.
    "max" is per-image PGD rather than the network: build it with
    ``Cloaker.from_pretrained(level="max")``.
    The strength scales the method's perturbation before it is applied:
    ``cloaked = clip(crop + strength * delta, 0, 255)``. 0 leaves images unchanged; > 1
    trades image quality for protection. Measured for the shipped network (v8) in the transfer
    lab (30 probes, full photo path; README "Protection levels"): face-box PSNR 41.0 / 38.2 /
    32.4 dB and cosine of the never-trained-on faceres 0.92 / 0.86 / 0.71 at 0.7 / 1 / 2.

    Output is deterministic: the same input and settings give the same bytes. Calls are
    serialised by an internal lock (the detector and torch modules are shared), so one
    instance may be used from several threads. Use it as a context manager, or call
    ``close()``, to release the models.
    """

    def __init__(self, method: CloakMethod, detector: FaceDetector | None = None, *,
                 strength: float | None = None, level: str | None = None) -> None:
        if not isinstance(method, CloakMethod):
            raise ConfigError(f"{type(method).__name__} does not implement CloakMethod")
        self.method = method
        self.detector = detector or FaceDetector()
        self._template = get_template(method.template)
        self._lock = threading.Lock()
        self.strength = _resolve_level(strength, level)
        lv = _level(level)
        if lv is not None and lv.model is not None and getattr(method, "name", None) != lv.model:
            raise ConfigError(f"level {level!r} runs model {lv.model!r}, not the {getattr(method, 'name', '?')!r} "
                              "method given", hint=f"use Cloaker.from_pretrained(level={level!r})")

    @property
    def strength(self) -> float:
        """Default perturbation scale for every call (overridable per call); ≥ 0."""
        return self._strength

    @strength.setter
    def strength(self, value: float) -> None:
        self._strength = _check_strength(value)

    def _call_strength(self, strength: float | None) -> float:
        """A call's ``strength=`` argument, or the instance default when None."""
        return self._strength if strength is None else _check_strength(strength)

    @property
    def crop_template(self):
        """The ``faces.templates.Template`` crops must be aligned to (``.size`` px square)."""
        return self._template

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | None = None, backend: str = "auto", device: str | None = None, *,
        strength: float | None = None, level: str | None = None, min_face_size: float | None = None,
        **overrides
    ) -> "Cloaker":
        """Build a cloaker by model name (``nullswap info`` lists them).

        ``name_or_path``: a model name, or a ``.safetensors`` file written by training.
        ``backend``: for the network, "auto" (the best that runs here: onnxruntime on a CPU,
        a CUDA backend on a GPU; see ``nullswap_sdk.backends``) or one of "torch",
        "onnxruntime", "tensorrt", "triton"; PGD and noise run on torch only.
        ``device``: None (a CUDA GPU when torch sees one), "cpu" or "cuda[:N]".
        ``strength``: default perturbation scale (see ``Cloaker.strength``), or ``level``: a
        named, measured operating point, "low" | "mid" | "high" (strengths of the network;
        "mid" = strength 1.0 is the default) or "max" (per-image PGD: seconds per face on a
        CPU; see ``nullswap_sdk.levels``). Pass one of the two, not both.
        ``min_face_size``: smallest face the detector looks for, native pixels (None: the
        detector's default, 24: every face a recogniser can still identify; ~31 ms at 1080p).
        ``overrides`` go to the method's config (e.g. ``steps=20`` for PGD; ``precision="fp16"``,
        ``threads=4`` or ``batch_size=32`` for the network).
        """
        from .models import shipped_models

        strength = _resolve_level(strength, level)  # fail on a bad level before loading models
        name = name_or_path or DEFAULT_MODEL
        lv = _level(level)
        if lv is not None and lv.model is not None:  # a level that runs its own model ("max": PGD)
            if name_or_path is not None and name_or_path != lv.model:
                raise ConfigError(f"level {level!r} runs model {lv.model!r}; got model {name_or_path!r} too",
                                  hint="drop the model, or pick a level of the default network")
            name, overrides = lv.model, {**dict(lv.overrides), **overrides}
        detector = None if min_face_size is None else FaceDetector(min_face_size=min_face_size)
        try:
            if str(name).endswith(".safetensors"):  # trained network weights (training/)
                from .network.cloaker import NetworkCloaker

                method = NetworkCloaker(name, backend=backend, device=device, **overrides)
            elif name in shipped_models():
                method = build_method(name, backend=backend, device=device, **overrides)
            else:
                if backend not in ("auto", "torch"):
                    raise ConfigError(f"backend {backend!r} is not available for {name!r}",
                                      hint="use backend='auto' or 'torch'")
                if device is not None and name.startswith("pgd"):
                    overrides.setdefault("device", device)
                method = build_method(name, **overrides)
        except TypeError as e:  # an override this model does not take (e.g. steps= for the network)
            if "unexpected keyword argument" not in str(e):
                raise
            raise ConfigError(f"model {str(name)!r} does not take that setting ({e})",
                              hint="steps= / --steps is for the pgd models; check the setting against "
                                   "the model's config (`nullswap info` lists the models)") from None
        return cls(method, detector, strength=strength)

    def __repr__(self) -> str:
        if self.method is None:
            return "Cloaker(closed)"
        d = self.method.describe()
        dev = getattr(self.method, "device", None) or d.get("config", {}).get("device", "cpu")
        backend = repr(getattr(self.method, "backend", "torch"))
        if getattr(self.method, "fallback_from", None):
            backend += f" (fallback from {self.method.fallback_from!r})"
        return f"Cloaker(model={self.method.name!r}, backend={backend}, device={dev!r})"

    def __enter__(self) -> "Cloaker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release the models (and the network backend's ONNX Runtime session / GPU graphs);
        the instance must not be used afterwards. Closing twice is harmless. Waits for a call
        in progress on another thread (the lock), so it never frees a model in use."""
        with self._lock:
            release = getattr(self.method, "close", None)
            if callable(release):
                release()
            self.method = None  # type: ignore[assignment]

    def describe(self) -> dict:
        """The method's JSON-able description plus the default ``strength`` (for reports)."""
        return {**self._open_method().describe(), "strength": self._strength}

    def cloak_video(self, src, dst, *, detect_every: int = 5, codec: str = "libx264", crf: float | None = 18,
                    preset: str | None = "ultrafast", overwrite: bool = False, **kw):
        """Cloak every face of video file ``src`` into ``dst`` (needs PyAV: ``[video]`` extra).

        Streams (memory bounded), detects every ``detect_every`` frames and tracks faces between,
        keeps audio, timestamps, rotation and metadata; ``codec``/``crf``/``preset`` set the
        encoder. Written atomically; never overwrites ``src`` or ``dst`` unless ``overwrite``.
        More options (``batch_frames``, ``temporal``, ``min_face_size``, ``progress``, ...):
        ``nullswap_sdk.video.cloak_video``. Returns a ``VideoReport``.
        """
        from .video import cloak_video

        return cloak_video(self, src, dst, detect_every=detect_every, codec=codec, crf=crf, preset=preset,
                           overwrite=overwrite, **kw)

    def cloak_frames(self, frames, *, fps: float = 30.0, lookahead: int = 2, image_format: str = "RGB",
                     detect_every: int = 5, **kw):
        """Cloak a live stream: iterable of (H, W, 3) uint8 frames -> iterator of cloaked frames,
        each yielded at most ``lookahead`` frames after it arrived (see ``nullswap_sdk.video``)."""
        from .video import cloak_frames

        return cloak_frames(self, frames, fps=fps, lookahead=lookahead, image_format=image_format,
                            detect_every=detect_every, **kw)

    def reference(self, photos: Sequence[Any], image_format: str = "RGB") -> "IdentityReference":
        """An identity reference from other photos of the person to protect (per-image models:
        ``level="max"``), to pass as ``cloak(image, reference=...)``.

        ``photos``: (H, W, 3) uint8 arrays in ``image_format`` order, or image file paths; the
        largest face of each is used, photos without a face are skipped (``NoFaceError`` when
        none has one). Use photos that are not themselves being published or cloaked now; a
        few (2-5) are enough, one is not (measured: no gain over none; a warning says so). The
        result holds embeddings only and can be ``save``d.
        """
        from .errors import NoFaceError
        from .imageio import load_image

        method = self._open_method()
        if not callable(getattr(method, "embed_reference", None)):
            raise ConfigError(f"model {getattr(method, 'name', '?')!r} does not take identity references",
                              hint="references steer per-image optimisation: use level='max'")
        if isinstance(photos, (str, np.ndarray)) or not len(photos):
            raise ConfigError("reference photos must be a non-empty list of images or paths",
                              hint="e.g. cloaker.reference(['me_1.jpg', 'me_2.jpg'])")
        crops = []
        for i, p in enumerate(photos):
            rgb = _as_rgb(p, image_format) if isinstance(p, np.ndarray) else load_image(p).rgb  # I/O off the lock
            with self._lock:
                crop = align_largest_face(rgb, self.detector, self._template)
            if crop is not None:
                crops.append(crop)
            else:
                log.warning("reference photo %s: no face found, left out", f"#{i}" if isinstance(p, np.ndarray) else p)
        if not crops:
            raise NoFaceError(f"no face found in any of the {len(photos)} reference photos",
                              hint="pass photos with one clear face of the person each")
        if len(crops) == 1:  # lab, session 15: one photo's mean is still that photo's pose and light
            log.warning("identity reference from one photo: measured no gain over none (two photos did); "
                        "add another photo of the person")
        with self._lock:
            return method.embed_reference(np.stack(crops))

    def check_reference(self, reference: "IdentityReference") -> None:
        """``ConfigError`` unless this cloaker can use ``reference`` (e.g. one loaded with
        ``IdentityReference.load``): a per-image model attacking the surrogates it was built for."""
        _check_reference(self._open_method(), reference)

    @overload
    def cloak(self, image: np.ndarray, image_format: str = ..., *, faces: Sequence[Any] | None = ...,
              strength: float | None = ..., reference: "IdentityReference | None" = ...,
              return_faces: Literal[False] = ...) -> np.ndarray: ...
    @overload
    def cloak(self, image: np.ndarray, image_format: str = ..., *, faces: Sequence[Any] | None = ...,
              strength: float | None = ..., reference: "IdentityReference | None" = ...,
              return_faces: Literal[True]) -> tuple[np.ndarray, list[FaceResult]]: ...

    def cloak(self, image, image_format="RGB", *, faces=None, strength=None, reference=None, return_faces=False):
        """Cloak every face of a photo.

        Args:
            image: (H, W, 3) uint8 array, values 0..255, in ``image_format`` channel order
                ("RGB" or "BGR"); any size (faces are detected on a pyramid, cloaked on
                ``crop_template`` crops and pasted back at native resolution).
            faces: detections to use instead of running the detector: our ``Face``,
                insightface ``Face`` objects (``bbox``/``kps``/``det_score``), or dicts/objects
                with those fields, in ``image`` pixel coordinates (see ``faces.interop``).
            strength: perturbation scale for this call (default: ``self.strength``).
            reference: an ``IdentityReference`` (``Cloaker.reference``) of the person to
                protect: the faces that match it are cloaked away from the person, not only
                from this photo (``FaceResult.reference`` says which). Per-image models only.
            return_faces: also return one ``FaceResult`` per cloaked face (box, landmarks,
                score, strength applied, L∞ and PSNR of the perturbation on the crop).
        Returns:
            A new (H, W, 3) uint8 array in the same channel order; pixels away from faces are
            bit-identical to the input. A photo without faces is returned unchanged (a copy).
        """
        method = self._open_method()
        s = self._call_strength(strength)
        rgb = _as_rgb(image, image_format)
        _check_reference(method, reference)
        if faces is not None:
            faces = as_faces(faces)
        with self._lock:
            if faces is None:
                faces = self.detector.detect(rgb)
            # Crops are taken before any paste, so a private converted copy can be the output.
            out = rgb if rgb is not image else rgb.copy()
            results: list[FaceResult] = []
            if faces:
                aligned = [align_face(rgb, f.landmarks, self._template) for f in faces]
                crops = np.stack([c for c, _ in aligned])
                deltas = _scaled_deltas(method, crops, s, reference)
                used = (getattr(method, "last_stats", {}).get("reference") if reference is not None and s > 0
                        else None) or [False] * len(faces)
                for face, (_, M), delta, ref in zip(faces, aligned, deltas, used):
                    if s > 0:
                        out = paste_delta(out, delta, M, feather=0.0, out=out)
                    results.append(_face_result(face, delta, s, bool(ref)))
                if reference is not None and s > 0 and not any(used):
                    log.warning("the identity reference matched none of the %d face(s); cloaked without it",
                                len(faces))
        if image_format.upper() == "BGR":
            out = _swap_rb(out)
        return (out, results) if return_faces else out

    def cloak_crops(self, crops: np.ndarray, *, strength: float | None = None,
                    reference: "IdentityReference | None" = None) -> np.ndarray:
        """Cloak faces already aligned to ``crop_template`` (pipeline tier, numpy).

        Args:
            crops: (B, S, S, 3) uint8, RGB, 0..255, S = ``crop_template.size`` (256), each
                aligned with ``faces.align.align_face(rgb, landmarks, cloaker.crop_template)``.
            strength: perturbation scale (default ``self.strength``).
            reference: an ``IdentityReference`` for the crops that match it (see ``cloak``).
        Returns:
            (B, S, S, 3) uint8 RGB cloaked crops (a new array). Paste them back yourself, or
            use ``cloak`` for whole photos.
        """
        method = self._open_method()
        s = self._call_strength(strength)
        crops = self._check_crops(crops)
        _check_reference(method, reference)
        with self._lock:
            delta = _scaled_deltas(method, crops, s, reference)
        return np.clip(np.rint(crops + delta), 0, 255).astype(np.uint8)

    def cloak_tensor(self, x: "torch.Tensor", *, strength: float | None = None) -> "torch.Tensor":
        """Cloak aligned crops given as a torch tensor (pipeline tier, torch).

        Args:
            x: (B, 3, S, S) RGB, S = ``crop_template.size`` (256), on any device; either
                uint8 in 0..255 or floating point in [0, 1].
            strength: perturbation scale (default ``self.strength``).
        Returns:
            The cloaked crops with ``x``'s shape, dtype, device and range. Float inputs are
            quantised to 8 bits only to compute the perturbation, which is then added to the
            original values, so no precision is lost elsewhere. Not differentiable (computed
            under ``torch.no_grad``); training uses ``nullswap_sdk.network`` directly.
        """
        import torch

        method = self._open_method()
        s = self._call_strength(strength)
        S = self._template.size
        if not torch.is_tensor(x) or x.ndim != 4 or tuple(x.shape[1:]) != (3, S, S):
            got = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise UnsupportedImageError(f"cloak_tensor expects (B, 3, {S}, {S}), got {got}",
                                        hint="BCHW RGB crops aligned to cloaker.crop_template")
        with torch.no_grad():
            if x.dtype == torch.uint8:
                u8 = x
            elif x.is_floating_point():
                lo, hi = (float(v) for v in torch.aminmax(x.detach())) if x.numel() else (0.0, 0.0)
                if lo < 0.0 or hi > 1.0:
                    raise UnsupportedImageError(
                        f"float crops must be in [0, 1], got values in [{lo:.3g}, {hi:.3g}]",
                        hint="divide 0..255 images by 255, or pass uint8")
                u8 = (x.detach() * 255.0).round_().clamp_(0, 255).to(torch.uint8)
            else:
                raise UnsupportedImageError(f"cloak_tensor expects uint8 or float, got {x.dtype}")
            crops = np.ascontiguousarray(u8.permute(0, 2, 3, 1).cpu().numpy())
            with self._lock:
                delta = _scaled_deltas(method, crops, s)
            d = torch.from_numpy(delta).permute(0, 3, 1, 2).to(x.device)
            if x.dtype == torch.uint8:
                return (x.float() + d).round_().clamp_(0, 255).to(torch.uint8)
            return (x.detach() + (d / 255.0).to(x.dtype)).clamp_(0.0, 1.0)

    def _open_method(self) -> CloakMethod:
        method = self.method
        if method is None:
            raise ConfigError("this Cloaker was closed", hint="create a new one with Cloaker.from_pretrained()")
        return method

    def _check_crops(self, crops) -> np.ndarray:
        S = self._template.size
        if not isinstance(crops, np.ndarray) or crops.ndim != 4 or crops.shape[1:] != (S, S, 3) \
                or crops.dtype != np.uint8:
            got = f"{getattr(crops, 'shape', type(crops).__name__)} {getattr(crops, 'dtype', '')}"
            raise UnsupportedImageError(
                f"cloak_crops expects (B, {S}, {S}, 3) uint8 RGB, got {got}",
                hint=f"align each face with align_face(rgb, landmarks, cloaker.crop_template) "
                     f"({self._template.name!r}) and stack them")
        return np.ascontiguousarray(crops)


_MAX_STRENGTH = 4.0  # beyond this the perturbation is plainly visible: likely a unit mix-up


def _resolve_level(strength: float | None, level: str | None) -> float:
    """The strength a ``strength=`` / ``level=`` pair asks for (the default level when neither)."""
    from .levels import DEFAULT_LEVEL, get_level

    if strength is not None and level is not None:
        raise ConfigError(f"pass strength= or level=, not both (got {strength!r} and {level!r})",
                          hint="a level is a named strength; see nullswap_sdk.levels.LEVELS")
    if strength is not None:
        return _check_strength(strength)
    return get_level(level or DEFAULT_LEVEL).strength


def _level(level: str | None):
    """The named ``levels.Level`` (None when no level was given)."""
    from .levels import get_level

    return None if level is None else get_level(level)


def _check_strength(value) -> float:
    try:
        s = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"strength must be a number, got {value!r}") from None
    if not math.isfinite(s) or not 0.0 <= s <= _MAX_STRENGTH:
        raise ConfigError(f"strength must be in [0, {_MAX_STRENGTH:g}], got {value!r}",
                          hint="1.0 is the trained operating point; 0.5-2 trades quality for protection")
    return s


def _check_reference(method: CloakMethod, reference) -> None:
    from .cloakers.reference import IdentityReference

    if reference is None:
        return
    if not isinstance(reference, IdentityReference):
        raise ConfigError(f"reference must be an IdentityReference, got {type(reference).__name__}",
                          hint="build one with cloaker.reference(photos)")
    if not callable(getattr(method, "embed_reference", None)):
        raise ConfigError(f"model {getattr(method, 'name', '?')!r} does not take identity references",
                          hint="references steer per-image optimisation: use level='max'")
    method.check_reference(reference)


def _scaled_deltas(method: CloakMethod, crops: np.ndarray, strength: float, reference=None) -> np.ndarray:
    """(B, S, S, 3) float32 perturbation scaled by ``strength``, kept inside 0..255."""
    if len(crops) == 0 or strength == 0.0:
        return np.zeros(crops.shape, np.float32)
    raw = method.perturb(crops) if reference is None else method.perturb(crops, reference=reference)
    delta = np.asarray(raw, dtype=np.float32)
    if strength != 1.0:
        c = crops.astype(np.float32)
        delta *= strength
        delta += c
        np.clip(delta, 0.0, 255.0, out=delta)
        delta -= c
    return delta


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
        return _swap_rb(image)
    raise ConfigError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")


def _swap_rb(image: np.ndarray) -> np.ndarray:
    """RGB <-> BGR as a new contiguous array (cv2 is ~50x faster than a numpy [..., ::-1] copy)."""
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)


def _face_result(face: Face, delta: np.ndarray, strength: float, reference: bool = False) -> FaceResult:
    mse = float(np.mean(delta.astype(np.float64) ** 2))
    return FaceResult(
        box=tuple(float(v) for v in face.box),
        landmarks=np.asarray(face.landmarks, np.float32),
        score=float(face.score),
        linf=float(np.abs(delta).max()),
        psnr_crop=float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse)),
        strength=strength,
        reference=reference,
    )

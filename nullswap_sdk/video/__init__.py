"""Video cloaking: ``cloak_video`` (file to file) and ``cloak_frames`` (live frames).

PyAV (``pip install "nullswap-sdk[video]"``) is imported only when a video is opened.
Prefer the ``Cloaker.cloak_video`` / ``Cloaker.cloak_frames`` methods.
"""
from .frames import FrameBatchCloaker, cloak_frames
from .pipeline import VideoReport, cloak_video
from .tracker import FaceTracker

__all__ = ["FaceTracker", "FrameBatchCloaker", "VideoReport", "cloak_frames", "cloak_video"]

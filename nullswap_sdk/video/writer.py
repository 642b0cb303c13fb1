"""Encode cloaked frames and remux the audio into a temporary file beside the destination.

What the output keeps from the input: resolution (odd sizes too: 4:2:0 cannot hold an odd
width, so those are written 4:4:4), frame timestamps (so variable frame rate and duration),
the average rate, rotation metadata (the coded frames are not rotated), bit depth (10-bit in,
10-bit out when the encoder has it), container and stream metadata, and every audio stream:
copied packet for packet when the output container accepts the codec, else re-encoded
(AAC, or Opus for WebM). Subtitle/data streams are not copied (they may name people) and are
listed in the report.
"""
from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ._av import require_av
from .reader import VideoInfo

__all__ = ["VideoWriter", "choose_pix_fmt"]

log = logging.getLogger(__name__)


def choose_pix_fmt(codec: str, in_pix_fmt: str, width: int, height: int) -> str:
    """Output pixel format: the input's depth, 4:4:4 when an odd size forbids 4:2:0."""
    av = require_av()
    supported = [f.name for f in (av.codec.Codec(codec, "w").video_formats or [])]
    ten_bit = "10" in in_pix_fmt or "p010" in in_pix_fmt
    odd = width % 2 or height % 2
    prefs = (["yuv444p10le", "yuv444p"] if odd else ["yuv420p10le", "yuv420p"]) if ten_bit \
        else (["yuv444p"] if odd else ["yuv420p"])
    for p in prefs:
        if not supported or p in supported:
            return p
    if odd:
        raise ConfigError(f"{codec} cannot encode an odd size ({width}x{height})",
                          hint="use codec='libx264' (4:4:4) or an even-sized input")
    return supported[0]


class VideoWriter:
    """Writes to ``path`` (a temporary name; the caller renames it into place)."""

    def __init__(self, path: Path, fmt_hint: str, src_container, vstream, audio_streams, info: VideoInfo,
                 *, codec: str, crf: float | None, preset: str | None, threads: int = 0) -> None:
        av = require_av()
        self.av = av
        try:
            self.out = av.open(str(path), "w", format=fmt_hint)
        except (av.error.FFmpegError, ValueError) as e:
            raise ConfigError(f"cannot write a {fmt_hint!r} file ({e})",
                              hint="use a .mp4, .mkv, .mov or .webm output name") from None
        self.out.metadata.update({k: v for k, v in src_container.metadata.items()
                                  if k not in ("encoder", "major_brand", "minor_version", "compatible_brands")})
        try:
            kind = av.codec.Codec(codec, "w").type
        except ValueError:  # av's UnknownCodecError
            kind = None
        if kind != "video":  # unknown, or an audio/subtitle encoder (e.g. aac)
            raise ConfigError(f"{codec!r} is not a known video encoder",
                              hint="e.g. libx264, libx265, libvpx-vp9, libsvtav1, mpeg4")
        rate = info.rate or Fraction(30)
        v = self.out.add_stream(codec, rate=rate)
        v.width, v.height = info.width, info.height
        self.pix_fmt = choose_pix_fmt(codec, info.pix_fmt, info.width, info.height)
        v.pix_fmt = self.pix_fmt
        # Keep the input's timestamps (variable frame rate, exact duration).
        v.codec_context.time_base = info.time_base
        v.time_base = info.time_base
        v.codec_context.thread_count = threads
        opts = {}
        if crf is not None:
            opts["crf"] = str(crf)
        if preset and codec in ("libx264", "libx265"):
            opts["preset"] = preset
        if codec == "libvpx-vp9" and crf is not None:
            opts["b"] = "0"  # constant-quality mode
        v.codec_context.options = opts
        v.metadata.update({k: val for k, val in vstream.metadata.items() if k in ("language", "title")})
        # Same colour tags as the input: the YUV values are (nearly) the input's own.
        for attr in ("colorspace", "color_range", "color_primaries", "color_trc"):
            try:
                setattr(v.codec_context, attr, getattr(vstream.codec_context, attr))
            except (AttributeError, TypeError, ValueError):
                pass
        if info.rotation:
            if hasattr(v, "set_display_rotation"):
                v.set_display_rotation(info.rotation)
            else:  # pragma: no cover - PyAV < 18
                log.warning("this PyAV cannot write rotation metadata; output is stored unrotated")
        try:  # open the encoder now: bad settings fail here, typed, not on the encode thread
            v.codec_context.open(strict=False)
        except av.error.FFmpegError as e:
            self.out.close()
            raise ConfigError(f"the {codec} encoder refused its settings (crf={crf}, preset={preset}): {e}",
                              hint="x264/x265: crf 0-51, preset ultrafast ... veryslow") from None
        self.vstream = v
        self._tb = info.time_base
        self._last_pts: int | None = None
        self._frame_step = max(1, int(round(1 / (float(rate) * float(info.time_base))))) if info.time_base else 1
        # Audio: copy when the container takes the codec, else re-encode.
        self.audio: dict[int, tuple[object, bool]] = {}
        self.audio_modes: list[str] = []
        supported = self.out.supported_codecs
        for a in audio_streams:
            name = a.codec_context.name
            if name in supported:
                oa = self.out.add_stream_from_template(a)
                self.audio[a.index] = (oa, True)
                self.audio_modes.append(f"{name} copied")
            else:
                enc = "libopus" if self.out.format.name == "webm" else "aac"
                oa = self.out.add_stream(enc, rate=a.codec_context.sample_rate or 48000)
                if a.codec_context.layout:
                    oa.layout = a.codec_context.layout
                self.audio[a.index] = (oa, False)
                self.audio_modes.append(f"{name} re-encoded to {enc}")
            oa.metadata.update({k: val for k, val in a.metadata.items() if k in ("language", "title")})
        self.frames = 0

    def write_frame(self, rgb: np.ndarray, pts: int | None, cv_yuv: bool = False) -> None:
        if cv_yuv and self.pix_fmt == "yuv420p":  # the inverse of reader.to_rgb's cv2 path
            import cv2

            f = self.av.VideoFrame.from_ndarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420), format="yuv420p")
        else:
            f = self.av.VideoFrame.from_ndarray(rgb, format="rgb24")
        if pts is None or (self._last_pts is not None and pts <= self._last_pts):
            pts = 0 if self._last_pts is None else self._last_pts + self._frame_step
        f.pts, f.time_base = pts, self._tb
        self._last_pts = pts
        for p in self.vstream.encode(f):
            self.out.mux(p)
        self.frames += 1

    def write_audio(self, packet) -> None:
        entry = self.audio.get(packet.stream.index)
        if entry is None:
            return
        oa, copy = entry
        if copy:
            packet.stream = oa
            self.out.mux(packet)
            return
        for fr in packet.decode():
            fr.pts = None  # the encoder numbers samples itself
            for p in oa.encode(fr):
                self.out.mux(p)

    def close(self) -> None:
        """Flush the encoders and finish the file."""
        for p in self.vstream.encode():
            self.out.mux(p)
        for oa, copy in self.audio.values():
            if not copy:
                for p in oa.encode():
                    self.out.mux(p)
        self.out.close()

    def abort(self) -> None:
        try:
            self.out.close()
        except Exception:  # noqa: BLE001 - already failing; the temp file is removed anyway
            pass

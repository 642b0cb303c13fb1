"""``cloak_video``: file in, file out, decode / cloak / encode overlapped in three threads.

reader thread  -> queue (bounded) -> this thread: track + one perturb per batch + paste
               -> queue (bounded) -> writer thread: encode + mux (audio remuxed in order)

FFmpeg and torch/ONNX Runtime release the GIL, so the stages overlap on separate cores;
the bounded queues cap memory at ~(2 * queue_size + batch_frames) frames whatever the length.
The output is written to a temporary file beside ``dst`` and renamed over it only when
complete; the input and an existing ``dst`` are never overwritten unless ``overwrite``.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import ConfigError, OutputExistsError
from .frames import FrameBatchCloaker
from .reader import iter_items, open_video
from .writer import VideoWriter

__all__ = ["VideoReport", "cloak_video"]

_END = object()
_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".avi": "avi"}


@dataclass
class VideoReport:
    """What ``cloak_video`` did. ``fps`` is end to end (decode + cloak + encode)."""

    src: str
    dst: str
    frames: int
    width: int
    height: int
    rate: float | None
    duration_s: float | None
    rotation: int
    pix_fmt_in: str
    pix_fmt_out: str
    codec: str
    crf: float | None
    faces_cloaked: int  # faces cloaked, summed over frames
    perturbations: int  # method outputs computed (faces_cloaked / perturb_every, roughly)
    frames_with_faces: int
    tracks: int  # distinct face tracks started
    backfilled: int  # faces cloaked on frames before the detection that found them
    detections: int  # detector runs
    min_face_size: float
    audio: list[str] = field(default_factory=list)
    dropped_streams: list[str] = field(default_factory=list)
    decode_errors: int = 0
    seconds: float = 0.0
    fps: float = 0.0
    cpu_seconds: float = 0.0  # CPU time of the whole process (all threads, encoder's included)
    stage_seconds: dict = field(default_factory=dict)  # busy time per stage (they overlap)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return (f"{self.frames} frames {self.width}x{self.height} in {self.seconds:.1f} s ({self.fps:.1f} fps), "
                f"{self.faces_cloaked} faces cloaked in {self.frames_with_faces} frames "
                f"({self.tracks} track(s)), audio: {', '.join(self.audio) or 'none'}")


def _temp_path(dst: Path) -> Path:
    # The suffix stays last so FFmpeg can pick the container from it.
    return dst.with_name(f".{dst.stem}.nullswap-{os.getpid()}-{threading.get_ident()}.tmp{dst.suffix}")


def _put(q: queue.Queue, item, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def cloak_video(cloaker, src, dst, *, detect_every: int = 5, codec: str = "libx264", crf: float | None = 18,
                preset: str | None = "ultrafast", batch_frames: int = 8, temporal: float = 1.0,
                perturb_every: int = 2,
                min_face_size: float | None = None, overwrite: bool = False, threads: int = 0,
                queue_size: int = 8, progress: Callable[[int], None] | None = None, **tracker_kw) -> VideoReport:
    """Cloak every face of video ``src`` into ``dst`` (see ``Cloaker.cloak_video``).

    detect_every: detector runs every N frames, optical flow tracks faces in between.
    codec, crf, preset: encoder settings (preset ``ultrafast`` is what keeps frame rate on
        2 cores; ``veryfast`` makes ~30 % smaller files at the same crf for ~3x the encode time).
    batch_frames: at most this many frames per ``method.perturb`` call (all their faces in
        one batch); batches also end on each detection frame.
    temporal, perturb_every: temporal blending and reuse of perturbations (``frames``).
    min_face_size: see ``frames.video_detector``; threads: encoder threads (0 = auto).
    queue_size: frames buffered between stages; progress: called with 1 per frame written.
    tracker_kw: ``FaceTracker`` settings (iou_threshold, max_misses, min_cutoff, beta, ...).
    """
    src, dst = Path(src), Path(dst)
    fmt = _FORMATS.get(dst.suffix.lower())
    if fmt is None:
        raise ConfigError(f"unsupported output extension {dst.suffix!r}", hint=f"use one of {sorted(_FORMATS)}")
    if batch_frames < 1 or queue_size < 1:
        raise ConfigError(f"batch_frames and queue_size must be >= 1, got {batch_frames}, {queue_size}")
    if dst.exists() and not overwrite:
        what = "the input" if src.exists() and dst.resolve() == src.resolve() else "an existing file"
        raise OutputExistsError(f"{dst} is {what}; refusing to overwrite it",
                                hint="choose another output path, or pass overwrite=True (CLI: --overwrite)")
    if not dst.parent.is_dir():
        raise ConfigError(f"output folder {dst.parent} does not exist", hint="create it first")
    container, vstream, audio, info = open_video(src)
    t_start, cpu_start = time.perf_counter(), time.process_time()
    stats: dict = {}
    items = iter_items(container, vstream, audio, stats)
    # Peek the first frame: its rotation and real pixel format configure the writer.
    head = []
    writer = None
    try:
        for kind, obj in items:
            head.append((kind, obj))
            if kind == "video":
                break
        info.rotation = stats.get("rotation", 0)
        info.pix_fmt = stats.get("pix_fmt", info.pix_fmt)
        tmp = _temp_path(dst)
        writer = VideoWriter(tmp, fmt, container, vstream, audio, info, codec=codec, crf=crf,
                             preset=preset, threads=threads)
        proc = FrameBatchCloaker(cloaker, detect_every=detect_every, temporal=temporal, rotation=info.rotation,
                                 min_face_size=min_face_size, perturb_every=perturb_every, **tracker_kw)
        # Keyframe detection runs on the decode thread (cv2 releases the GIL), off the critical
        # path of the cloaking thread; the tracker takes its result on that frame.
        tracker = proc.prepare(head[-1][1].rgb.shape)
    except BaseException:  # e.g. a bad detect_every/temporal: release the input and the output
        if writer is not None:
            writer.abort()
            tmp.unlink(missing_ok=True)
        container.close()
        raise
    q_in: queue.Queue = queue.Queue(queue_size)
    q_out: queue.Queue = queue.Queue(queue_size)
    stop = threading.Event()
    errors: list[BaseException] = []
    busy = {"decode": 0.0, "detect": 0.0, "encode": 0.0}
    n_read = [0]

    def detect_on(it) -> None:
        if it[0] == "video":
            if tracker.is_keyframe(n_read[0]):
                t = time.perf_counter()
                it[1].faces = tracker.detect(it[1].rgb)
                busy["detect"] += time.perf_counter() - t
            n_read[0] += 1

    def read() -> None:
        try:
            for it in head:
                detect_on(it)
                if not _put(q_in, it, stop):
                    return
            t = time.perf_counter()
            for it in items:
                busy["decode"] += time.perf_counter() - t
                detect_on(it)
                if not _put(q_in, it, stop):
                    return
                t = time.perf_counter()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(e)
            stop.set()
        finally:
            _put(q_in, _END, stop)

    def write() -> None:
        try:
            while True:
                it = q_out.get()
                if it is _END:
                    break
                t = time.perf_counter()
                kind, obj = it
                if kind == "video":
                    writer.write_frame(obj.rgb, obj.pts, obj.cv_yuv)
                    if progress:
                        progress(1)
                else:
                    writer.write_audio(obj)
                busy["encode"] += time.perf_counter() - t
            t = time.perf_counter()
            writer.close()
            busy["encode"] += time.perf_counter() - t
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
            stop.set()
            while q_out.get() is not _END:  # drain so the producer never blocks
                pass

    reader = threading.Thread(target=read, name="nullswap-decode", daemon=True)
    writer_t = threading.Thread(target=write, name="nullswap-encode", daemon=True)
    reader.start()
    writer_t.start()
    ok = False
    try:
        batch: list = []
        n_video, in_batch = 0, [0]

        def flush() -> None:
            vids = [o for k, o in batch if k == "video"]
            proc.process([v.rgb for v in vids], [v.time for v in vids], [v.faces for v in vids])
            for it in batch:
                if not _put(q_out, it, stop):
                    break
            batch.clear()
            in_batch[0] = 0

        while True:
            try:
                it = q_in.get(timeout=0.1)
            except queue.Empty:
                if stop.is_set():
                    break
                continue
            if it is _END or stop.is_set():
                break
            batch.append(it)
            if it[0] == "video":
                n_video += 1
                # Batches end on a detection frame, so a face it finds can be backfilled over
                # the frames since the previous one (frames.py); batch_frames caps the batch.
                in_batch[0] += 1
                if tracker.is_keyframe(n_video - 1) or in_batch[0] >= batch_frames:
                    flush()
        if not stop.is_set():
            flush()
        ok = not errors
    finally:
        q_out.put(_END)
        writer_t.join()
        stop.set()
        while reader.is_alive():  # unblock a reader waiting on a full queue
            try:
                q_in.get_nowait()
            except queue.Empty:
                reader.join(0.05)
        container.close()
        if not ok or errors:
            writer.abort()
            tmp.unlink(missing_ok=True)
    if errors:
        raise errors[0]
    if dst.exists() and not overwrite:  # appeared while we worked
        tmp.unlink(missing_ok=True)
        raise OutputExistsError(f"{dst} appeared while cloaking; refusing to overwrite it")
    os.replace(tmp, dst)
    seconds = time.perf_counter() - t_start
    stage = {k: round(v, 3) for k, v in {**busy, **proc.seconds}.items()}
    return VideoReport(
        src=str(src), dst=str(dst), frames=proc.frames, width=info.width, height=info.height,
        rate=float(info.rate) if info.rate else None, duration_s=info.duration_s, rotation=info.rotation,
        pix_fmt_in=info.pix_fmt, pix_fmt_out=writer.pix_fmt, codec=codec, crf=crf,
        faces_cloaked=proc.faces, perturbations=proc.perturbed, frames_with_faces=proc.frames_with_faces,
        tracks=proc.tracker.tracks_started if proc.tracker else 0, backfilled=proc.backfilled,
        detections=proc.tracker.detections_run if proc.tracker else 0,
        min_face_size=proc.detector.min_face_size if proc.tracker else 0.0,
        audio=writer.audio_modes, dropped_streams=info.other_streams,
        decode_errors=stats.get("decode_errors", 0), seconds=seconds,
        cpu_seconds=time.process_time() - cpu_start,
        fps=proc.frames / seconds if seconds > 0 else 0.0, stage_seconds=stage)

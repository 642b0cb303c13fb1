"""``nullswap cloak-video IN -o OUT``: one video in, one cloaked video out."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ..errors import ConfigError, InputError, OutputExistsError
from ._common import add_overrides, log, parse_overrides

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    v = sub.add_parser("cloak-video", help="cloak every face of a video (needs the [video] extra)",
                       epilog="exit codes: 0 written (a video without faces included), 1 bad input or "
                              "existing output (nothing written), 2 bad arguments or model, 130 interrupted")
    v.add_argument("input", help="video file (mp4, mov, mkv, webm, ...)")
    v.add_argument("-o", "--output", required=True, help="output video file (.mp4, .mov, .mkv, .webm)")
    v.add_argument("--model", default=None, help="cloaking model (default: the shipped default; see `info`)")
    v.add_argument("--detect-every", type=int, default=5, help="run the face detector every N frames (default 5)")
    v.add_argument("--codec", default="libx264", help="video encoder (default libx264)")
    v.add_argument("--crf", type=float, default=18, help="encoder quality, lower is better (default 18)")
    v.add_argument("--preset", default="ultrafast",
                   help="x264/x265 speed preset (default ultrafast: frame rate on 2 cores; veryfast: smaller files)")
    v.add_argument("--min-face-size", type=float, default=None,
                   help="smallest face in native px (default: what one detector pass finds, 48 at 1080p)")
    v.add_argument("--batch-frames", type=int, default=8,
                   help="at most this many frames per cloaking call (default 8; batches also end on detections)")
    v.add_argument("--temporal", type=float, default=1.0,
                   help="weight of each frame's new perturbation vs the previous one (1 = no blending)")
    v.add_argument("--perturb-every", type=int, default=2,
                   help="run the network every K frames per face, reusing its perturbation between (default 2)")
    v.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    v.add_argument("--report", default=None, help="also write the run's report as JSON here")
    add_overrides(v, "threads=2")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..cloaker import Cloaker

    src, dst = Path(args.input), Path(args.output)
    if args.report and not Path(args.report).parent.is_dir():  # checked before any work is done
        raise ConfigError(f"--report folder {Path(args.report).parent} does not exist", hint="create it first")
    cloaker = Cloaker.from_pretrained(args.model, **parse_overrides(args))
    if cloaker.method.name.startswith("pgd"):
        raise ConfigError(f"{cloaker.method.name!r} computes each face by optimisation (~20 s per face); "
                          "it cannot run on video", hint="pass --model with the network (see `nullswap info`)")
    with cloaker:  # releases the backend's session when done
        return _run(cloaker, src, dst, args, progress_bar=tqdm)


def _run(cloaker, src: Path, dst: Path, args, progress_bar) -> int:
    from ..video.reader import open_video

    try:
        if dst.exists() and not args.overwrite:
            raise OutputExistsError(f"{dst} exists; refusing to overwrite it", hint="pass --overwrite to replace it")
        container, _, _, info = open_video(src)  # fail fast on bad input, and size the bar
        container.close()
        bar = progress_bar(total=info.frames or None, unit="frame", desc=src.name, disable=args.quiet,
                   smoothing=0.1, dynamic_ncols=True)
        with bar:
            report = cloaker.cloak_video(src, dst, detect_every=args.detect_every, codec=args.codec, crf=args.crf,
                                         preset=args.preset, overwrite=args.overwrite,
                                         min_face_size=args.min_face_size, batch_frames=args.batch_frames,
                                         temporal=args.temporal, perturb_every=args.perturb_every,
                                         progress=bar.update)
    except InputError as e:  # bad input / existing output: a failed file, as in `cloak`
        log.error("%s", e)  # the message names the file
        return 1
    if report.frames_with_faces == 0:
        log.warning("%s: no face found (at least %.0f px); written re-encoded but unchanged", src,
                    report.min_face_size)
    if args.report:  # atomic, like every other output
        report_path = Path(args.report)
        tmp = report_path.with_name(f".{report_path.name}.tmp")
        tmp.write_text(json.dumps(report.to_dict(), indent=2))
        os.replace(tmp, report_path)
    if not args.quiet:
        print(f"{dst}: {report.summary()}")
    return 0

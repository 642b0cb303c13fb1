"""``nullswap`` command line: cloak, eval, info, export."""
from __future__ import annotations

import argparse
import logging
import sys

from .errors import NullSwapError

__all__ = ["main"]

log = logging.getLogger("nullswap")

EXIT_OK, EXIT_FAILURES, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nullswap", description="Cloak identities in photos against face swapping.")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    p.add_argument("-q", "--quiet", action="store_true", help="only errors")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("cloak", help="cloak photos (files, folders, globs)",
                       description="Cloak every face in photos; outputs keep each input's format.",
                       epilog="exit codes: 0 every image written (photos without faces included), "
                              "1 some images failed (reported; the others were written), "
                              "2 bad arguments or model: nothing processed, 130 interrupted")
    c.add_argument("inputs", nargs="+", help="image files, folders (recursive) or glob patterns")
    # -q/-v also after the subcommand (SUPPRESS: absent here keeps the top-level value).
    c.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help="more logging")
    c.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="only errors")
    c.add_argument("-o", "--output", help="output file (one input) or folder (structure mirrored)")
    c.add_argument("--in-place", action="store_true", help="overwrite the inputs (atomically)")
    c.add_argument("--model", default=None, help="cloaking model (default: the shipped default; see `info`)")
    c.add_argument("--quality", type=int, default=95, help="JPEG/WebP quality (default 95)")
    c.add_argument("--strength", type=float, default=None,
                   help="perturbation scale (default 1.0; 0.5-2 trades quality for protection)")
    c.add_argument("--min-face", type=float, default=None, metavar="PX",
                   help="smallest face to find, native pixels (default 48; 24 also finds tiny "
                        "background faces, ~3-5x slower detection on large photos)")
    c.add_argument("--keep-metadata", action="store_true",
                   help="keep EXIF (GPS included!); by default EXIF, XMP and comments are stripped "
                        "and only the ICC colour profile is kept")
    c.add_argument("--overwrite", action="store_true", help="replace existing output files")
    c.add_argument("--steps", type=int, default=None, help="PGD steps (pgd models only)")
    c.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a model config field, e.g. --set psnr_floor=38 (repeatable)")

    e = sub.add_parser("eval", help="measure protection and quality (DESIGN.md §4 protocol)")
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", choices=["lfw-val", "celeba-wild"], help="built-in split of ../shared/data")
    src.add_argument("--clean", help="folder of clean photos, one sub-folder per identity")
    e.add_argument("--cloaked", help="folder mirroring --clean with cloaked copies (else --model cloaks)")
    e.add_argument("--model", default=None, help="cloaking model used when no --cloaked folder is given")
    e.add_argument("--recognisers", default=None, help="comma list (default: every available recogniser)")
    e.add_argument("--limit", type=int, default=None, help="at most this many probe identities")
    e.add_argument("--steps", type=int, default=None, help="PGD steps (pgd models only)")
    e.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a model config field, e.g. --set psnr=35 (repeatable)")
    e.add_argument("--strength", type=float, default=None, help="perturbation scale of --model (default 1.0)")
    e.add_argument("--out", required=True, help="report prefix: writes PREFIX.json and PREFIX.md")
    e.add_argument("--title", default=None, help="Markdown heading")

    i = sub.add_parser("info", help="models, recognisers, backends and versions")
    i.add_argument("--card", nargs="?", const="nullswap-net", default=None, metavar="MODEL",
                   help="print a shipped model's card (Markdown) instead (default: nullswap-net)")

    from .cli_export import add_export_parser  # light: onnx/tensorrt load only when exporting

    add_export_parser(sub)

    from .cli_video import add_video_parser  # light: PyAV loads only when a video is opened

    add_video_parser(sub)
    return p


def parse_overrides(args) -> dict:
    """``--steps`` and ``--set KEY=VALUE`` (VALUE parsed as JSON when it can be) as kwargs."""
    import json

    from .errors import ConfigError

    out = {"steps": args.steps} if getattr(args, "steps", None) else {}
    for item in getattr(args, "overrides", []):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}", hint="e.g. --set psnr_floor=38")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    level = logging.ERROR if args.quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "cloak":
            from .cli_cloak import run_cloak

            return run_cloak(args)
        if args.command == "cloak-video":
            from .cli_video import run_cloak_video

            return run_cloak_video(args)
        if args.command == "export":
            from .cli_export import run_export

            return run_export(args)
        if args.command == "eval":
            from .cli_eval import run_eval

            return run_eval(args)
        from .cli_info import run_info

        return run_info(args)
    except NullSwapError as e:
        log.error("%s", e)
        return EXIT_USAGE
    except KeyboardInterrupt:
        log.error("interrupted; finished outputs are complete, partial ones were not written")
        return 130
    except Exception as e:  # a bug, not a user error: one line, the traceback only with -vv
        log.error("unexpected %s: %s (run with -vv for the traceback, and please report it)",
                  type(e).__name__, e)
        log.debug("traceback", exc_info=True)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

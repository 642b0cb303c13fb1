"""``nullswap compare CLEAN CLOAKED -o sheet.png``: per-face contact sheet and numbers."""
from __future__ import annotations

import argparse
import json

from ._common import add_verbosity

__all__ = ["add_parser", "run", "load_embedder"]


def add_parser(sub) -> None:
    c = sub.add_parser("compare", help="per-face contact sheet of a clean and a cloaked photo",
                       description="Draw each face clean, cloaked and as an amplified difference, with "
                                   "face-box PSNR/SSIM and identity cosines (where recognisers are available).",
                       epilog="exit codes: 0 written, 2 bad input (sizes differ, no face, unreadable) or arguments")
    c.add_argument("clean", help="the original photo")
    c.add_argument("cloaked", help="its cloaked copy (same size)")
    add_verbosity(c)
    c.add_argument("-o", "--output", required=True, help="sheet to write (.png)")
    c.add_argument("--recognisers", default=None,
                   help="comma list for identity cosines (default: every available one; 'none' skips)")
    c.add_argument("--amplify", type=float, default=10.0, help="difference gain around grey (default 10)")
    c.add_argument("--min-face", type=float, default=None, metavar="PX",
                   help="smallest face to compare, native pixels (default: the photo default, 24)")
    c.add_argument("--max-faces", type=int, default=None, help="at most this many faces, largest first")
    c.add_argument("--overwrite", action="store_true", help="replace an existing sheet")
    c.add_argument("--json", dest="json_out", default=None, help="also write the per-face numbers as JSON here")


def load_embedder(spec: str | None):
    """A PhotoEmbedder for ``spec`` (comma list, None = every available recogniser), or None."""
    from ..recognisers import available_recognisers

    if spec is not None and spec.strip().lower() == "none":
        return None
    names = tuple(n for n in spec.split(",") if n) if spec else available_recognisers()
    if not names:
        return None
    from ..evaluation.embedder import PhotoEmbedder

    return PhotoEmbedder(names)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..errors import ConfigError, OutputExistsError
    from ..evaluation.sheet import write_sheet
    from ..faces.detect import FaceDetector
    from ..imageio import load_image

    out = Path(args.output)
    if out.suffix.lower() != ".png":
        raise ConfigError(f"-o {out.name}: the sheet is written as PNG", hint="name it e.g. sheet.png")
    if out.exists() and not args.overwrite:
        raise OutputExistsError(f"{out} exists", hint="choose another -o, or pass --overwrite")
    if args.amplify <= 0:
        raise ConfigError(f"--amplify must be > 0, got {args.amplify}", hint="10 is the default")
    clean, cloaked = load_image(args.clean).rgb, load_image(args.cloaked).rgb
    detector = FaceDetector(min_face_size=args.min_face) if args.min_face else FaceDetector()
    ((_, faces),) = write_sheet(out, [(clean, cloaked, "")], detector=detector,
                                embedder=load_embedder(args.recognisers), amplify=args.amplify,
                                max_faces=args.max_faces, title=f"{Path(args.clean).name} vs {Path(args.cloaked).name}",
                                overwrite=True)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps([f.to_dict() for f in faces], indent=2) + "\n")
    if not args.quiet:
        for i, f in enumerate(faces, 1):
            cos = " ".join(f"cos {r} {c:.3f}" for r, c in f.cosine.items())
            print(f"face {i}: {f.size} px  PSNR {f.psnr:.2f} dB  SSIM {f.ssim:.4f}  {cos}".rstrip())
        print(f"wrote {out}")
    return 0

"""``nullswap reference``: build an identity reference from photos of a person and save it.

``nullswap cloak --level max --reference me.npz`` then reuses it for every photo of a batch
(and across batches) instead of detecting and embedding the reference photos each run. The
file holds embeddings only, no pixels.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError
from ._common import add_level_argument, add_overrides, add_verbosity, parse_overrides, resolve_level

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    r = sub.add_parser("reference", help="save an identity reference (.npz) from photos of the person to protect",
                       description="Embed the largest face of each photo with the surrogates of the chosen "
                                   "per-image level (default: max) and save their mean per surrogate, for "
                                   "`nullswap cloak --level max --reference FILE.npz`.",
                       epilog="exit codes: 0 written, 2 bad arguments, unreadable photos or no face in any "
                              "photo: nothing written")
    r.add_argument("photos", nargs="+",
                   help="other photos of the person (2-5: one alone measured no gain; not the ones you publish)")
    r.add_argument("-o", "--output", required=True, help="reference file to write (.npz)")
    r.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    r.add_argument("--model", default=None, help="per-image model (default: the one --level max runs)")
    add_level_argument(r)
    r.add_argument("--min-face", type=float, default=None, metavar="PX", help="smallest face to find, native pixels")
    add_overrides(r, 'recognisers=["sface","facenet"]')
    add_verbosity(r)


def run(args: argparse.Namespace) -> int:
    from ..cloaker import Cloaker

    out = Path(args.output)
    if out.suffix.lower() != ".npz":
        raise ConfigError(f"-o {out}: a reference file must end in .npz", hint=f"e.g. -o {out.with_suffix('.npz')}")
    if out.is_dir():
        raise ConfigError(f"-o {out} is a folder", hint="name the file, e.g. -o me.npz")
    if out.exists() and not args.overwrite:
        raise ConfigError(f"{out} exists", hint="pass --overwrite to replace it, or choose another -o")
    photos = args.photos
    if any(Path(p).resolve() == out.resolve() for p in photos):
        raise ConfigError(f"-o {out} is one of the photos", hint="choose another -o")
    if args.level is None and args.model is None:
        args.level = "max"  # references steer per-image optimisation; max is the level that has it
    resolve_level(args)
    overrides = parse_overrides(args)
    with Cloaker.from_pretrained(args.model, min_face_size=args.min_face, **overrides) as cloaker:
        reference = cloaker.reference(photos)  # typed errors: unreadable, no face anywhere
    reference.save(out)
    skipped = len(photos) - reference.photos
    if not args.quiet:
        print(f"reference from {reference.photos}/{len(photos)} photo(s) ({', '.join(sorted(reference.embeddings))})"
              + (f", {skipped} without a face skipped" if skipped else "") + f": {out}")
    return 0

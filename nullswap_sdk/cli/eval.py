"""``nullswap eval``: run the protection protocol on a built-in split or on user folders."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError
from ..recognisers import available_recognisers
from ._common import add_level_argument, add_overrides, log, parse_overrides, resolve_level

__all__ = ["add_parser", "run", "build_sets", "available_recognisers"]


def add_parser(sub) -> None:
    e = sub.add_parser("eval", help="measure protection and quality (DESIGN.md §4 protocol)")
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", choices=["lfw-val", "celeba-wild"], help="built-in split of ../shared/data")
    src.add_argument("--clean", help="folder of clean photos, one sub-folder per identity")
    e.add_argument("--cloaked", help="folder mirroring --clean with cloaked copies (else --model cloaks)")
    e.add_argument("--model", default=None, help="cloaking model used when no --cloaked folder is given")
    e.add_argument("--recognisers", default=None, help="comma list (default: every available recogniser)")
    e.add_argument("--limit", type=int, default=None, help="at most this many probe identities")
    e.add_argument("--steps", type=int, default=None, help="PGD steps (pgd models only)")
    add_overrides(e, "threads=2")
    e.add_argument("--strength", type=float, default=None, help="perturbation scale of --model (default 1.0)")
    add_level_argument(e)
    e.add_argument("--out", required=True, help="report prefix: writes PREFIX.json and PREFIX.md")
    e.add_argument("--title", default=None, help="Markdown heading")
    e.add_argument("--sheet-faces", type=int, default=4, metavar="N",
                   help="also write PREFIX.sheet.png: the first N probes' faces clean, cloaked and as an "
                        "amplified difference, with their numbers (default 4; 0: no sheet)")


def _folder_identities(root: Path) -> dict[str, list[Path]]:
    from .cloak import IMAGE_SUFFIXES

    ids = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            ids[d.name] = files
    if not ids:
        raise ConfigError(f"{root}: no identity sub-folders with images", hint="lay out ROOT/<identity>/<photo>")
    return ids


def build_sets(args):
    """(probes, gallery) per DESIGN.md §4: one clean gallery photo and one probe per identity."""
    from ..evaluation import datasets
    from ..evaluation.protocol import Probe

    if args.dataset == "lfw-val":
        ids = datasets.lfw_identities()
        _, val = datasets.split_identities(ids)
        ids = {n: ids[n] for n in val}
    elif args.dataset == "celeba-wild":
        ids = datasets.celeba_wild_identities()
    else:
        ids = _folder_identities(Path(args.clean))
    gallery, probe_pairs = datasets.identification_sets(ids)
    if args.limit:
        keep = {n for n, _ in datasets.identification_sets(ids, max_identities=args.limit)[1]}
        probe_pairs = [(n, p) for n, p in probe_pairs if n in keep]
    probes = []
    for ident, path in probe_pairs:
        cloaked = None
        if args.cloaked:
            cloaked = Path(args.cloaked) / path.relative_to(Path(args.clean))
            if not cloaked.is_file():
                raise ConfigError(f"missing cloaked copy {cloaked}", hint="mirror the --clean layout in --cloaked")
        probes.append(Probe(ident, path, cloaked))
    return probes, gallery


def run(args: argparse.Namespace) -> int:
    from ..evaluation.protocol import EvalConfig, evaluate
    from ..evaluation.report import to_markdown, write_report

    if args.cloaked and not args.clean:
        raise ConfigError("--cloaked needs --clean", hint="pass the folder of originals too")
    resolve_level(args)
    recs = tuple(args.recognisers.split(",")) if args.recognisers else available_recognisers()
    probes, gallery = build_sets(args)
    cloaker = None
    if not args.cloaked:
        from ..cloaker import Cloaker

        cloaker = Cloaker.from_pretrained(args.model, **parse_overrides(args))
        if args.strength is not None:
            cloaker.strength = args.strength
    report = evaluate(probes, gallery, EvalConfig(recognisers=recs), cloaker=cloaker, progress=not args.quiet)
    name = "precomputed" if args.cloaked else (args.model or "default")
    title = args.title or f"{args.dataset or args.clean}: {name}"
    js, md_path = write_report(report, args.out, title)
    sheet = _write_sheet(args, probes, cloaker, recs, title) if args.sheet_faces > 0 else None
    if not args.quiet:
        print(to_markdown(report, title))
        print(f"wrote {js} and {md_path}" + (f" and {sheet}" if sheet else ""))
    return 0


def _write_sheet(args, probes, cloaker, recs: tuple[str, ...], title: str) -> Path | None:
    """PREFIX.sheet.png of the first probes with a face. Cloaked copies are the given files,
    or the cloaker's output saved as ``evaluate`` saves it (the cloak is deterministic)."""
    from ..evaluation.protocol import EvalConfig, encode_as_saved
    from ..evaluation.sheet import write_sheet
    from ..imageio import load_image
    from .compare import load_embedder

    pairs = []
    for probe in probes[:args.sheet_faces]:
        img = load_image(probe.clean)
        if probe.cloaked is not None:
            cloaked = load_image(probe.cloaked).rgb
        else:
            cloaked = encode_as_saved(cloaker.cloak(img.rgb), img.format or "PNG", EvalConfig(recs).save_quality)
        pairs.append((img.rgb, cloaked, probe.identity))
    path = Path(f"{args.out}.sheet.png")
    done = write_sheet(path, pairs, embedder=load_embedder(",".join(recs) or "none"), max_faces=1,
                       title=title, skip_faceless=True)
    for label, faces in done:
        if not faces:
            log.warning("sheet: no face found in %s's probe; left out", label)
    return path

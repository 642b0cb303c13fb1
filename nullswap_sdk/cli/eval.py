"""``nullswap eval``: run the protection protocol on a built-in split or on user folders."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError, ModelError
from ._common import add_overrides, log, parse_overrides

__all__ = ["add_parser", "run", "available_recognisers", "build_sets"]


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
    e.add_argument("--out", required=True, help="report prefix: writes PREFIX.json and PREFIX.md")
    e.add_argument("--title", default=None, help="Markdown heading")


def available_recognisers() -> tuple[str, ...]:
    """Every registered recogniser whose file can be found here (user-supplied ones may not)."""
    from ..recognisers import RECOGNISERS
    from ..recognisers.registry import resolve_file

    names = []
    for name, cfg in sorted(RECOGNISERS.items()):
        try:
            resolve_file(cfg)
            names.append(name)
        except ModelError as e:
            log.warning("recogniser %s skipped: %s", name, e.message)
    return tuple(names)


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
    if not args.quiet:
        print(to_markdown(report, title))
        print(f"wrote {js} and {md_path}")
    return 0

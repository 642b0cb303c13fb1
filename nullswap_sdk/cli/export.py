"""``nullswap export onnx|tensorrt``: the network as an ONNX graph or a TensorRT engine."""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from ..errors import ConfigError, ModelFormatError, OutputExistsError

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    x = sub.add_parser("export", help="export the network: ONNX graph or TensorRT engine",
                       description="Export the cloaking network for other runtimes (see export/README.md).")
    kinds = x.add_subparsers(dest="export_kind", required=True)

    def common(p: argparse.ArgumentParser, default_precision: str) -> None:
        p.add_argument("-o", "--output", required=True, help="file to write")
        p.add_argument("--precision", choices=["fp32", "fp16"], default=default_precision)
        p.add_argument("--overwrite", action="store_true", help="replace an existing output file")

    o = kinds.add_parser("onnx", help="ONNX graph: crops (B,3,S,S) float32 RGB 0-255 -> perturbation")
    o.add_argument("model", nargs="?", default=None,
                   help="shipped model name or .safetensors file (default: the shipped default)")
    o.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17)")
    common(o, "fp32")

    t = kinds.add_parser("tensorrt", help="TensorRT engine (needs TensorRT and a CUDA GPU; unverified)")
    t.add_argument("model", nargs="?", default=None,
                   help=".onnx graph, shipped model name or .safetensors file (default: the shipped default)")
    t.add_argument("--min-batch", type=int, default=1)
    t.add_argument("--opt-batch", type=int, default=4)
    t.add_argument("--max-batch", type=int, default=16)
    t.add_argument("--timing-cache", default=None, help="timing cache file (default: in the engine cache)")
    t.add_argument("--cache-dir", default=None, help="engine cache (default: $NULLSWAP_CACHE_DIR/tensorrt)")
    t.add_argument("--workspace-gib", type=float, default=2.0)
    common(t, "fp16")


def _load(name: str | None):
    """(model, weights path) for a shipped name or a .safetensors file."""
    from ..cloaker import DEFAULT_MODEL
    from ..models import shipped_models, shipped_weights
    from ..network.cloaker import load_network

    name = name or DEFAULT_MODEL
    if str(name).endswith(".safetensors"):
        path = Path(name)
    elif name in shipped_models():
        path = shipped_weights(name)
    else:
        raise ConfigError(f"{name!r} is neither a shipped network nor a .safetensors file",
                          hint=f"shipped networks: {sorted(shipped_models())}")
    model, _ = load_network(path)
    return model, path


def _export_onnx(args) -> dict:
    from ..export._files import atomic_write_bytes, sha256_bytes
    from ..export.onnx import DEFAULT_OPSET, PARITY_MIN_DB, check_parity, export_onnx
    from ..models import sha256_file

    model, weights = _load(args.model)
    opset = DEFAULT_OPSET if args.opset is None else args.opset
    data = export_onnx(model, precision=args.precision, opset=opset,
                       metadata={"nullswap.weights_sha256": sha256_file(weights)})
    snr = check_parity(model, data)  # on the perturbation itself (export.onnx.delta_snr)
    if snr < PARITY_MIN_DB:  # a graph that disagrees with the weights is never written
        raise ModelFormatError(f"exported graph disagrees with torch: perturbation SNR {snr:.1f} dB "
                               f"< {PARITY_MIN_DB} dB",
                               hint="report this with `nullswap info`; try the default --opset / fp32")
    atomic_write_bytes(args.output, data)
    return {"output": str(args.output), "sha256": sha256_bytes(data), "bytes": len(data), "weights": str(weights),
            "precision": args.precision, "opset": opset, "parity_delta_snr_db_vs_torch": round(snr, 2)}


def _export_tensorrt(args) -> dict:
    from ..export.tensorrt import EngineProfile, build_engine, import_tensorrt

    import_tensorrt()  # fail before any export work when TensorRT is absent
    profile = EngineProfile(args.min_batch, args.opt_batch, args.max_batch)
    kw = {"precision": args.precision, "profile": profile, "cache_dir": args.cache_dir, "out": args.output,
          "timing_cache": args.timing_cache, "workspace_gib": args.workspace_gib}
    if args.model and str(args.model).endswith(".onnx"):
        path = build_engine(args.model, **kw)
    else:
        from ..export.onnx import export_onnx_file

        model, _ = _load(args.model)
        with tempfile.TemporaryDirectory() as tmp:  # TensorRT gets the fp32 graph and its own fp16 flag
            path = build_engine(export_onnx_file(model, Path(tmp) / "net.onnx"), **kw)
    return {"output": str(path), "precision": args.precision, "profile": vars(profile)}


def run(args: argparse.Namespace) -> int:
    if Path(args.output).exists() and not args.overwrite:
        raise OutputExistsError(f"{args.output} exists", hint="choose another -o path, or pass --overwrite")
    result = _export_onnx(args) if args.export_kind == "onnx" else _export_tensorrt(args)
    print(json.dumps(result, indent=2))
    return 0

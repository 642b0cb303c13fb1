"""A minimal reader of TensorFlow ``GraphDef`` files (frozen ``.pb``) without TensorFlow.

It walks the protobuf wire format directly, so it needs neither ``tensorflow`` nor
generated ``_pb2`` modules (whose runtime versions drift with ``protobuf``). Only the
messages a frozen inference graph uses are decoded: ``NodeDef``, ``AttrValue``,
``TensorProto``, ``TensorShapeProto`` and ``NameAttrList``. Bulk tensor bytes are
handed to ``np.frombuffer``, so a 100 MB graph parses in well under a second.

Attr values come back as plain Python/numpy objects:

=========== ==========================================================
``s``        ``str`` (``bytes`` when not valid UTF-8)
``i``        ``int``;  ``f``: ``float``;  ``b``: ``bool``
``type``     ``numpy.dtype`` (``int`` enum value if numpy has no match)
``shape``    ``tuple`` of ints (-1 = unknown dim), ``None`` = unknown rank
``tensor``   ``numpy.ndarray`` (C-contiguous, writable, native byte order)
``list``     ``list`` of the above
``func``     ``dict(name=..., attrs=...)``
=========== ==========================================================
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelFormatError

__all__ = ["NodeDef", "parse_graphdef", "read_graphdef", "DTYPES"]

# tensorflow/core/framework/types.proto -> numpy. DT_STRING tensors become object arrays.
DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"), 2: np.dtype("<f8"), 3: np.dtype("<i4"), 4: np.dtype("u1"),
    5: np.dtype("<i2"), 6: np.dtype("i1"), 7: np.dtype(object), 8: np.dtype("<c8"),
    9: np.dtype("<i8"), 10: np.dtype("?"), 17: np.dtype("<u2"), 18: np.dtype("<c16"),
    19: np.dtype("<f2"), 22: np.dtype("<u4"), 23: np.dtype("<u8"),
}
_FIXED32 = {5: "<f4"}  # TensorProto float_val / double_val: packed fixed-width
_FIXED64 = {6: "<f8"}


@dataclass
class NodeDef:
    """One graph node. ``inputs`` keeps TF's spelling (``"^ctrl"``, ``"name:1"``)."""

    name: str
    op: str
    inputs: list[str] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)
    device: str = ""


class _Bad(Exception):
    """Internal: any wire-format violation; converted to ModelFormatError at the API edge."""


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise _Bad("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _Bad("varint longer than 10 bytes")


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _fields(buf: memoryview, pos: int, end: int):
    """Yield ``(field_number, wire_type, value)``; value is an int or a (start, stop) span."""
    while pos < end:
        key, pos = _varint(buf, pos, end)
        num, wt = key >> 3, key & 7
        if num == 0:
            raise _Bad("field number 0")
        if wt == 0:
            val, pos = _varint(buf, pos, end)
        elif wt == 2:
            n, pos = _varint(buf, pos, end)
            if pos + n > end:
                raise _Bad("length-delimited field runs past its message")
            val = (pos, pos + n)
            pos += n
        elif wt == 5:
            if pos + 4 > end:
                raise _Bad("truncated fixed32")
            val = (pos, pos + 4)
            pos += 4
        elif wt == 1:
            if pos + 8 > end:
                raise _Bad("truncated fixed64")
            val = (pos, pos + 8)
            pos += 8
        else:  # groups (3/4) are not used by GraphDef; 6/7 do not exist
            raise _Bad(f"unsupported wire type {wt}")
        yield num, wt, val


def _str(buf: memoryview, span) -> str:
    try:
        return bytes(buf[span[0]:span[1]]).decode("utf-8")
    except UnicodeDecodeError:
        raise _Bad("string field is not UTF-8") from None


def _varints(buf: memoryview, wt: int, val) -> list[int]:
    """A repeated varint field element: packed (wt 2) or a single unpacked value (wt 0)."""
    if wt == 0:
        return [val]
    if wt != 2:
        raise _Bad("bad wire type for repeated varint")
    out, pos, end = [], val[0], val[1]
    while pos < end:
        v, pos = _varint(buf, pos, end)
        out.append(v)
    return out


def _fixed(buf: memoryview, wt: int, val, dtype: str) -> np.ndarray:
    if wt not in (1, 2, 5):
        raise _Bad("bad wire type for repeated fixed-width field")
    raw = buf[val[0]:val[1]]
    if len(raw) % np.dtype(dtype).itemsize:
        raise _Bad("packed field length is not a multiple of its element size")
    return np.frombuffer(raw, dtype=dtype)


def _shape(buf: memoryview, span) -> tuple[int, ...] | None:
    dims: list[int] = []
    unknown_rank = False
    for num, wt, val in _fields(buf, *span):
        if num == 2 and wt == 2:
            size = 0
            for n2, w2, v2 in _fields(buf, *val):
                if n2 == 1 and w2 == 0:
                    size = _signed(v2)
            dims.append(size)
        elif num == 3 and wt == 0:
            unknown_rank = bool(val)
    return None if unknown_rank else tuple(dims)


def _tensor(buf: memoryview, span) -> np.ndarray:
    dtype_enum, shape, content = 1, (), None
    floats: list[np.ndarray] = []
    doubles: list[np.ndarray] = []
    ints: list[int] = []
    strings: list[bytes] = []
    for num, wt, val in _fields(buf, *span):
        if num == 1 and wt == 0:
            dtype_enum = val
        elif num == 2 and wt == 2:
            shape = _shape(buf, val) or ()
        elif num == 4 and wt == 2:
            content = buf[val[0]:val[1]]
        elif num in _FIXED32:
            floats.append(_fixed(buf, wt, val, _FIXED32[num]))
        elif num in _FIXED64:
            doubles.append(_fixed(buf, wt, val, _FIXED64[num]))
        elif num in (7, 10, 11, 13, 16, 17):  # int/int64/bool/half(bits)/uint32/uint64 values
            ints.extend(_varints(buf, wt, val))
        elif num == 8 and wt == 2:
            strings.append(bytes(buf[val[0]:val[1]]))
    dtype = DTYPES.get(dtype_enum)
    if dtype is None:
        raise _Bad(f"unsupported tensor dtype enum {dtype_enum}")
    if any(d < 0 for d in shape):
        raise _Bad(f"tensor with unknown dims {shape}")
    count = int(np.prod(shape, dtype=np.int64))
    if content is not None and dtype != object:
        if len(content) != count * dtype.itemsize:
            raise _Bad(f"tensor_content holds {len(content)} bytes, shape {shape} needs {count * dtype.itemsize}")
        return np.frombuffer(content, dtype=dtype).astype(dtype.newbyteorder("="), copy=True).reshape(shape)
    if dtype == object:
        vals = np.array(strings, dtype=object)
    elif dtype.kind == "c":
        raise _Bad("complex tensors are only supported as tensor_content")
    elif floats:
        vals = np.concatenate(floats)
    elif doubles:
        vals = np.concatenate(doubles)
    elif dtype_enum == 19:  # half values travel as their uint16 bit patterns
        vals = np.array(ints, dtype=np.uint16).view(np.float16)
    elif dtype.kind == "i":
        vals = np.array([_signed(v) for v in ints], dtype=np.int64)
    else:
        vals = np.array(ints, dtype=np.uint64)
    # TF stores a constant fill as one value and pads with the last element.
    if vals.size == count:
        out = vals
    elif 0 < vals.size < count:
        out = np.concatenate([vals, np.repeat(vals[-1:], count - vals.size)])
    elif vals.size == 0:
        out = np.zeros(count, dtype=dtype)
    else:
        raise _Bad(f"tensor holds {vals.size} values, shape {shape} needs {count}")
    return out.astype(dtype.newbyteorder("=") if dtype != object else dtype).reshape(shape)


def _dtype(v: int):
    return DTYPES.get(v, v)


def _list(buf: memoryview, span) -> list:
    out: list = []
    for num, wt, val in _fields(buf, *span):
        if num == 2 and wt == 2:
            out.append(_bytes_or_str(buf, val))
        elif num == 3:
            out.extend(_signed(v) for v in _varints(buf, wt, val))
        elif num == 4:
            out.extend(float(x) for x in _fixed(buf, wt, val, "<f4"))
        elif num == 5:
            out.extend(bool(v) for v in _varints(buf, wt, val))
        elif num == 6:
            out.extend(_dtype(v) for v in _varints(buf, wt, val))
        elif num == 7 and wt == 2:
            out.append(_shape(buf, val))
        elif num == 8 and wt == 2:
            out.append(_tensor(buf, val))
        elif num == 9 and wt == 2:
            out.append(_func(buf, val))
    return out


def _bytes_or_str(buf: memoryview, span):
    raw = bytes(buf[span[0]:span[1]])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def _attr_value(buf: memoryview, span) -> Any:
    value: Any = None
    for num, wt, val in _fields(buf, *span):
        if num == 1 and wt == 2:
            value = _list(buf, val)
        elif num == 2 and wt == 2:
            value = _bytes_or_str(buf, val)
        elif num == 3 and wt == 0:
            value = _signed(val)
        elif num == 4 and wt == 5:
            value = struct.unpack_from("<f", buf, val[0])[0]
        elif num == 5 and wt == 0:
            value = bool(val)
        elif num == 6 and wt == 0:
            value = _dtype(val)
        elif num == 7 and wt == 2:
            value = _shape(buf, val)
        elif num == 8 and wt == 2:
            value = _tensor(buf, val)
        elif num == 9 and wt == 2:
            value = _str(buf, val)
        elif num == 10 and wt == 2:
            value = _func(buf, val)
    return value


def _attr_map(buf: memoryview, span, attrs: dict[str, Any]) -> None:
    key, value = "", None
    for num, wt, val in _fields(buf, *span):
        if num == 1 and wt == 2:
            key = _str(buf, val)
        elif num == 2 and wt == 2:
            value = _attr_value(buf, val)
    attrs[key] = value


def _func(buf: memoryview, span) -> dict:
    name, attrs = "", {}
    for num, wt, val in _fields(buf, *span):
        if num == 1 and wt == 2:
            name = _str(buf, val)
        elif num == 2 and wt == 2:
            _attr_map(buf, val, attrs)
    return {"name": name, "attrs": attrs}


def _node(buf: memoryview, span) -> NodeDef:
    node = NodeDef(name="", op="")
    for num, wt, val in _fields(buf, *span):
        if wt != 2:
            continue
        if num == 1:
            node.name = _str(buf, val)
        elif num == 2:
            node.op = _str(buf, val)
        elif num == 3:
            node.inputs.append(_str(buf, val))
        elif num == 4:
            node.device = _str(buf, val)
        elif num == 5:
            _attr_map(buf, val, node.attrs)
    if not node.name or not node.op:
        raise _Bad("node without a name or op")
    return node


def parse_graphdef(data: bytes | bytearray | memoryview, source: str = "<bytes>") -> list[NodeDef]:
    """Decode serialized ``GraphDef`` bytes into its nodes (in file order).

    Raises :class:`ModelFormatError` when the bytes are not a well-formed GraphDef
    (truncated, corrupt, or another protobuf message altogether).
    """
    buf = memoryview(data).cast("B")
    nodes: list[NodeDef] = []
    try:
        for num, wt, val in _fields(buf, 0, len(buf)):
            if num == 1 and wt == 2:  # other fields (versions, library, ...) are not needed
                nodes.append(_node(buf, val))
    except _Bad as e:
        raise ModelFormatError(
            f"{source}: not a valid TensorFlow GraphDef ({e})",
            hint="the file is truncated or corrupt; reinstall the package that ships it or re-export the frozen graph",
        ) from None
    if not nodes:
        raise ModelFormatError(f"{source}: GraphDef holds no nodes", hint="pass a frozen TensorFlow graph (.pb)")
    return nodes


def read_graphdef(path: str | Path) -> list[NodeDef]:
    """Read and decode a frozen ``.pb`` file. See :func:`parse_graphdef`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ModelFormatError(f"cannot read {path}: {e}", hint="check the path and its permissions") from e
    return parse_graphdef(data, source=str(path))

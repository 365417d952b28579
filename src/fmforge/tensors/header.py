"""The safetensors header, accepted exactly when the reference loader accepts it.

The reference is the ``safetensors`` library (``safetensors/src/tensor.rs``, parsed by
``serde_json``). Its rules, which ``parse_header`` follows one by one:

- The header is UTF-8 JSON: no NaN or Infinity, no number beyond float range, no lone UTF-16
  surrogate escape, nothing but whitespace after the value, nested at most 127 levels deep.
- It is an object. ``"__metadata__"`` (at most once) is null or an object of string values.
  Every other key is a tensor, given as ``{"dtype", "shape", "data_offsets"}`` (each field once,
  other fields ignored) or as the array ``[dtype, shape, data_offsets]``. A tensor name given
  twice keeps its last entry; both must be valid.
- ``dtype`` is one of the format's names (or ``{"NAME": null}``, serde's other spelling of an
  enum); ``shape`` an array of integers in [0, 2**64); ``data_offsets`` two such integers.
- Sorted by offsets, the tensors tile the buffer from byte 0 with no hole or overlap; each
  tensor's byte count is its shape's product times its dtype's bits / 8, every step computed
  in 64 bits with overflow refused, and a whole number of bytes.

Anything else is refused with one line naming the file, the tensor and the problem. The tests
use the reference loader as the oracle (``tests/hostile/test_safetensors.py``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np

from fmforge.errors import InvalidTensor
from fmforge.tensors.spec import DTYPE_BITS, TensorSpec

MAX_HEADER = 100_000_000  # bytes: the reference implementation's limit
MAX_DEPTH = 127  # serde_json's recursion limit: arrays and objects nested this deep, no deeper
U64_MAX = 2**64 - 1
_FIELDS = ("dtype", "shape", "data_offsets")
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
Fail = Callable[[str], NoReturn]


@dataclass(frozen=True, slots=True)
class TensorEntry:
    name: str
    spec: TensorSpec
    begin: int  # offsets into the data buffer, as in the header
    end: int


@dataclass(frozen=True, slots=True)
class SafetensorsLayout:
    header: bytes  # the JSON header exactly as stored (trailing padding included)
    entries: tuple[TensorEntry, ...]  # in buffer order
    metadata: Mapping[str, str] | None

    @property
    def data_start(self) -> int:
        return 8 + len(self.header)

    @property
    def data_size(self) -> int:
        return self.entries[-1].end if self.entries else 0


class _Refused(Exception):
    """Raised from inside the JSON decoder's hooks; becomes ``InvalidTensor``."""


@dataclass(frozen=True, slots=True)
class _Object:
    """A JSON object as its key/value pairs, duplicates kept (the rules depend on them)."""

    pairs: list[tuple[str, Any]]


def _show(text: str, limit: int = 60) -> str:
    """A name as it appears in a one-line message: quoted, escaped, shortened."""
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 4] + "...'"


class _WideInteger(float):
    """An integer beyond 64 bits, which serde_json reads as a float; keeps its text for messages."""

    text: str

    def __new__(cls, text: str) -> _WideInteger:
        wide = super().__new__(cls, _float(text))
        wide.text = text
        return wide


def _int(text: str) -> int | float:
    """JSON integers as serde_json reads them: u64 or i64 if they fit, else a float."""
    if text == "-0":
        return -0.0
    if len(text) <= 21:
        value = int(text)
        if -(2**63) <= value <= U64_MAX:
            return value
    return _WideInteger(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"number {text[:30]} is out of range")
    return value


def _constant(text: str) -> NoReturn:
    raise _Refused(f"{text} is not JSON")


def _depth(header: bytes) -> int:
    """How deeply arrays and objects nest, strings aside (an upper bound if not JSON)."""
    if header.count(b"[") + header.count(b"{") <= MAX_DEPTH:
        return MAX_DEPTH
    brackets = _STRING.sub(b"", header).translate(None, delete=_NOT_BRACKETS)
    steps = np.frombuffer(brackets, dtype=np.uint8)
    opening = (steps == ord("[")) | (steps == ord("{"))
    return int(np.cumsum(np.where(opening, 1, -1), dtype=np.int64).max(initial=0))


def _has_lone_surrogate(value: Any) -> bool:
    """Whether any string (key or value) holds a UTF-16 surrogate: a lone one was escaped."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if any(0xD800 <= ord(c) <= 0xDFFF for c in item):
                return True
        elif isinstance(item, _Object):
            for key, inner in item.pairs:
                stack += (key, inner)
        elif isinstance(item, list):
            stack += item
    return False


def _load(header: bytes, fail: Fail) -> Any:
    try:
        text = header.decode("utf-8")
    except UnicodeDecodeError as exc:
        fail(f"header is not UTF-8 ({exc.reason} at byte {exc.start})")
    if _depth(header) > MAX_DEPTH:
        fail(f"header nests arrays or objects more than {MAX_DEPTH} levels deep")
    try:
        parsed = json.loads(
            text,
            object_pairs_hook=_Object,
            parse_int=_int,
            parse_float=_float,
            parse_constant=_constant,
        )
    except json.JSONDecodeError as exc:
        fail(f"header is not JSON: {exc}")
    except _Refused as exc:
        fail(f"header is not JSON: {exc}")
    except RecursionError:
        fail(f"header nests arrays or objects more than {MAX_DEPTH} levels deep")
    if _SURROGATE_ESCAPE.search(header) and _has_lone_surrogate(parsed):
        fail("header is not JSON: it escapes a lone UTF-16 surrogate")
    return parsed


def _usize(value: Any) -> bool:
    return type(value) is int and 0 <= value <= U64_MAX


def _kind(value: Any) -> str:
    """What a JSON value is, for a message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, _Object):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return f"the string {_show(value, 30)}"
    if isinstance(value, _WideInteger):
        return f"the number {value.text[:30]}{'...' if len(value.text) > 30 else ''}"
    return f"the number {value!r}"


def _shape(dtype: str, shape: tuple[int, ...]) -> str:
    dims = ", ".join(map(str, shape[:8])) + (f", ... ({len(shape)} dims)" if len(shape) > 8 else "")
    return f"{dtype}[{dims}]"


def _entry(name: str, value: Any, fail: Fail) -> tuple[str, tuple[int, ...], int, int]:
    """(dtype, shape, begin, end) of one tensor's entry, each field checked for type."""
    where = f"tensor {_show(name)}"
    if isinstance(value, _Object):
        fields: dict[str, Any] = {}
        for key, inner in value.pairs:
            if key in _FIELDS:
                if key in fields:
                    fail(f"{where} gives {key!r} twice")
                fields[key] = inner
        missing = [f for f in _FIELDS if f not in fields]
        if missing:
            fail(f"{where} has no {missing[0]!r}")
        dtype, shape, offsets = (fields[f] for f in _FIELDS)
    elif isinstance(value, list):
        if len(value) != 3:
            fail(f"{where} is an array of {len(value)} items, not [dtype, shape, data_offsets]")
        dtype, shape, offsets = value
    else:
        fail(f"{where} is {_kind(value)}, not an object")
    if isinstance(dtype, _Object) and len(dtype.pairs) == 1 and dtype.pairs[0][1] is None:
        dtype = dtype.pairs[0][0]  # serde reads an enum's unit variant from {"NAME": null} too
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        shown = _show(dtype) if isinstance(dtype, str) else _kind(dtype)
        fail(f"{where} has dtype {shown}, not one of {', '.join(DTYPE_BITS)}")
    if not isinstance(shape, list) or not all(_usize(d) for d in shape):
        bad = next((d for d in shape if not _usize(d)), None) if isinstance(shape, list) else shape
        fail(f"{where}: shape holds {_kind(bad)}, not an integer in [0, 2**64)")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_usize, offsets))):
        fail(f"{where}: data_offsets must be [begin, end], two integers in [0, 2**64)")
    return dtype, tuple(shape), offsets[0], offsets[1]


def _nbytes(dtype: str, shape: tuple[int, ...]) -> int | None:
    """Bytes of a tensor, computed as the reference does: each product in 64 bits, in order;
    None on overflow."""
    count = 1
    for dim in shape:
        count *= dim
        if count > U64_MAX:
            return None
    bits = count * DTYPE_BITS[dtype]
    return None if bits > U64_MAX else bits


def parse_header(header: bytes, source: str = "<header>") -> SafetensorsLayout:
    """The layout a header describes, if the reference loader would accept it."""

    def fail(problem: str) -> NoReturn:
        raise InvalidTensor(f"{source}: {problem}")

    parsed = _load(header, fail)
    if not isinstance(parsed, _Object):
        fail(f"safetensors header is {_kind(parsed)}, not a JSON object")
    metadata: dict[str, str] | None = None
    seen_metadata = False
    found: dict[str, tuple[str, tuple[int, ...], int, int]] = {}
    for key, value in parsed.pairs:
        if key != "__metadata__":
            found[key] = _entry(key, value, fail)  # a repeated name: the last one counts
            continue
        if seen_metadata:
            fail("header gives '__metadata__' twice")
        seen_metadata = True
        if value is None:
            continue
        if not isinstance(value, _Object):
            fail(f"'__metadata__' is {_kind(value)}, not an object of strings")
        metadata = {}
        for meta_key, meta_value in value.pairs:
            if not isinstance(meta_value, str):
                fail(f"'__metadata__' entry {_show(meta_key)} is {_kind(meta_value)}, not a string")
            metadata[meta_key] = meta_value
    entries = []
    position = 0
    for name, (dtype, shape, begin, end) in sorted(found.items(), key=lambda i: i[1][2:]):
        where = f"tensor {_show(name)}"
        if begin != position or end < begin:
            fail(
                f"{where} has data_offsets [{begin}, {end}], expected to start at byte "
                f"{position} (safetensors buffers have no holes or overlaps)"
            )
        position = end
        bits = _nbytes(dtype, shape)
        if bits is None:
            fail(f"{where}: {_shape(dtype, shape)} overflows 64 bits counting its bytes")
        if bits % 8:
            fail(f"{where}: {_shape(dtype, shape)} does not end on a byte boundary")
        if end - begin != bits // 8:
            fail(f"{where} spans {end - begin} bytes, {_shape(dtype, shape)} needs {bits // 8}")
        entries.append(TensorEntry(name, TensorSpec(dtype, shape), begin, end))
    return SafetensorsLayout(header, tuple(entries), metadata)

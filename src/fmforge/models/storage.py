"""Tensors in the object store: one object per distinct tensor, possibly a delta on another.

A stored tensor is addressed by the blake3 of its raw bytes (``raw_hash``). Its object holds a
small header (magic, encoding, base ``raw_hash``, chain depth) and the codec payload. A delta's
base is the same tensor in the parent commit; ``depth`` counts deltas down to a full encoding.
Where a chain would reach ``KEYFRAME_EVERY`` deltas, the new version is encoded against the
chain's full encoding instead (depth 1), or in full when that is smaller, so a checkout never
replays more than ``KEYFRAME_EVERY - 1`` deltas. Every reconstruction is checked against
``raw_hash``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import blake3

from fmforge.errors import CorruptTensor
from fmforge.objects import ObjectStore
from fmforge.tensors.codec import KINDS, EncodedTensor, Kind, TensorSpec, decode, encode

KEYFRAME_EVERY = 8
_MAGIC = b"FMT1"
_HEADER = struct.Struct("<4sB32sH")  # magic, kind index, base raw hash (zeros: none), depth
_NO_BASE = bytes(32)


@dataclass(frozen=True, slots=True)
class StoredTensor:
    """Where and how one distinct tensor is stored."""

    raw_hash: str
    blob: str  # digest of the object holding the encoding
    kind: Kind
    base: str | None  # raw_hash of the tensor this one is a delta on
    depth: int  # deltas to replay from the nearest full encoding
    dtype: str
    shape: tuple[int, ...]
    stored_bytes: int

    def to_record(self) -> dict[str, Any]:
        return {
            "raw_hash": self.raw_hash,
            "blob": self.blob,
            "kind": self.kind,
            "base": self.base,
            "depth": self.depth,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "stored_bytes": self.stored_bytes,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> StoredTensor:
        return cls(
            str(record["raw_hash"]),
            str(record["blob"]),
            record["kind"],
            None if record["base"] is None else str(record["base"]),
            int(record["depth"]),
            str(record["dtype"]),
            tuple(record["shape"]),
            int(record["stored_bytes"]),
        )


def raw_hash(data: bytes | bytearray | memoryview) -> str:
    return str(blake3.blake3(data).hexdigest())


def store_tensor(
    objects: ObjectStore,
    data: bytes | bytearray | memoryview,
    spec: TensorSpec,
    *,
    digest: str | None = None,
    base: StoredTensor | None = None,
    base_bytes: bytes | memoryview | None = None,
) -> StoredTensor:
    """Encode ``data`` (a delta on ``base`` unless a keyframe is due) and store it."""
    digest = digest or raw_hash(data)
    usable_base = (
        base is not None
        and base_bytes is not None
        and base.dtype == spec.dtype
        and base.shape == spec.shape
        and base.depth + 1 < KEYFRAME_EVERY
    )
    if usable_base:
        assert base is not None
        encoded = encode(data, spec, base_bytes)
    else:
        encoded = encode(data, spec)
    is_delta = encoded.kind != "raw"
    base_hash = base.raw_hash if is_delta and base is not None else None
    depth = base.depth + 1 if is_delta and base is not None else 0
    header = _HEADER.pack(
        _MAGIC,
        KINDS.index(encoded.kind),
        bytes.fromhex(base_hash) if base_hash else _NO_BASE,
        depth,
    )
    # Written part by part (never joined in memory); the payload is compressed already.
    parts: list[bytes | memoryview] = [header, *encoded.parts]
    blob = objects.put(parts, compress=False)
    stored_bytes = len(header) + encoded.size
    return StoredTensor(
        digest, blob, encoded.kind, base_hash, depth, spec.dtype, spec.shape, stored_bytes
    )


def chain_of(stored: StoredTensor, lookup: Callable[[str], StoredTensor]) -> list[StoredTensor]:
    """``stored`` and its bases down to the full encoding, nearest first."""
    chain = [stored]
    while chain[-1].base is not None:
        if len(chain) > KEYFRAME_EVERY * 4:  # far past any chain we write: a cycle or damage
            raise CorruptTensor(f"tensor {stored.raw_hash} has a delta chain that never ends")
        chain.append(lookup(chain[-1].base))
    return chain


def load_tensor(
    objects: ObjectStore,
    stored: StoredTensor,
    lookup: Callable[[str], StoredTensor],
) -> memoryview:
    """The tensor's exact bytes, replaying its delta chain from the full encoding up, and
    checked against its raw hash. Memory holds two versions at a time.

    Decoding is deterministic, so checking the last version checks the whole chain; when it
    fails, the chain is replayed again checking every version, to name the damaged object.
    """
    chain = list(reversed(chain_of(stored, lookup)))
    data: memoryview | None = None
    for record in chain:
        data = _decode_object(objects, record, data)
    assert data is not None
    if raw_hash(data) == stored.raw_hash:
        return data
    data = None
    for record in chain:
        data = _decode_object(objects, record, data)
        if raw_hash(data) != record.raw_hash:
            raise CorruptTensor(
                f"tensor {record.raw_hash} rebuilt from object {record.blob} does not match "
                "its hash"
            )
    raise CorruptTensor(f"tensor {stored.raw_hash} does not rebuild to its hash")


def _decode_object(
    objects: ObjectStore, stored: StoredTensor, parent: memoryview | None
) -> memoryview:
    blob = objects.get(stored.blob, verify=False)  # the rebuilt tensor's raw hash is checked
    if len(blob) < _HEADER.size:
        raise CorruptTensor(f"tensor object {stored.blob} is truncated")
    magic, kind_index, base_raw, _depth = _HEADER.unpack(blob[: _HEADER.size])
    if magic != _MAGIC or kind_index >= len(KINDS):
        raise CorruptTensor(f"tensor object {stored.blob} has an unknown header")
    kind = KINDS[kind_index]
    if (kind == "raw") != (parent is None) or (
        parent is not None and base_raw != bytes.fromhex(stored.base or "")
    ):
        raise CorruptTensor(f"tensor object {stored.blob} does not match its record's base")
    try:
        data = decode(
            EncodedTensor(kind, (memoryview(blob)[_HEADER.size :],)),
            TensorSpec(stored.dtype, stored.shape),
            parent,
        )
    except CorruptTensor as exc:
        raise CorruptTensor(f"tensor object {stored.blob} is damaged: {exc}") from None
    return data

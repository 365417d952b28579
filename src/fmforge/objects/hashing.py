"""Content addresses: blake3 of the raw bytes, as 64 lowercase hex characters."""

from __future__ import annotations

import re
from typing import Any

import blake3

from fmforge.errors import InvalidDigest

_DIGEST_RE = re.compile(r"[0-9a-f]{64}\Z")
# Below this size blake3's multithreading costs more than it saves.
_THREADED_FROM = 1 << 20


def new_hasher(expected_size: int | None = None) -> Any:
    if expected_size is not None and expected_size < _THREADED_FROM:
        return blake3.blake3()
    return blake3.blake3(max_threads=blake3.blake3.AUTO)


def hash_bytes(data: bytes | bytearray | memoryview) -> str:
    hasher = new_hasher(len(data))
    hasher.update(data)
    return str(hasher.hexdigest())


def check_digest(value: str) -> str:
    if not isinstance(value, str) or not _DIGEST_RE.match(value):
        raise InvalidDigest(str(value))
    return value

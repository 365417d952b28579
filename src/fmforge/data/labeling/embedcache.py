"""MiniLM embeddings of a dataset's texts, cached in the object store.

Embedding is what costs in LF synthesis (about 10-30 ms a text on one core), so each vector is
made once. ``embed_each`` embeds one text at a time, so a vector depends on the model and the
text only; a cache object therefore holds vectors keyed by text: ``FMEMB1``, the count and the
width (two little-endian uint32), the blake3 of each text (16 bytes each), then the float32
vectors. Each object is recorded as an ``EmbeddingsComputed`` event on the dataset's stream
(the dataset version, what was embedded, the model key: the digest of the weights, the
pooling and the truncation), which the ``SynthWork`` projection indexes by dataset and model.
A lookup reads the dataset's objects for the model, embeds only the texts none of them holds,
and records those as one new object: a new version whose texts mostly equal an older one's
costs only its new texts. ``record=False`` embeds what is missing without storing it (for
commands that only check).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import blake3
import numpy as np

from fmforge.data.events import EmbeddingsComputed
from fmforge.data.versions import STREAM_PREFIX
from fmforge.data.views import DatasetVersion, SynthWork
from fmforge.errors import CorruptObject
from fmforge.repository import Repository

MAGIC = b"FMEMB1"
Array = np.ndarray[Any, Any]


def text_digest(text: str) -> bytes:
    return blake3.blake3(text.encode("utf-8", "surrogatepass")).digest()[:16]


def encode(digests: Sequence[bytes], vectors: Array) -> bytes:
    n, dim = vectors.shape
    head = MAGIC + struct.pack("<II", n, dim)
    return head + b"".join(digests) + np.ascontiguousarray(vectors, "<f4").tobytes()


def decode(data: bytes, digest: str) -> tuple[list[bytes], Array]:
    if data[:6] != MAGIC or len(data) < 14:
        raise CorruptObject(digest, "not an embedding cache object")
    n, dim = struct.unpack("<II", data[6:14])
    keys_end = 14 + 16 * n
    if len(data) != keys_end + 4 * n * dim:
        raise CorruptObject(digest, "an embedding cache object of the wrong size")
    keys = [data[14 + 16 * i : 30 + 16 * i] for i in range(n)]
    vectors = np.frombuffer(data, dtype="<f4", offset=keys_end).reshape(n, dim)
    return keys, vectors.astype(np.float32)


class EmbeddingCache:
    """``cache(texts)`` -> (len(texts), 384) float32 unit vectors, from the dataset's cached
    embeddings where it has them; ``what`` names what is embedded in the event."""

    def __init__(self, repo: Repository, version: DatasetVersion, *, record: bool = True) -> None:
        self.repo, self.version, self.record = repo, version, record
        self._known: dict[bytes, Array] | None = None
        self.computed = 0  # texts embedded by this cache (not found)

    @property
    def model(self) -> str:
        from fmforge.embeddings import model_key

        return model_key()

    def _load(self) -> dict[bytes, Array]:
        if self._known is None:
            known: dict[bytes, Array] = {}
            index = self.repo.view(SynthWork)
            for digest in index.embedding_objects(self.version.dataset, self.model):
                keys, vectors = decode(self.repo.objects.get(digest), digest)
                known.update(zip(keys, vectors, strict=True))
            self._known = known
        return self._known

    def has(self, texts: Sequence[str]) -> bool:
        known = self._load()
        return all(text_digest(t) in known for t in texts)

    def __call__(self, texts: Sequence[str], what: str = "texts") -> Array:
        known = self._load()
        keys = [text_digest(t) for t in texts]
        missing: dict[bytes, str] = {}
        for key, text in zip(keys, texts, strict=True):
            if key not in known:
                missing.setdefault(key, text)
        if missing:
            from fmforge.embeddings import embed_each

            vectors = embed_each(list(missing.values()))
            self.computed += len(missing)
            known.update(zip(missing, vectors, strict=True))
            if self.record:
                self._store(list(missing), vectors, what)
        if not keys:
            return np.zeros((0, 384), np.float32)
        return np.stack([known[key] for key in keys])

    def _store(self, keys: list[bytes], vectors: Array, what: str) -> None:
        digest = self.repo.objects.put(encode(keys, vectors))
        payload = {
            "version": self.version.id, "what": what[:200], "model": self.model,
            "texts": len(keys), "dim": int(vectors.shape[1]), "object": digest,
        }  # fmt: skip
        self.repo.record(
            STREAM_PREFIX + self.version.dataset,
            EmbeddingsComputed(payload, refs=(digest,)),  # type: ignore[arg-type]
        )

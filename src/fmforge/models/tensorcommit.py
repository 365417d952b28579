"""Committing tensors from memory: a mapping, or a stream of (name, tensor) written one by one.

``commit_tensors`` stores each tensor as it arrives (hashed, deduplicated, encoded as a delta
on the first parent's tensor of the same name by ``TensorWriter``'s thread pool, with a bound on
the bytes in flight), so a producer such as a merge never holds more than a few tensors: the
safetensors header is built at the end from the names and specs seen, in sorted order, which is
the very file a mapping of the same tensors gives. A ``KnownTensor`` names a tensor already
stored by its raw hash: it costs a manifest entry and is never read. Extra files (an adapter's
``adapter_config.json``, a model card) are stored as blobs beside the weights file.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from fmforge.access import targets
from fmforge.access.mediation import mediated
from fmforge.errors import InvalidModelSource, InvalidTensor
from fmforge.models.commits import (
    DEFAULT_BRANCH,
    MANIFEST_FORMAT,
    _plan,
    _record_commit,
    _resolve_base,
    adapter_record,
)
from fmforge.models.names import validate_model_name
from fmforge.models.refs import ModelRefs
from fmforge.models.sources import ParentFiles
from fmforge.models.storage import raw_hash
from fmforge.models.writer import CommitResult, TensorWriter, parent_tensors
from fmforge.repository import Repository
from fmforge.tensors.codec import TensorSpec
from fmforge.tensors.layout import parse_header

Provenance = Mapping[str, Any] | Callable[[], Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class KnownTensor:
    """A tensor already in the registry, named by the blake3 of its raw bytes: committing it
    costs a manifest entry (an unchanged tensor a merge passes through is never read)."""

    raw_hash: str


@mediated("commit", targets.branch("name", "branch"))
def commit_tensors(
    repo: Repository,
    name: str,
    tensors: Mapping[str, Any] | Iterable[tuple[str, Any]],
    *,
    parents: Iterable[str] | None = None,
    message: str,
    provenance: Provenance | None = None,
    branch: str = DEFAULT_BRANCH,
    base: str | None = None,
    path: str = "model.safetensors",
    metadata: Mapping[str, str] | None = None,
    files: Mapping[str, bytes] | None = None,
    force: bool = False,
    orphan: bool = False,
) -> CommitResult:
    """Commit ``tensors`` as one safetensors file at ``path``, without writing it anywhere
    first; branch semantics as ``commit_model``.

    ``tensors``: a mapping, or an iterable of (name, tensor) pairs consumed one at a time (each
    stored as it arrives); a tensor is a torch tensor, a numpy array or a ``KnownTensor``.
    ``parents``: REFs of ``name``, or full commit ids of any model (default: the branch's head,
    or ``main``'s for a new branch); an unchanged tensor costs nothing and a changed one is
    stored as a delta against the first parent's tensor of the same name. ``files``: other
    files of the commit (path -> bytes), stored as blobs; an ``adapter_config.json`` makes the
    commit a PEFT adapter (``base``: ``NAME@REF`` of the model it adapts). ``provenance``: what
    produced these tensors (a run, a merge and its inputs), recorded with the commit; a callable
    is called once every tensor is stored (a merge's report covers all of them). Digests listed
    under its ``"refs"`` key name objects it depends on: they must be stored, and gc and verify
    keep and check them with the commit.
    """
    validate_model_name(name)
    index = repo.view(ModelRefs)
    plan = _plan(repo, index, name, branch, parents, expected_head=None, force=force, orphan=orphan)
    blobs = _checked_files(files or {}, path)
    adapter = (
        adapter_record(blobs["adapter_config.json"], "adapter_config.json")
        if "adapter_config.json" in blobs
        else None
    )
    adapts = _resolve_base(index, base, None)
    parent_id = plan.parents[0] if plan.parents else None
    result = CommitResult(name, "", branch, plan.parents)
    listed: dict[str, tuple[TensorSpec, int, str]] = {}
    with (
        threadpool_limits(limits=1, user_api="blas"),
        ParentFiles(repo, None) as parent_files,
        TensorWriter(
            repo, index, parent_tensors(repo, index, parent_id), parent_files, result, None
        ) as writer,
    ):
        for key, spec, data, digest in _prepared(writer, index, tensors):
            if key in listed:
                raise InvalidTensor(f"tensor {key!r} is given twice")
            writer.add(path, key, data, spec, digest)
            listed[key] = (spec, spec.nbytes, digest)
        writer.finish()
        order = sorted(listed)
        header = safetensors_header([(k, listed[k][0], listed[k][1]) for k in order], metadata)
        layout = parse_header(header, path)
        header_digest, created = repo.objects.put_new(header)
        writer.added(header_digest, len(header), created)
        entries: list[dict[str, Any]] = [{
            "path": path, "kind": "safetensors", "header": header_digest,
            "size": 8 + len(header) + layout.data_size,
            "tensors": [[e.name, listed[e.name][2]] for e in layout.entries],
        }]  # fmt: skip
        for relative, content in blobs.items():
            digest, created = repo.objects.put_new(content)
            writer.added(digest, len(content), created)
            entries.append(
                {"path": relative, "kind": "blob", "object": digest, "size": len(content)}
            )
    entries.sort(key=lambda entry: str(entry["path"]))
    result.raw_bytes = sum(int(entry["size"]) for entry in entries)
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT, "files": entries, "stored": writer.stored,
    }  # fmt: skip
    if adapter is not None:
        manifest["adapter"] = adapter
    recorded = dict(provenance() if callable(provenance) else provenance or {})
    for digest in recorded.get("refs", []):
        if not repo.objects.has(digest):
            raise InvalidTensor(f"provenance names object {digest}, which is not stored")
        writer.added(digest, 0, False)
    _record_commit(repo, name, message, plan, manifest, writer, result, adapts, recorded)
    return result


def _prepared(
    writer: TensorWriter, index: Any, tensors: Mapping[str, Any] | Iterable[tuple[str, Any]]
) -> Iterator[tuple[str, TensorSpec, memoryview, str]]:
    """(name, spec, bytes, raw hash) of each tensor: a mapping's hashed in parallel, a
    stream's one at a time as it arrives."""
    if isinstance(tensors, Mapping):
        known = [(k, v) for k, v in tensors.items() if isinstance(v, KnownTensor)]
        entries = [
            (k, *_tensor_bytes(k, v)) for k, v in tensors.items() if not isinstance(v, KnownTensor)
        ]
        digests = writer.hash_all([data for _, _, data in entries])
        for (key, spec, data), digest in zip(entries, digests, strict=True):
            yield key, spec, data, digest
        for key, value in known:
            yield key, _known_spec(index, key, value), memoryview(b""), value.raw_hash
        return
    for key, value in tensors:
        if isinstance(value, KnownTensor):
            yield key, _known_spec(index, key, value), memoryview(b""), value.raw_hash
        else:
            spec, data = _tensor_bytes(key, value)
            yield key, spec, data, raw_hash(data)


def _known_spec(index: Any, key: str, value: KnownTensor) -> TensorSpec:
    stored = index.stored_tensor(value.raw_hash)
    if stored is None:
        raise InvalidTensor(f"tensor {key!r}: no stored tensor {value.raw_hash}")
    return TensorSpec(stored.dtype, stored.shape)


def _checked_files(files: Mapping[str, bytes], weights: str) -> dict[str, bytes]:
    """Extra files by normalized relative path; a path outside the commit, or the weights
    file's own, is refused."""
    checked: dict[str, bytes] = {}
    for relative, content in files.items():
        parts = PurePosixPath(relative).parts
        if not relative or relative.startswith("/") or ".." in parts or relative == weights:
            raise InvalidModelSource(f"{relative!r}: not a file path inside the commit")
        if not isinstance(content, bytes):
            raise InvalidModelSource(f"{relative}: the content of a file must be bytes")
        checked[relative] = content
    return checked


_NUMPY_DTYPES = {
    "float64": "F64", "float32": "F32", "float16": "F16", "int64": "I64", "int32": "I32",
    "int16": "I16", "int8": "I8", "uint8": "U8", "uint16": "U16", "uint32": "U32",
    "uint64": "U64", "bool": "BOOL",
}  # fmt: skip
_TORCH_DTYPES = {
    **_NUMPY_DTYPES, "bfloat16": "BF16", "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2",
}  # fmt: skip


def _tensor_bytes(name: str, value: Any) -> tuple[TensorSpec, memoryview]:
    """(spec, little-endian bytes) of a torch tensor or numpy array, without a copy when it
    is contiguous already."""
    if not isinstance(name, str) or not name:
        raise InvalidTensor(f"tensor names are non-empty strings, got {name!r}")
    if isinstance(value, np.ndarray):
        dtype = _NUMPY_DTYPES.get(value.dtype.name)
        if dtype is None or value.dtype.byteorder == ">":
            raise InvalidTensor(f"tensor {name!r}: unsupported numpy dtype {value.dtype}")
        array = np.ascontiguousarray(value)
        return TensorSpec(dtype, tuple(array.shape)), array.reshape(-1).view(np.uint8).data
    torch_dtype = str(getattr(value, "dtype", "")).removeprefix("torch.")
    if torch_dtype not in _TORCH_DTYPES or not hasattr(value, "detach"):
        raise InvalidTensor(
            f"tensor {name!r}: expected a torch tensor or numpy array, got {type(value).__name__}"
        )
    import torch

    flat = value.detach().to("cpu").contiguous().reshape(-1)
    data: np.ndarray[Any, Any] = (
        flat.view(torch.uint8).numpy() if flat.numel() else np.zeros(0, np.uint8)
    )
    return TensorSpec(_TORCH_DTYPES[torch_dtype], tuple(value.shape)), data.data


def safetensors_header(
    tensors: Iterable[tuple[str, TensorSpec, int]], metadata: Mapping[str, str] | None = None
) -> bytes:
    """A safetensors header for (name, spec, nbytes) in this buffer order, padded with spaces
    to a multiple of 8 bytes as the reference writer does."""
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for name, spec, nbytes in tensors:
        end = offset + nbytes
        header[name] = {
            "dtype": spec.dtype,
            "shape": list(spec.shape),
            "data_offsets": [offset, end],
        }
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    return text + b" " * (-(len(text) + len(struct.pack("<Q", 0))) % 8)

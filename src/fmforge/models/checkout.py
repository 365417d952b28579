"""Checking out a model version: every file back, safetensors byte for byte, hashes verified."""

from __future__ import annotations

import fnmatch
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import blake3

from fmforge.errors import CorruptObject, InvalidModelSource
from fmforge.models.commits import load_manifest, refs, stored_lookup
from fmforge.models.refs import split_model_ref
from fmforge.models.storage import StoredTensor, load_tensor
from fmforge.repository import Repository
from fmforge.tensors.layout import parse_header


@dataclass(frozen=True)
class CheckoutResult:
    model: str
    commit: str
    directory: Path
    files: int
    tensors: int
    bytes_written: int


def checkout(
    repo: Repository,
    target: str,
    out: str | os.PathLike[str],
    *,
    tensors: str | None = None,
) -> CheckoutResult:
    """Write ``NAME@REF`` into directory ``out``.

    Without ``tensors``, each safetensors file comes back byte-identical to the committed one
    (checked against its recorded blake3). With a glob, only matching tensors are written, in a
    valid safetensors file with a new header, and non-tensor files are still written.
    """
    name, ref = split_model_ref(target)
    index = refs(repo)
    commit = index.resolve(name, ref)
    manifest = load_manifest(repo, index.commit(commit).manifest)
    stored = {h: StoredTensor.from_record(r) for h, r in manifest["stored"].items()}
    lookup = stored_lookup(index)
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    written = files = count = 0
    for entry in manifest["files"]:
        destination = directory / entry["path"]
        if not destination.resolve().is_relative_to(directory.resolve()):
            raise InvalidModelSource(f"manifest path {entry['path']!r} leaves the directory")
        destination.parent.mkdir(parents=True, exist_ok=True)
        if entry["kind"] == "blob":
            repo.objects.copy_to(entry["object"], destination)
        else:
            header = repo.objects.get(entry["header"])
            names = [
                (n, h) for n, h in entry["tensors"]
                if tensors is None or fnmatch.fnmatchcase(n, tensors)
            ]  # fmt: skip
            if tensors is not None:
                header = _subset_header(header, {n for n, _ in names})
            count += len(names)
            hasher = blake3.blake3()
            tmp = destination.with_name(f".{destination.name}.fmforge-tmp")
            with open(tmp, "wb") as handle:
                prefix = struct.pack("<Q", len(header)) + header
                handle.write(prefix)
                hasher.update(prefix)
                for _tensor_name, raw_hash in _in_buffer_order(header, names):
                    data = load_tensor(repo.objects, stored[raw_hash], lookup, {})
                    handle.write(data)
                    hasher.update(data)
            if tensors is None and hasher.hexdigest() != entry["file_hash"]:
                tmp.unlink()
                raise CorruptObject(entry["header"], f"{entry['path']} does not rebuild exactly")
            os.replace(tmp, destination)
        written += destination.stat().st_size
        files += 1
    return CheckoutResult(name, commit, directory, files, count, written)


def _in_buffer_order(header: bytes, names: list[tuple[str, str]]) -> list[tuple[str, str]]:
    order = {e.name: i for i, e in enumerate(parse_header(header).entries)}
    return sorted(names, key=lambda item: order[item[0]])


def _subset_header(header: bytes, keep: set[str]) -> bytes:
    """A header holding only ``keep``, with offsets packed again (8-byte aligned, as the spec)."""
    layout = parse_header(header)
    out: dict[str, object] = {}
    if layout.metadata is not None:
        out["__metadata__"] = layout.metadata
    offset = 0
    for entry in layout.entries:
        if entry.name in keep:
            size = entry.end - entry.begin
            out[entry.name] = {
                "dtype": entry.spec.dtype,
                "shape": list(entry.spec.shape),
                "data_offsets": [offset, offset + size],
            }
            offset += size
    encoded = json.dumps(out, separators=(",", ":")).encode()
    return encoded + b" " * (-len(encoded) % 8)

"""Reading a model version: checkout to a directory, lazy state dicts, a loadable path.

Every tensor is rebuilt through its delta chain and checked against its raw hash. A safetensors
file has no holes, so its verbatim header plus its verified tensors in buffer order are the
committed file byte for byte. PyTorch ``.bin`` files come back tensor for tensor (the pickle
container is written anew by ``torch.save``).
"""

from __future__ import annotations

import fnmatch
import json
import os
import secrets
import shutil
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fmforge.access import targets
from fmforge.access.mediation import mediated
from fmforge.errors import (
    InvalidModelSource,
    InvalidTensor,
    ObjectNotFound,
    RefNotFound,
    UsageError,
)
from fmforge.models.history import confirm
from fmforge.models.refs import ModelRefs, split_model_ref
from fmforge.models.storage import StoredTensor, load_tensor
from fmforge.models.writer import load_manifest, stored_lookup
from fmforge.repository import Repository
from fmforge.tensors.codec import TensorSpec
from fmforge.tensors.layout import parse_header

_NUMPY = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
    "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "U16": np.uint16,
    "U32": np.uint32, "U64": np.uint64, "BOOL": np.bool_, "C64": np.complex64,
    # no numpy dtype: the raw bits, as unsigned integers of the same width
    "BF16": np.uint16, "F8_E4M3": np.uint8, "F8_E5M2": np.uint8, "F8_E8M0": np.uint8,
    "F8_E4M3FNUZ": np.uint8, "F8_E5M2FNUZ": np.uint8,
}  # fmt: skip
# F4 and F6 pack several elements per byte: no array of their shape exists.


@dataclass(frozen=True)
class CheckoutResult:
    model: str
    commit: str
    directory: Path
    files: int
    tensors: int
    bytes_written: int


class CommitReader:
    """One resolved commit: its manifest and a way to rebuild any of its tensors.

    The view's resolution is confirmed against the ledger (``models.history.confirm``), and
    every tensor rebuilt is checked against its raw hash, which the manifest (an object
    addressed by its own hash, named in the ledger) gives: what a reader hands out is the
    recorded version or nothing."""

    def __init__(self, repo: Repository, target: str) -> None:
        self.repo = repo
        self.model, ref = split_model_ref(target)
        index = repo.view(ModelRefs)
        self.commit = index.resolve(self.model, ref)
        self.info = index.commit(self.commit)
        confirm(repo, self.model, ref, self.commit, self.info.manifest)
        try:
            self.manifest = load_manifest(repo, self.info.manifest)
        except ObjectNotFound:
            if self.info.manifest in repo.pruned_objects():
                raise RefNotFound(
                    f"{self.model}@{self.commit[:12]}: gc pruned this commit's objects (it was "
                    "outside every branch and tag and older than gc.retention_s)"
                ) from None
            raise
        self.stored = {h: StoredTensor.from_record(r) for h, r in self.manifest["stored"].items()}
        index_lookup = stored_lookup(index)
        # A manifest lists every tensor down each delta chain; the index is the fallback.
        self.lookup = lambda raw_hash: self.stored.get(raw_hash) or index_lookup(raw_hash)

    def tensor_bytes(self, raw_hash: str) -> memoryview:
        return load_tensor(self.repo.objects, self.stored[raw_hash], self.lookup)

    def iter_tensors(
        self, pattern: str | None = None
    ) -> Iterator[tuple[str, memoryview, TensorSpec]]:
        """(name, raw bytes, spec) of each tensor (matching the glob ``pattern``), rebuilt
        one at a time and hash-checked: a model larger than memory streams through."""
        for name, raw_hash, spec in self.tensors():
            if pattern is None or fnmatch.fnmatchcase(name, pattern):
                yield name, self.tensor_bytes(raw_hash), spec

    def tensors(self) -> Iterator[tuple[str, str, TensorSpec]]:
        """(name, raw hash, spec) of every tensor of every weights file, in manifest order."""
        for entry in self.manifest["files"]:
            if entry["kind"] in ("safetensors", "torch"):
                for item in entry["tensors"]:
                    record = self.stored[item[1]]
                    yield item[0], item[1], TensorSpec(record.dtype, record.shape)


@mediated("read", targets.model())
def checkout(
    repo: Repository,
    target: str,
    out: str | os.PathLike[str],
    *,
    tensors: str | None = None,
    force: bool = False,
) -> CheckoutResult:
    """Write ``NAME@REF`` into directory ``out`` (new, or empty unless ``force``).

    Without ``tensors``, each safetensors file comes back byte-identical to the committed one.
    With a glob, only matching tensors are written, in a valid safetensors file with a new
    header, and non-tensor files are still written.

    Every file is written and verified in a temporary directory first (beside a new ``out``,
    inside an existing one) and moved into place at the end: a checkout that fails leaves
    nothing behind. A non-empty ``out`` is refused; ``force`` overwrites the files the commit
    holds there and leaves the others. Files get the default mode (0666 less the umask).
    """
    reader = CommitReader(repo, target)
    directory = Path(out)
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"{directory}: exists and is not a directory (checkout writes one)")
    existing = directory.is_dir()
    if existing and not force and any(directory.iterdir()):
        raise UsageError(
            f"{directory} is not empty: check out into a new or empty directory, or give "
            "--force to overwrite the files this commit holds there"
        )
    created = [] if existing else _create_parents(directory.absolute().parent)
    try:
        staging = _staging_dir(directory, inside=existing)
    except BaseException:
        _remove_empty(created)
        raise
    try:
        files, count, written = _write_files(reader, staging, tensors)
        if existing:
            _move_into(staging, directory)
        else:
            try:
                os.rename(staging, directory)
            except OSError as exc:  # another writer made it meanwhile
                raise UsageError(f"{directory}: cannot create it: {exc.strerror}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_empty(created)
        raise
    return CheckoutResult(reader.model, reader.commit, directory, files, count, written)


def _create_parents(parent: Path) -> list[Path]:
    """Create ``parent`` and its missing ancestors; returns those created, deepest first."""
    missing = []
    for ancestor in (parent, *parent.parents):
        if ancestor.exists():
            break
        missing.append(ancestor)
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _remove_empty(missing)
        raise UsageError(f"{parent}: cannot create the directory: {exc.strerror}") from None
    return missing


def _remove_empty(directories: list[Path]) -> None:
    for path in directories:  # deepest first
        try:
            path.rmdir()
        except OSError:
            return


def _staging_dir(directory: Path, *, inside: bool) -> Path:
    """A new hidden directory (mode 0777 less the umask) for the files before they go in place:
    inside an existing target (same filesystem, writable there), else beside it."""
    base = directory if inside else directory.absolute().parent
    name = f".fmforge-checkout-{secrets.token_hex(6)}"
    staging = base / (name if inside else f".{directory.name}{name}")
    try:
        staging.mkdir()
    except OSError as exc:
        raise UsageError(f"{base}: cannot write there: {exc.strerror}") from None
    return staging


def _write_files(reader: CommitReader, root: Path, pattern: str | None) -> tuple[int, int, int]:
    """(files, tensors, bytes) of the commit written under ``root``."""
    written = files = count = 0
    resolved = root.resolve()
    for entry in reader.manifest["files"]:
        destination = root / entry["path"]
        if not destination.resolve().is_relative_to(resolved):
            raise InvalidModelSource(f"manifest path {entry['path']!r} leaves the directory")
        destination.parent.mkdir(parents=True, exist_ok=True)
        if entry["kind"] == "blob":
            reader.repo.objects.copy_to(entry["object"], destination)
        elif entry["kind"] == "torch":
            count += _write_torch(reader, entry, destination, pattern)
        else:
            count += _write_safetensors(reader, entry, destination, pattern)
        written += destination.stat().st_size
        files += 1
    return files, count, written


def _move_into(staging: Path, directory: Path) -> None:
    """Move what ``staging`` holds into ``directory``, replacing entries of the same name (a
    directory on both sides is merged), then remove ``staging``."""
    for entry in sorted(staging.iterdir()):
        target = directory / entry.name
        if entry.is_dir() and target.is_dir() and not target.is_symlink():
            _move_into(entry, target)
            continue
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(entry, target)
    staging.rmdir()


def _write_safetensors(
    reader: CommitReader, entry: dict[str, Any], destination: Path, pattern: str | None
) -> int:
    header = reader.repo.objects.get(entry["header"])
    names = [
        (n, h) for n, h in entry["tensors"] if pattern is None or fnmatch.fnmatchcase(n, pattern)
    ]
    if pattern is not None:
        header = _subset_header(header, {n for n, _ in names})
    tmp = destination.with_name(f".fmforge-tmp-{destination.name}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(struct.pack("<Q", len(header)) + header)
            for _tensor_name, raw_hash in _in_buffer_order(header, names):
                handle.write(reader.tensor_bytes(raw_hash))  # verified against raw_hash
        os.replace(tmp, destination)
    finally:
        tmp.unlink(missing_ok=True)
    return len(names)


def _write_torch(
    reader: CommitReader, entry: dict[str, Any], destination: Path, pattern: str | None
) -> int:
    from fmforge.tensors.torch_files import save_torch_state_dict

    chosen = {
        name: (TensorSpec(dtype, tuple(shape)), reader.tensor_bytes(raw_hash))
        for name, raw_hash, dtype, shape in entry["tensors"]
        if pattern is None or fnmatch.fnmatchcase(name, pattern)
    }
    save_torch_state_dict(destination, chosen)
    return len(chosen)


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


# ---- lazy state dicts and loadable paths ------------------------------------------------------


class LazyStateDict(Mapping[str, Any]):
    """A model version's tensors, each rebuilt (and hash-checked) only when it is read.

    Iterating ``items()`` holds about one tensor in memory at a time. Values are torch tensors
    (``framework="pt"``) or numpy arrays (``"numpy"``; bfloat16 and fp8 as their raw bits).
    """

    def __init__(
        self,
        reader: CommitReader,
        pattern: str | None,
        framework: Literal["pt", "numpy"],
        owned: Repository | None = None,
    ) -> None:
        if framework not in ("pt", "numpy"):
            raise InvalidTensor(f"unknown framework {framework!r}: use 'pt' or 'numpy'")
        self.reader = reader
        self._owned = owned  # a repository opened for this state dict, closed with it
        self.framework = framework
        self._entries = {
            name: (raw_hash, spec)
            for name, raw_hash, spec in reader.tensors()
            if pattern is None or fnmatch.fnmatchcase(name, pattern)
        }

    @property
    def commit(self) -> str:
        return self.reader.commit

    def close(self) -> None:
        if self._owned is not None:
            self._owned.close()
            self._owned = None

    def __enter__(self) -> LazyStateDict:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __getitem__(self, name: str) -> Any:
        try:
            raw_hash, spec = self._entries[name]
        except KeyError:
            raise KeyError(
                f"{self.reader.model}@{self.commit[:12]} has no tensor {name!r}"
            ) from None
        dtype = _NUMPY.get(spec.dtype)
        if dtype is None:
            raise InvalidTensor(
                f"tensor {name!r} is {spec.dtype}, which packs several elements per byte: "
                "check the model out to read it"
            )
        array: np.ndarray[Any, Any] = np.frombuffer(self.reader.tensor_bytes(raw_hash), dtype)
        try:
            array = array.reshape(spec.shape)
        except ValueError:  # an empty tensor with a dimension numpy cannot index
            raise InvalidTensor(
                f"tensor {name!r} has shape {list(spec.shape)}, beyond numpy's limits"
            ) from None
        if self.framework == "numpy":
            return array
        from fmforge.tensors.torch_files import to_torch

        return to_torch(array, spec)


@mediated("read", targets.model())
def load_state_dict(
    target: str,
    *,
    repo: Repository | None = None,
    tensors: str | None = None,
    framework: Literal["pt", "numpy"] = "pt",
) -> LazyStateDict:
    """The tensors of ``NAME@REF`` (those matching the glob ``tensors``), read lazily.

    Without ``repo`` the repository here (or ``$FMFORGE_STORE``) is opened and stays open
    until the state dict is closed: ``with load_state_dict("minilm@main") as state: ...``.
    """
    if repo is None:
        owned = Repository.open()
        return LazyStateDict(CommitReader(owned, target), tensors, framework, owned)
    return LazyStateDict(CommitReader(repo, target), tensors, framework)


@mediated("read", targets.model())
def iter_tensors(
    target: str,
    *,
    repo: Repository,
    tensors: str | None = None,
    framework: Literal["pt", "numpy"] = "numpy",
) -> Iterator[tuple[str, Any]]:
    """(name, tensor) of ``NAME@REF`` (those matching the glob ``tensors``) in file order,
    each rebuilt through its delta chain and hash-checked as it is reached: memory holds about
    one tensor, whatever the model's size. The streaming reader merges and evaluation use."""
    with LazyStateDict(CommitReader(repo, target), tensors, framework) as state:
        for name in state:
            yield name, state[name]


@mediated("read", targets.model())
def open_model(target: str, *, repo: Repository | None = None) -> Path:
    """A directory holding ``NAME@REF``, for ``from_pretrained``; checked out once per commit.

    The copy lives in ``.fmforge/checkouts/<commit>``. It is written in a temporary directory
    beside it, with a marker written last, and renamed into place: a copy without the marker
    (left by an older fmforge) counts as absent, and a failure leaves nothing behind.

    A PEFT adapter committed with a registered base (``base=``, or a
    ``base_model_name_or_path`` naming one) is the one file that differs from the commit: its
    ``adapter_config.json`` names the base's own ``open_model`` directory, so
    ``AutoPeftModel.from_pretrained(open_model("lora@main"))`` loads offline (the committed
    config often names a hub id that cannot be reached). ``checkout`` writes the commit as it is.
    """
    if repo is None:
        with Repository.open() as opened:
            return open_model(target, repo=opened)
    reader = CommitReader(repo, target)
    directory = repo.path / "checkouts" / reader.commit
    marker = directory / _MARKER
    if marker.exists():
        return directory
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = _staging_dir(directory, inside=False)
    try:
        _write_files(reader, staging, None)
        _name_the_base(repo, reader, staging)
        (staging / _MARKER).write_text(reader.commit + "\n")
        shutil.rmtree(directory, ignore_errors=True)  # a copy without its marker
        try:
            os.rename(staging, directory)
        except OSError:
            if not marker.exists():  # not another process's finished copy
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


_MARKER = ".fmforge-complete"


def _name_the_base(repo: Repository, reader: CommitReader, root: Path) -> None:
    """Point an adapter's ``base_model_name_or_path`` at its registered base's checkout."""
    config = root / "adapter_config.json"
    if not reader.info.base or not config.is_file():
        return
    try:
        parsed = json.loads(config.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return  # not a config PEFT could read either: left as committed
    if not isinstance(parsed, dict):
        return
    parsed["base_model_name_or_path"] = str(open_model(reader.info.base, repo=repo))
    config.write_text(json.dumps(parsed, indent=2) + "\n", encoding="utf-8")

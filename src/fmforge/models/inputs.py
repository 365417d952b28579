"""What a model commit reads: the files under a path, each weights file checked before
anything is stored (``models.commits`` stores them).

Symbolic links: a single file is committed as given (a link to it included). In a directory, a
link is followed when its target stays inside the directory (it is committed as a copy of the
target, under the link's name) or, for a Hugging Face cache snapshot (``.../snapshots/REV/``),
inside that model's ``blobs/`` folder; a link leading anywhere else, a dangling link, a loop,
and anything but files and folders are refused, by name. A host file is never committed (and
so never pushed) because a link pointed at it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from fmforge.errors import InvalidModelSource
from fmforge.tensors.layout import read_layout


def source_files(path: Path) -> list[tuple[str, Path]]:
    """(path in the commit, path on disk) of every file to commit, each weights file already
    checked, so a refusal comes before anything is stored (links: see the module docstring)."""
    if path.is_file():
        if path.suffix != ".safetensors" and not is_torch_weights(path):
            raise InvalidModelSource(
                f"{path}: a single file must be a .safetensors file or a PyTorch weights file"
            )
        files = [(path.name, path)]
    elif not path.is_dir():
        raise InvalidModelSource(f"{path}: no such file or directory")
    else:
        root = path.resolve()
        files = sorted(_walk(path, "", _link_roots(root), frozenset({root})))
    if not files:
        raise InvalidModelSource(f"{path}: the directory has no files to commit")
    for _relative, source in files:
        _check_weights_file(source)
    return files


def _link_roots(root: Path) -> tuple[Path, ...]:
    """Where links under ``root`` may lead: inside it, and for a Hugging Face cache snapshot
    (``models--ORG--NAME/snapshots/REV``), into that model's ``blobs/`` folder."""
    if root.parent.name == "snapshots" and (root.parent.parent / "blobs").is_dir():
        return (root, (root.parent.parent / "blobs").resolve())
    return (root,)


def _walk(
    directory: Path, prefix: str, allowed: tuple[Path, ...], ancestors: frozenset[Path]
) -> Iterator[tuple[str, Path]]:
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        if _skipped(entry.name):
            continue
        relative, source = prefix + entry.name, Path(entry.path)
        if entry.is_symlink():
            target = Path(os.path.realpath(entry.path))
            if not any(target == a or target.is_relative_to(a) for a in allowed):
                raise InvalidModelSource(
                    f"{source}: a symbolic link to {target}, outside the directory; fmforge "
                    "commits only what the directory holds (copy the file in, or remove the link)"
                )
            if not target.exists():
                raise InvalidModelSource(f"{source}: a symbolic link to nothing ({target})")
        if entry.is_dir():  # follows a link that passed the checks above
            real = Path(os.path.realpath(entry.path))
            if real in ancestors:
                raise InvalidModelSource(
                    f"{source}: a symbolic link to {real}, which contains it (a loop)"
                )
            yield from _walk(source, relative + "/", allowed, ancestors | {real})
        elif entry.is_file():
            yield relative, source
        else:
            raise InvalidModelSource(
                f"{source}: not a regular file or directory (a pipe, socket or device)"
            )


_SKIPPED_DIRS = {".git", ".cache", ".ipynb_checkpoints", ".huggingface"}


def _skipped(part: str) -> bool:
    """VCS and cache folders, and fmforge's own temporary and marker files, are not model files."""
    return part in _SKIPPED_DIRS or part.startswith(".fmforge")


# Training state a Hugging Face Trainer checkpoint holds beside the weights: kept as files.
_TRAINING_STATE = ("training_args", "optimizer", "scheduler", "scaler", "rng_state")


def is_torch_weights(path: Path) -> bool:
    """PyTorch state dicts by name: ``pytorch_model*.bin`` and ``adapter_model*.bin`` as
    transformers and PEFT name them, and ``.pt``/``.pth`` files other than a Trainer's training
    state (``optimizer.pt``, ``rng_state.pth``, ...). Other files are stored as they are."""
    if path.name.startswith(("pytorch_model", "adapter_model")):
        return path.suffix in (".bin", ".pt", ".pth")
    return path.suffix in (".pt", ".pth") and not path.name.startswith(_TRAINING_STATE)


def _check_weights_file(source: Path) -> None:
    """Refuse a weights file the commit would refuse later, before anything is stored."""
    if source.suffix == ".safetensors":
        read_layout(source)
    elif is_torch_weights(source):
        from fmforge.tensors.torch_files import load_torch_state_dict

        load_torch_state_dict(source)

"""Checkouts that fail, land on other files, or would change file modes.

A checkout writes into a temporary directory and moves it into place at the end: one that
fails half-way leaves no target directory, no temporary directory and no parent it created. A
non-empty target is refused in one line and left untouched unless ``--force``. Files get the
default mode of new files (0666 less the umask), as the originals had.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from fmforge.errors import ObjectNotFound
from fmforge.models import ModelRefs, checkout, open_model
from fmforge.models.writer import load_manifest
from fmforge.repository import Repository
from tests.clirunner import fm
from tests.hostile.harness import app, assert_unchanged, cli_refused, one_line, runner, snapshot
from tests.modelfiles import base_weights, same_files, write_model


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return write_model(tmp_path / "model", base_weights())


@pytest.fixture
def root(tmp_path: Path, model: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    Repository.init(root).close()
    code, output = fm(root, "model", "commit", "m", str(model), "-m", "one")
    assert code == 0, output
    return root


def listing(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@contextmanager
def last_file_missing(root: Path) -> Iterator[str]:
    """The object of the commit's last file moved away (as if lost), so a checkout fails after
    writing the files before it; put back afterwards. Yields the file's path."""
    with Repository.open(root) as repo:
        index = repo.view(ModelRefs)
        manifest = load_manifest(repo, index.commit(index.resolve("m", "main")).manifest)
        *earlier, last = manifest["files"]
        assert earlier, "the model has files before the one that fails"
        assert last["kind"] == "blob", last
        stored = repo.objects.path_of(last["object"])  # type: ignore[attr-defined]
    aside = stored.with_name(stored.name + ".aside")
    stored.rename(aside)
    try:
        yield str(last["path"])
    finally:
        aside.rename(stored)


@pytest.mark.parametrize(
    "where", ["new", "nested/new", "empty"], ids=["new dir", "new parents", "existing empty dir"]
)
def test_a_failed_checkout_leaves_nothing(root: Path, tmp_path: Path, where: str) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    target = scratch / where
    if where == "empty":
        target.mkdir()
    before = snapshot(root)
    with last_file_missing(root):
        result = runner.invoke(app, ["--store", str(root), "model", "checkout", "m@main",
                                     "-o", str(target)])  # fmt: skip
    assert result.exit_code == 1, result.output
    line = one_line(result.stderr)
    assert line.startswith("fmforge: error: "), line
    assert listing(scratch) == (["empty"] if where == "empty" else []), listing(scratch)
    assert_unchanged(root, before)


def test_a_failed_checkout_through_the_api_leaves_nothing(root: Path, tmp_path: Path) -> None:
    with last_file_missing(root), Repository.open(root) as repo, pytest.raises(ObjectNotFound):
        checkout(repo, "m@main", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_failed_open_model_leaves_nothing(root: Path) -> None:
    checkouts = root / ".fmforge" / "checkouts"
    with last_file_missing(root), Repository.open(root) as repo, pytest.raises(ObjectNotFound):
        open_model("m@main", repo=repo)
    assert not checkouts.exists() or listing(checkouts) == []
    with Repository.open(root) as repo:
        directory = open_model("m@main", repo=repo)
        assert open_model("m@main", repo=repo) == directory  # once per commit
    assert (directory / ".fmforge-complete").is_file()
    assert [p.name for p in checkouts.iterdir()] == [directory.name]


def test_open_model_replaces_a_copy_without_its_marker(root: Path, model: Path) -> None:
    with Repository.open(root) as repo:
        commit = repo.view(ModelRefs).resolve("m", "main")
        half = root / ".fmforge" / "checkouts" / commit
        half.mkdir(parents=True)
        (half / "model.safetensors").write_bytes(b"half")
        directory = open_model("m@main", repo=repo)
    assert directory == half
    assert (directory / "model.safetensors").read_bytes() == (
        model / "model.safetensors"
    ).read_bytes()


@pytest.mark.parametrize(
    "holds",
    [{"notes.txt": "mine"}, {".hidden": "mine"}, {"model.safetensors": "not weights"}],
    ids=["a file", "a hidden file", "a file the commit holds"],
)
def test_a_non_empty_target_is_refused_and_untouched(
    root: Path, tmp_path: Path, holds: dict[str, str]
) -> None:
    target = tmp_path / "out"
    target.mkdir()
    for name, content in holds.items():
        (target / name).write_text(content)
    line = cli_refused(root, "model", "checkout", "m@main", "-o", str(target), contains="--force")
    assert f"{target} is not empty" in line
    assert {p.name: p.read_text() for p in target.iterdir()} == holds


def test_a_non_empty_subdirectory_counts(root: Path, tmp_path: Path) -> None:
    (tmp_path / "out" / "tokenizer").mkdir(parents=True)
    cli_refused(root, "model", "checkout", "m@main", "-o", str(tmp_path / "out"),
                contains="is not empty")  # fmt: skip
    assert listing(tmp_path / "out") == ["tokenizer"]


def test_force_overwrites_the_commits_files_and_keeps_the_others(
    root: Path, tmp_path: Path, model: Path
) -> None:
    target = tmp_path / "out"
    (target / "tokenizer").mkdir(parents=True)
    (target / "model.safetensors").write_text("stale")
    (target / "tokenizer" / "vocab.txt").write_text("stale")
    (target / "tokenizer" / "extra.txt").write_text("mine")
    (target / "config.json").mkdir()  # a directory where the commit has a file
    (target / "config.json" / "x").write_text("mine")
    (target / "notes.txt").write_text("mine")
    code, output = fm(root, "model", "checkout", "m@main", "-o", str(target), "--force")
    assert code == 0, output
    (target / "notes.txt").unlink()
    (target / "tokenizer" / "extra.txt").unlink()
    assert same_files(model, target)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert [p.name for p in target.iterdir() if p.name.startswith(".")] == []


def test_an_existing_empty_directory_is_filled(root: Path, tmp_path: Path, model: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    code, output = fm(root, "model", "checkout", "m@main", "-o", str(target))
    assert code == 0, output
    assert same_files(model, target)


@pytest.fixture(params=[0o022, 0o027, 0o002], ids=["umask 022", "umask 027", "umask 002"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def test_files_get_the_default_mode(root: Path, tmp_path: Path, umask: int) -> None:
    """As `cp` or `git checkout` would: 0666 less the umask for files, 0777 for directories."""
    out = tmp_path / "new" / "out"
    code, output = fm(root, "model", "checkout", "m@main", "-o", str(out))
    assert code == 0, output
    modes = {
        str(p.relative_to(tmp_path)): stat.S_IMODE(p.stat().st_mode)
        for p in [tmp_path / "new", *sorted((tmp_path / "new").rglob("*"))]
    }
    files = 0o666 & ~umask
    directories = 0o777 & ~umask
    assert modes == {
        "new": directories,
        "new/out": directories,
        "new/out/config.json": files,
        "new/out/model.safetensors": files,
        "new/out/tokenizer": directories,
        "new/out/tokenizer/vocab.txt": files,
    }, {k: oct(v) for k, v in modes.items()}


def test_the_objects_copy_gets_the_default_mode(root: Path, tmp_path: Path, umask: int) -> None:
    with Repository.open(root) as repo:
        digest = repo.objects.put(b"some bytes")
        repo.objects.copy_to(digest, tmp_path / "copy")
    assert stat.S_IMODE((tmp_path / "copy").stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_the_checkout_is_complete_and_verified(root: Path, tmp_path: Path, model: Path) -> None:
    code, output = fm(root, "model", "checkout", "m@main", "-o", str(tmp_path / "a" / "b"))
    assert code == 0, output
    assert "verified" in output
    assert same_files(model, tmp_path / "a" / "b")

"""``commit_tensors`` fed one tensor at a time: the same commit as from a mapping, tensors named
by hash, extra files (an adapter), parents from other models, provenance known only at the end."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fmforge.errors import InvalidTensor, RefNotFound
from fmforge.models import CommitReader, KnownTensor, checkout, commit_tensors
from fmforge.models.history import ModelHistory
from fmforge.repository import Repository
from tests.hostile.harness import api_refused


def _tensors(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "b.weight": rng.standard_normal((16, 8)).astype(np.float32),
        "a.bias": rng.standard_normal(8).astype(np.float32),
        "c.ids": np.arange(5, dtype=np.int64),
    }


def test_a_stream_commits_what_the_mapping_commits(repo: Repository, tmp_path: Path) -> None:
    tensors = _tensors(0)
    seen: list[str] = []

    def stream() -> Iterator[tuple[str, np.ndarray]]:
        for name, value in tensors.items():
            seen.append(name)
            yield name, value

    mapped = commit_tensors(repo, "m", tensors, message="mapping", branch="mapped")
    streamed = commit_tensors(repo, "m", stream(), message="stream", branch="streamed")
    assert seen == list(tensors)
    assert streamed.stored_bytes == 0  # every tensor and the header were stored already
    a = checkout(repo, "m@mapped", tmp_path / "a").directory / "model.safetensors"
    b = checkout(repo, "m@streamed", tmp_path / "b").directory / "model.safetensors"
    assert a.read_bytes() == b.read_bytes()
    assert mapped.raw_bytes == streamed.raw_bytes


def test_a_known_tensor_is_committed_without_its_bytes(repo: Repository) -> None:
    commit_tensors(repo, "m", _tensors(0), message="v1")
    hashes = {name: digest for name, digest, _ in CommitReader(repo, "m@main").tensors()}
    changed = _tensors(1)["b.weight"]
    result = commit_tensors(
        repo, "m",
        [("a.bias", KnownTensor(hashes["a.bias"])), ("b.weight", changed),
         ("c.ids", KnownTensor(hashes["c.ids"]))],
        message="v2",
    )  # fmt: skip
    assert result.reused == 2
    after = {name: digest for name, digest, _ in CommitReader(repo, "m@main").tensors()}
    assert after["a.bias"] == hashes["a.bias"]
    assert after["b.weight"] != hashes["b.weight"]


def test_files_make_an_adapter_and_check_out(repo: Repository, tmp_path: Path) -> None:
    commit_tensors(repo, "body", _tensors(0), message="base")
    config = json.dumps({"peft_type": "LORA", "r": 2, "target_modules": ["q"]}).encode()
    lora = {"base_model.model.q.lora_A.weight": np.ones((2, 8), np.float32)}
    files = {"adapter_config.json": config, "README.md": b"# an adapter\n"}
    commit_tensors(repo, "ada", lora, message="adapter", base="body@main",
                   path="adapter_model.safetensors", files=files)  # fmt: skip
    reader = CommitReader(repo, "ada@main")
    assert reader.manifest["adapter"]["r"] == 2
    assert reader.info.base == f"body@{CommitReader(repo, 'body@main').commit}"
    out = checkout(repo, "ada@main", tmp_path / "ada").directory
    assert (out / "adapter_config.json").read_bytes() == config
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "adapter_config.json", "adapter_model.safetensors",
    ]  # fmt: skip


def test_parents_from_another_model_by_full_id(repo: Repository) -> None:
    commit_tensors(repo, "a", _tensors(0), message="a")
    other = CommitReader(repo, "a@main").commit
    commit_tensors(repo, "b", _tensors(1), message="b")
    mine = CommitReader(repo, "b@main").commit
    result = commit_tensors(repo, "b", _tensors(2), message="merge", parents=[mine, other])
    assert result.parents == (mine, other)
    assert ModelHistory.of(repo, "b").commits[result.commit]["data"]["parents"] == [mine, other]
    with pytest.raises(RefNotFound):  # a prefix names a commit of this model only
        commit_tensors(repo, "b", _tensors(3), message="x", parents=[other[:12]])


def test_provenance_computed_at_the_end_names_its_objects(repo: Repository) -> None:
    calls: list[int] = []

    def provenance() -> dict[str, object]:
        calls.append(1)
        digest = repo.objects.put(b'{"report": 1}')
        return {"kind": "test", "report": digest, "refs": [digest]}

    result = commit_tensors(repo, "m", _tensors(0), message="p", provenance=provenance)
    data = ModelHistory.of(repo, "m").commits[result.commit]
    assert calls == [1]
    assert data["data"]["provenance"]["kind"] == "test"
    assert data["data"]["provenance"]["report"] in data["refs"]
    repo.verify()


def test_an_unknown_hash_is_refused_with_nothing_recorded(repo: Repository) -> None:
    commit_tensors(repo, "m", _tensors(0), message="v1")
    api_refused(repo.path.parent,
                lambda: commit_tensors(repo, "m", iter([("w", KnownTensor("0" * 64))]),
                                       message="bad"),
                InvalidTensor, contains="no stored tensor")  # fmt: skip


def test_a_name_given_twice_records_no_commit(repo: Repository) -> None:
    """Refused when the second one arrives: the first may be stored by then (an object no
    commit names, which gc removes), but no commit is recorded."""
    commit_tensors(repo, "m", _tensors(0), message="v1")
    before = repo.ledger.count()
    twice = [("w", np.zeros(2, np.float32)), ("w", np.ones(2, np.float32))]
    with pytest.raises(InvalidTensor, match="'w' is given twice"):
        commit_tensors(repo, "m", iter(twice), message="bad")
    assert repo.ledger.count() == before

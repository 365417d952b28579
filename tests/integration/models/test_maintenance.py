"""gc keeps what branches, tags and the retention window reach; verify rebuilds every tensor."""

from __future__ import annotations

from pathlib import Path

import pytest

from fmforge.errors import CorruptTensor, RefNotFound
from fmforge.models import ModelRefs, checkout, commit_model, reset_branch
from fmforge.models.maintenance import prunable_objects, verify_tensors
from fmforge.repository import Repository
from tests.modelfiles import adam_step, base_weights, same_files, write_model


def abandoned_history(repo: Repository, tmp_path: Path) -> tuple[str, str, Path]:
    """main: v0 -> v1 -> v2, then main reset to v1: v2 is on no branch. Returns (v1, v2, v1 dir)."""
    weights = base_weights()
    commits, dirs = [], []
    for i in range(3):
        dirs.append(write_model(tmp_path / f"v{i}", weights, note=str(i)))
        commits.append(commit_model(repo, "tiny", dirs[-1], f"v{i}").commit)
        weights = adam_step(weights, seed=i)
    reset_branch(repo, "tiny", "main", commits[1])
    return commits[1], commits[2], dirs[1]


class TestGc:
    def test_the_retention_window_keeps_recent_commits(
        self, repo: Repository, tmp_path: Path
    ) -> None:
        abandoned_history(repo, tmp_path)
        prune, dropped = prunable_objects(repo, retention_s=3600)
        assert (prune, dropped) == (set(), [])

    def test_unreachable_old_commits_are_pruned_and_recorded(
        self, repo: Repository, tmp_path: Path
    ) -> None:
        kept, abandoned, kept_dir = abandoned_history(repo, tmp_path)
        prune, dropped = prunable_objects(repo, retention_s=0)
        assert dropped == [abandoned]
        report = repo.gc(grace_period_s=0, prune=prune, reason="test")
        assert report.deleted == len(prune) > 0
        (event,) = repo.ledger.read_all(types=["ObjectsPruned"])
        assert sorted(event.data["objects"]) == sorted(prune)
        # what a branch reaches still checks out bit for bit, delta bases included
        checkout(repo, f"tiny@{kept}", tmp_path / "out")
        assert same_files(tmp_path / "out", kept_dir)
        with pytest.raises(RefNotFound, match="gc pruned this commit's objects"):
            checkout(repo, f"tiny@{abandoned}", tmp_path / "gone")
        repo.verify()  # pruned objects are gone on purpose, not missing
        check = verify_tensors(repo)
        assert (check.commits, check.skipped_commits) == (2, 1)

    def test_a_tag_keeps_a_commit(self, repo: Repository, tmp_path: Path) -> None:
        from fmforge.models import create_tag

        _kept, abandoned, _ = abandoned_history(repo, tmp_path)
        create_tag(repo, "tiny", "keep-me", abandoned)
        assert prunable_objects(repo, retention_s=0) == (set(), [])


class TestVerifyTensors:
    def test_every_distinct_tensor_is_rebuilt(self, repo: Repository, tmp_path: Path) -> None:
        abandoned_history(repo, tmp_path)
        full = verify_tensors(repo)
        assert full.commits == 3
        distinct = {
            h for c in repo.view(ModelRefs).all_commits("tiny") for h in _hashes(repo, c.commit)
        }
        assert full.tensors == len(distinct)
        quick = verify_tensors(repo, quick=True, sample=3)
        assert quick.tensors == 3

    def test_a_damaged_tensor_is_named_with_its_commit(
        self, repo: Repository, tmp_path: Path
    ) -> None:
        commit = commit_model(repo, "tiny", write_model(tmp_path / "v", base_weights()), "v").commit
        record = repo.view(ModelRefs).stored_tensor(_hashes(repo, commit)[0])
        assert record is not None
        path = repo.objects.path_of(record.blob)  # type: ignore[attr-defined]
        data = bytearray(path.read_bytes())
        data[-3] ^= 0x55
        path.write_bytes(bytes(data))
        with pytest.raises(CorruptTensor, match=f"tiny@{commit[:12]}"):
            verify_tensors(repo)


def _hashes(repo: Repository, commit: str) -> list[str]:
    from fmforge.models.checkout import CommitReader

    return [h for _n, h, _s in CommitReader(repo, f"tiny@{commit}").tensors()]

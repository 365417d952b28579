"""Model version control on real safetensors directories: commit, refs, bit-exact checkout."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fmforge.errors import (
    BranchConflict,
    CorruptTensor,
    InvalidModelSource,
    InvalidName,
    ModelNotFound,
    RefNotFound,
)
from fmforge.models import ModelRefs, checkout, commit_model
from fmforge.models.storage import KEYFRAME_EVERY
from fmforge.repository import Repository
from tests.modelfiles import adam_step, base_weights, same_files, write_model


class TestCommitAndCheckout:
    @pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
    def test_versions_check_out_byte_identical(
        self, repo: Repository, tmp_path: Path, dtype: torch.dtype
    ) -> None:
        weights = base_weights(dtype=dtype)
        sources = []
        for version in range(4):
            source = write_model(tmp_path / f"src{version}", weights, note=str(version))
            commit_model(repo, "tiny", source, f"version {version}")
            sources.append(source)
            weights = adam_step(weights, version)
        history = repo.view(ModelRefs).history(repo.view(ModelRefs).resolve("tiny", "main"))
        assert [c.message for c in history] == [f"version {v}" for v in (3, 2, 1, 0)]
        for back, source in zip(range(4), reversed(sources), strict=True):
            out = tmp_path / f"out{back}"
            result = checkout(repo, f"tiny@main~{back}", out)
            assert result.commit == history[back].commit
            assert same_files(source, out), f"main~{back} differs"

    def test_unchanged_tensors_cost_only_a_manifest_entry(
        self, repo: Repository, tmp_path: Path
    ) -> None:
        weights = base_weights()
        first = commit_model(repo, "tiny", write_model(tmp_path / "a", weights), "base")
        weights["layer.0.norm.bias"] = weights["layer.0.norm.bias"] + 0.5
        second = commit_model(repo, "tiny", write_model(tmp_path / "b", weights), "bias only")
        assert (first.full, first.reused) == (5, 0)
        assert (second.reused, second.full + second.deltas) == (4, 1)
        assert second.stored_bytes < first.stored_bytes / 20

    def test_dense_updates_are_stored_as_deltas(self, repo: Repository, tmp_path: Path) -> None:
        weights = base_weights()
        first = commit_model(repo, "tiny", write_model(tmp_path / "a", weights), "base")
        second = commit_model(
            repo, "tiny", write_model(tmp_path / "b", adam_step(weights, 1)), "step"
        )
        assert second.deltas >= 3, second.kinds
        assert second.stored_bytes < 0.8 * first.stored_bytes

    def test_delta_chains_are_cut_by_keyframes(self, repo: Repository, tmp_path: Path) -> None:
        weights = base_weights()
        sources = []
        for version in range(KEYFRAME_EVERY + 3):
            source = write_model(tmp_path / f"s{version}", weights)
            commit_model(repo, "tiny", source, f"v{version}")
            sources.append(source)
            weights = adam_step(weights, version)
        index = repo.view(ModelRefs)
        depths = [
            index.stored_tensor(h).depth  # type: ignore[union-attr]
            for c in index.history(index.resolve("tiny", "main"))
            for h in _tensor_hashes(repo, c.manifest, "layer.0.attn.q.weight")
        ]
        depths.reverse()  # oldest first
        assert max(depths) < KEYFRAME_EVERY  # a checkout replays at most KEYFRAME_EVERY-1 deltas
        # where the chain would grow too long, the version is a delta on the chain's full one
        assert depths[KEYFRAME_EVERY] <= 1
        for back, source in enumerate(reversed(sources)):
            out = checkout(repo, f"tiny@main~{back}", tmp_path / f"o{back}").directory
            assert same_files(source, out)

    def test_tensor_glob_writes_a_loadable_subset(self, repo: Repository, tmp_path: Path) -> None:
        weights = base_weights()
        commit_model(repo, "tiny", write_model(tmp_path / "a", weights), "base")
        out = checkout(repo, "tiny", tmp_path / "o", tensors="layer.0.attn.*").directory
        loaded = load_file(str(out / "model.safetensors"))
        assert sorted(loaded) == ["layer.0.attn.q.weight", "layer.0.attn.v.weight"]
        for name, tensor in loaded.items():
            assert torch.equal(tensor, weights[name])
        assert (out / "config.json").exists()

    def test_a_single_safetensors_file(self, repo: Repository, tmp_path: Path) -> None:
        source = write_model(tmp_path / "a", base_weights()) / "model.safetensors"
        commit_model(repo, "single", source, "one file")
        out = checkout(repo, "single@main", tmp_path / "o").directory
        assert (out / "model.safetensors").read_bytes() == source.read_bytes()


def _tensor_hashes(repo: Repository, manifest_digest: str, name: str) -> list[str]:
    from fmforge.models.writer import load_manifest

    manifest = load_manifest(repo, manifest_digest)
    return [h for f in manifest["files"] if f["kind"] == "safetensors"
            for n, h in f["tensors"] if n == name]  # fmt: skip


class TestRefs:
    def test_branches_tags_and_prefixes(self, repo: Repository, tmp_path: Path) -> None:
        weights = base_weights()
        base = commit_model(repo, "tiny", write_model(tmp_path / "a", weights), "base")
        feature = commit_model(
            repo, "tiny", write_model(tmp_path / "b", adam_step(weights, 1)), "feature work",
            branch="feature", parent="main",
        )  # fmt: skip
        index = repo.view(ModelRefs)
        assert index.branches("tiny") == {"main": base.commit, "feature": feature.commit}
        assert index.resolve("tiny", "feature~1") == base.commit
        assert index.resolve("tiny", base.commit[:8]) == base.commit
        assert feature.parents == (base.commit,)
        with pytest.raises(RefNotFound, match="no branch, tag or commit 'nope'"):
            index.resolve("tiny", "nope")
        with pytest.raises(RefNotFound, match="shorter than"):
            index.resolve("tiny", "main~5")
        with pytest.raises(ModelNotFound):
            index.resolve("other", "main")

    def test_time_travel_through_the_ledger(self, repo: Repository, tmp_path: Path) -> None:
        first = commit_model(repo, "tiny", write_model(tmp_path / "a", base_weights()), "one")
        index = repo.view(ModelRefs)
        moment = index.commit(first.commit).time
        second = commit_model(repo, "tiny", write_model(tmp_path / "b", base_weights(1)), "two")
        index = repo.view(ModelRefs)
        assert index.resolve("tiny", f"main@{{{moment}}}") == first.commit
        assert index.resolve("tiny", "main@{2999-01-01}") == second.commit
        with pytest.raises(RefNotFound, match="did not exist then"):
            index.resolve("tiny", "main@{2000-01-01}")

    def test_concurrent_commits_one_wins_one_conflicts(self, tmp_path: Path) -> None:
        root = tmp_path / "repo"
        root.mkdir()
        Repository.init(root).close()
        with Repository.open(root) as repo:
            commit_model(repo, "tiny", write_model(tmp_path / "a", base_weights()), "base")
            head = repo.view(ModelRefs).resolve("tiny", "main")
        barrier = threading.Barrier(2)
        outcomes: list[str] = []

        def commit(i: int) -> None:
            source = write_model(tmp_path / f"c{i}", base_weights(10 + i))
            with Repository.open(root) as repo:
                repo.view(ModelRefs)
                barrier.wait()
                try:
                    # Both saw `head`; a commit onto a branch that has moved must not land.
                    commit_model(repo, "tiny", source, f"racer {i}", expected_head=head)
                    outcomes.append("won")
                except BranchConflict:
                    outcomes.append("conflict")

        threads = [threading.Thread(target=commit, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcomes) == ["conflict", "won"]
        with Repository.open(root) as repo:
            history = repo.view(ModelRefs).history(repo.view(ModelRefs).resolve("tiny", "main"))
            assert len(history) == 1 + outcomes.count("won")
            repo.verify()

    def test_bad_sources_are_refused(self, repo: Repository, tmp_path: Path) -> None:
        (tmp_path / "notes.txt").write_text("hi")
        with pytest.raises(InvalidModelSource, match=r"must be a \.safetensors file"):
            commit_model(repo, "tiny", tmp_path / "notes.txt", "x")
        with pytest.raises(InvalidModelSource, match="no such file"):
            commit_model(repo, "tiny", tmp_path / "missing", "x")
        with pytest.raises(InvalidName, match="invalid model name"):
            commit_model(repo, "bad name!", tmp_path, "x")


class TestIntegrity:
    def test_tampered_tensor_object_is_detected(self, repo: Repository, tmp_path: Path) -> None:
        from fmforge.errors import CorruptObject

        commit_model(repo, "tiny", write_model(tmp_path / "a", base_weights()), "base")
        index = repo.view(ModelRefs)
        record = index.stored_tensor(
            _tensor_hashes(repo, index.commit(index.resolve("tiny", "main")).manifest,
                           "embed.weight")[0]
        )  # fmt: skip
        assert record is not None
        path = repo.objects.path_of(record.blob)  # type: ignore[attr-defined]
        data = bytearray(path.read_bytes())
        data[-5] ^= 0xFF
        path.write_bytes(bytes(data))
        # The tensor is rebuilt and checked against its raw hash; the object itself by its digest.
        with pytest.raises(CorruptTensor, match=record.blob):
            checkout(repo, "tiny", tmp_path / "o")
        with pytest.raises(CorruptObject):
            repo.verify()

    def test_rebuilding_the_projection_gives_the_same_refs(
        self, repo: Repository, tmp_path: Path
    ) -> None:
        from fmforge.models import ModelRefs

        weights = base_weights()
        commit_model(repo, "tiny", write_model(tmp_path / "a", weights), "base")
        commit_model(repo, "tiny", write_model(tmp_path / "b", adam_step(weights, 2)), "step",
                     branch="exp", parent="main")  # fmt: skip
        repo.view(ModelRefs)
        before = {t: repo.views.db.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall()
                  for t in ModelRefs.tables}  # fmt: skip
        repo.views.rebuild(repo.views.projection(ModelRefs))
        after = {t: repo.views.db.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall()
                 for t in ModelRefs.tables}  # fmt: skip
        assert before == after


class TestParentFromDisk:
    """A parent's tensors come from its file when that is unchanged, else from its chain."""

    def _two_versions(self, repo: Repository, tmp_path: Path) -> tuple[Path, Path, str]:
        weights = base_weights()
        first = write_model(tmp_path / "a", weights)
        commit_model(repo, "tiny", first, "one")
        second = write_model(tmp_path / "b", adam_step(weights, 1))
        index = repo.view(ModelRefs)
        (blob,) = {
            index.stored_tensor(h).blob  # type: ignore[union-attr]
            for h in _tensor_hashes(repo, index.commit(index.resolve("tiny", "main")).manifest,
                                    "embed.weight")
        }  # fmt: skip
        return first, second, blob

    def test_an_unchanged_parent_file_spares_the_chain(
        self, repo: Repository, tmp_path: Path
    ) -> None:
        _first, second, blob = self._two_versions(repo, tmp_path)
        repo.objects.path_of(blob).unlink()  # type: ignore[attr-defined]
        result = commit_model(repo, "tiny", second, "two")  # read embed.weight from a/ instead
        assert result.deltas >= 3

    def test_a_parent_file_edited_in_place_is_not_trusted(
        self, repo: Repository, tmp_path: Path
    ) -> None:
        import os

        first, second, _ = self._two_versions(repo, tmp_path)
        target = first / "model.safetensors"
        stat = target.stat()
        data = bytearray(target.read_bytes())
        data[-10] ^= 0xFF  # same size, same inode, mtime put back: only the hash can tell
        with open(target, "r+b") as handle:
            handle.write(bytes(data))
        os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        commit_model(repo, "tiny", second, "two")
        out = checkout(repo, "tiny@main", tmp_path / "o").directory
        assert same_files(second, out)

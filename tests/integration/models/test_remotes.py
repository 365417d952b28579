"""push / pull / clone between real repositories: a directory remote and an S3 server process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fmforge.errors import NonFastForward, RemoteError, RemoteNotFound
from fmforge.models import ModelRefs, checkout, commit_model, create_tag
from fmforge.remotes import add_remote, clone, list_remotes, pull, push, remove_remote
from fmforge.repository import Repository
from tests.modelfiles import adam_step, base_weights, same_files, write_model


def new_repo(path: Path) -> Repository:
    path.mkdir(parents=True)
    return Repository.init(path)


def history(tmp_path: Path, repo: Repository, versions: int = 3) -> list[Path]:
    """Commit ``versions`` versions of a small model on main; returns their directories."""
    weights = base_weights()
    dirs = []
    for i in range(versions):
        source = write_model(tmp_path / f"src{i}", weights, note=str(i))
        commit_model(repo, "tiny", source, f"v{i}")
        dirs.append(source)
        weights = adam_step(weights, seed=i)
    return dirs


def shared_with_a_clone(tmp_path: Path) -> str:
    """Repository a/ pushes one commit to remote/; b/ is a clone of remote/."""
    remote = str(tmp_path / "remote")
    with new_repo(tmp_path / "a") as a:
        history(tmp_path / "ha", a, versions=1)
        add_remote(a, "origin", remote)
        push(a, "origin", "tiny")
    clone(remote, tmp_path / "b")
    return remote


class TestDirectoryRemote:
    def test_push_then_clone_gives_back_every_version_bit_for_bit(self, tmp_path: Path) -> None:
        with new_repo(tmp_path / "a") as repo:
            sources = history(tmp_path, repo)
            create_tag(repo, "tiny", "v1.0", "main~1")
            add_remote(repo, "origin", str(tmp_path / "remote"))
            sent = push(repo, "origin", "tiny")
            assert (sent.commits, sent.branches, sent.tags) == (
                3,
                {"main": sent.branches["main"]},
                ["v1.0"],
            )
            assert sent.objects > 0
            again = push(repo, "origin", "tiny")
            assert (again.commits, again.objects, again.branches) == (0, 0, {})
        clone(str(tmp_path / "remote"), tmp_path / "b")
        with Repository.open(tmp_path / "b") as copy:
            index = copy.view(ModelRefs)
            assert len(index.history(index.resolve("tiny", "main"))) == 3
            assert index.resolve("tiny", "v1.0") == index.resolve("tiny", "main~1")
            for back, source in zip((2, 1, 0), sources, strict=True):
                out = tmp_path / f"out{back}"
                checkout(copy, f"tiny@main~{back}", out)
                assert same_files(out, source)
            copy.verify()  # the clone's own chain and every object it refers to

    def test_only_missing_objects_travel(self, tmp_path: Path) -> None:
        with new_repo(tmp_path / "a") as repo:
            history(tmp_path, repo, versions=2)
            add_remote(repo, "origin", str(tmp_path / "remote"))
            first = push(repo, "origin", "tiny")
            # one more version changing one tensor: only its objects and the manifest travel
            weights = base_weights()
            weights["layer.0.norm.bias"] += 1
            commit_model(repo, "tiny", write_model(tmp_path / "s9", weights), "bias only")
            second = push(repo, "origin", "tiny")
        assert second.commits == 1
        assert second.objects <= 4 < first.objects  # tensor, header, manifest, config at most

    def test_a_push_that_is_not_a_fast_forward_is_refused(self, tmp_path: Path) -> None:
        remote = shared_with_a_clone(tmp_path)
        with Repository.open(tmp_path / "b") as b:
            commit_model(b, "tiny", write_model(tmp_path / "b1", base_weights(5)), "from b")
            push(b, "origin", "tiny")
        with Repository.open(tmp_path / "a") as a:
            commit_model(a, "tiny", write_model(tmp_path / "a1", base_weights(6)), "from a")
            with pytest.raises(NonFastForward, match="not in this main's history; pull first"):
                push(a, "origin", "tiny")
            # pulling fetches b's commit but cannot move a's diverged main
            with pytest.raises(NonFastForward, match="diverged"):
                pull(a, "origin", "tiny")
            index = a.view(ModelRefs)
            remote_main = refs_of(remote)["main"]
            assert index.commit(remote_main).message == "from b"  # fetched all the same
            assert index.commit(index.resolve("tiny", "main")).message == "from a"
        assert refs_of(remote)["main"] == remote_main  # the remote did not move

    def test_pull_fast_forwards(self, tmp_path: Path) -> None:
        shared_with_a_clone(tmp_path)
        with Repository.open(tmp_path / "a") as a:
            commit_model(a, "tiny", write_model(tmp_path / "a1", base_weights(6)), "second")
            push(a, "origin", "tiny")
        with Repository.open(tmp_path / "b") as b:
            result = pull(b, "origin", "tiny")
            assert result.commits == 1
            index = b.view(ModelRefs)
            assert index.commit(index.resolve("tiny", "main")).message == "second"

    def test_remote_configuration_errors_are_clear(self, repo: Repository, tmp_path: Path) -> None:
        with pytest.raises(RemoteNotFound, match="no remote named 'nope'"):
            push(repo, "nope", "tiny")
        add_remote(repo, "origin", str(tmp_path / "r"))
        with pytest.raises(RemoteError, match="exists already"):
            add_remote(repo, "origin", str(tmp_path / "other"))
        with pytest.raises(RemoteError, match="unsupported remote URL"):
            add_remote(repo, "web", "http://example.com/models")
        assert list(list_remotes(repo)) == ["origin"]
        remove_remote(repo, "origin")
        assert list_remotes(repo) == {}


def refs_of(remote: str) -> dict[str, str]:
    with Repository.open(remote) as repo:
        return repo.view(ModelRefs).branches("tiny")


@pytest.mark.s3
class TestS3Remote:
    def test_push_and_pull_between_two_repositories(self, tmp_path: Path, s3_endpoint: str) -> None:
        url = f"s3://models-{os.getpid()}/team/registry"
        import boto3

        boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=f"models-{os.getpid()}")
        with new_repo(tmp_path / "a") as a:
            sources = history(tmp_path, a)
            add_remote(a, "origin", url, endpoint_url=s3_endpoint)
            assert push(a, "origin", "tiny").commits == 3
        clone(url, tmp_path / "b", endpoint_url=s3_endpoint)
        with Repository.open(tmp_path / "b") as b:
            checkout(b, "tiny@main", tmp_path / "out")
            assert same_files(tmp_path / "out", sources[-1])
            commit_model(b, "tiny", write_model(tmp_path / "b1", base_weights(9)), "from b")
            push(b, "origin", "tiny")
        with Repository.open(tmp_path / "a") as a:
            assert pull(a, "origin", "tiny").commits == 1
            index = a.view(ModelRefs)
            assert index.commit(index.resolve("tiny", "main")).message == "from b"
            a.verify()


_PUSH = textwrap.dedent(
    """
    import sys
    from fmforge.remotes import push
    from fmforge.repository import Repository
    with Repository.open(sys.argv[1]) as repo:
        push(repo, "origin", "big")
    """
)


@pytest.mark.slow
def test_an_interrupted_push_resumes_without_resending(tmp_path: Path) -> None:
    import torch

    with new_repo(tmp_path / "a") as repo:
        g = torch.Generator().manual_seed(0)
        tensors = {f"layer.{i}.weight": torch.randn(512, 512, generator=g) for i in range(48)}
        from safetensors.torch import save_file

        (tmp_path / "big").mkdir()
        save_file(tensors, str(tmp_path / "big" / "model.safetensors"))
        commit_model(repo, "big", tmp_path / "big", "48 tensors")
        add_remote(repo, "origin", str(tmp_path / "remote"))
    remote_objects = tmp_path / "remote" / ".fmforge" / "objects"
    child = subprocess.Popen([sys.executable, "-c", _PUSH, str(tmp_path / "a")])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and child.poll() is None:
        landed = (
            sum(1 for p in remote_objects.rglob("*") if p.is_file())
            if remote_objects.exists()
            else 0
        )
        if landed >= 10:
            child.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    child.wait()
    if child.returncode == 0:
        pytest.skip("the push finished before it could be interrupted")
    with Repository.open(tmp_path / "remote") as remote:
        landed = sum(1 for _ in remote.objects.iter_objects())
    assert landed >= 9
    with Repository.open(tmp_path / "a") as repo:
        resumed = push(repo, "origin", "big")
    assert resumed.skipped_objects == landed  # what landed before the kill is not sent again
    assert resumed.commits == 1
    with Repository.open(tmp_path / "remote") as remote:
        checkout(remote, "big@main", tmp_path / "out")
        remote.verify()
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == (
        tmp_path / "big" / "model.safetensors"
    ).read_bytes()

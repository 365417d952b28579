"""Model directories and paths that try to smuggle something in or out.

Symbolic links that leave the model directory (a host file would be committed, then pushed),
PyTorch pickles that are not plain state dicts, and checkout targets that are not directories:
each refused in one line naming the file, with the repository unchanged. What is allowed
instead (links inside the directory, a Hugging Face cache snapshot, training state files kept
as they are) is checked to round-trip.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from fmforge.repository import Repository
from tests.clirunner import fm
from tests.hostile.harness import cli_refused
from tests.modelfiles import base_weights, same_files, write_model


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "repo").mkdir()
    Repository.init(tmp_path / "repo").close()
    return tmp_path / "repo"


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return write_model(tmp_path / "model", base_weights())


def commit_refused(root: Path, path: Path, contains: str) -> str:
    return cli_refused(root, "model", "commit", "m", str(path), "-m", "x", contains=contains)


def committed_as(root: Path, path: Path, out: Path) -> Path:
    code, output = fm(root, "model", "commit", "m", str(path), "-m", "x")
    assert code == 0, output
    code, output = fm(root, "model", "checkout", "m@main", "-o", str(out))
    assert code == 0, output
    return out


class TestSymlinks:
    @pytest.mark.parametrize(
        "target",
        ["/etc/passwd", "/etc", "../../outside.txt", "../../../../../../../../etc/hostname"],
        ids=["host-file", "host-directory", "relative-escape", "deep-relative-escape"],
    )
    def test_a_link_leaving_the_directory_is_refused_by_name(
        self, root: Path, model: Path, tmp_path: Path, target: str
    ) -> None:
        (tmp_path / "outside.txt").write_text("not part of the model\n")
        (model / "tokenizer" / "leak").symlink_to(target)
        line = commit_refused(root, model, "outside the directory")
        assert "tokenizer/leak" in line, line

    def test_a_link_to_nothing_is_refused(self, root: Path, model: Path) -> None:
        (model / "vocab.txt").symlink_to(model / "missing.txt")
        commit_refused(root, model, "vocab.txt: a symbolic link to nothing")

    def test_a_link_loop_is_refused(self, root: Path, model: Path) -> None:
        (model / "tokenizer" / "again").symlink_to("..")
        commit_refused(root, model, "loop")

    def test_a_pipe_is_refused_not_read(self, root: Path, model: Path) -> None:
        os.mkfifo(model / "events.fifo")
        commit_refused(root, model, "events.fifo: not a regular file")

    def test_links_inside_the_directory_are_committed_as_copies(
        self, root: Path, model: Path, tmp_path: Path
    ) -> None:
        (model / "vocab.txt").symlink_to("tokenizer/vocab.txt")
        (model / "tokenizer-link").symlink_to(model / "tokenizer")
        out = committed_as(root, model, tmp_path / "out")
        assert not (out / "vocab.txt").is_symlink()
        assert (out / "vocab.txt").read_text() == (model / "tokenizer" / "vocab.txt").read_text()
        linked = out / "tokenizer-link" / "vocab.txt"
        assert not linked.parent.is_symlink()
        assert linked.read_text() == (model / "tokenizer" / "vocab.txt").read_text()
        assert (out / "model.safetensors").read_bytes() == (
            model / "model.safetensors"
        ).read_bytes()

    def test_a_hugging_face_cache_snapshot_is_committed(self, root: Path, tmp_path: Path) -> None:
        cache = tmp_path / "hub" / "models--org--tiny"
        source = write_model(tmp_path / "src", base_weights())
        snapshot = cache / "snapshots" / "0123abcd"
        snapshot.mkdir(parents=True)
        (cache / "blobs").mkdir()
        for file in ("model.safetensors", "config.json"):
            (cache / "blobs" / file.upper()).write_bytes((source / file).read_bytes())
            (snapshot / file).symlink_to(Path("../../blobs") / file.upper())
        out = committed_as(root, snapshot, tmp_path / "out")
        assert same_files(snapshot, out)
        (snapshot / "stolen").symlink_to("../../../../outside")  # out of the cache: refused
        commit_refused(root, snapshot, "outside the directory")


class Payload:
    """A pickle that would create a file if it were ever unpickled for real."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (Path.touch, (self.marker,))


class TestTorchPickles:
    def test_a_pickle_with_code_is_refused_and_never_run(
        self, root: Path, model: Path, tmp_path: Path
    ) -> None:
        marker = tmp_path / "pwned"
        (model / "pytorch_model.bin").write_bytes(pickle.dumps({"w": Payload(marker)}))
        line = commit_refused(root, model, "not a plain state dict")
        assert "pytorch_model.bin" in line
        assert not marker.exists()

    def test_a_pickle_with_code_in_a_torch_zip_is_refused(
        self, root: Path, model: Path, tmp_path: Path
    ) -> None:
        marker = tmp_path / "pwned"
        torch.save({"w": Payload(marker)}, model / "pytorch_model.bin")
        commit_refused(root, model, "not a plain state dict")
        assert not marker.exists()

    @pytest.mark.parametrize(
        ("content", "contains"),
        [
            ({"model": {"w": torch.ones(2)}, "epoch": 3}, "entry 'model' is dict"),
            ({"w": torch.ones(2), "lr": 0.1}, "entry 'lr' is float"),
            ([torch.ones(2)], "holds list"),
            ({1: torch.ones(2)}, "entry '1' is Tensor"),
        ],
        ids=["nested-checkpoint", "number-beside-tensors", "list", "integer-key"],
    )
    def test_a_torch_file_that_is_not_a_flat_state_dict_is_refused(
        self, root: Path, model: Path, content: object, contains: str
    ) -> None:
        torch.save(content, model / "pytorch_model.bin")
        commit_refused(root, model, contains)

    @pytest.mark.parametrize("name", ["pytorch_model.bin", "adapter_model.bin", "weights.pt"])
    def test_bytes_that_are_not_a_torch_file_are_refused(
        self, root: Path, model: Path, name: str
    ) -> None:
        (model / name).write_bytes(b"hello, not a pickle")
        commit_refused(root, model, f"{name}: not a PyTorch weights file")

    def test_a_single_file_is_checked_too(self, root: Path, tmp_path: Path) -> None:
        torch.save({"state": {"w": torch.ones(2)}}, tmp_path / "checkpoint.pt")
        commit_refused(root, tmp_path / "checkpoint.pt", "checkpoint.pt: entry 'state'")

    def test_training_state_beside_the_weights_is_kept_as_files(
        self, root: Path, model: Path, tmp_path: Path
    ) -> None:
        torch.save({"not": "tensors", "lr": 0.1}, model / "training_args.bin")
        torch.save(
            {"state": {0: {"exp_avg": torch.ones(2)}}, "param_groups": []}, model / "optimizer.pt"
        )
        torch.save({"python": 1}, model / "rng_state.pth")
        out = committed_as(root, model, tmp_path / "out")
        assert same_files(model, out)

    def test_the_legacy_torch_format_is_read_as_tensors(self, root: Path, tmp_path: Path) -> None:
        state = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
        (tmp_path / "m").mkdir()
        torch.save(
            state, tmp_path / "m" / "pytorch_model.bin", _use_new_zipfile_serialization=False
        )
        code, output = fm(root, "model", "commit", "m", str(tmp_path / "m"), "-m", "legacy")
        assert code == 0, output
        assert "1 tensors" in output
        fm(root, "model", "checkout", "m@main", "-o", str(tmp_path / "out"))
        back = torch.load(tmp_path / "out" / "pytorch_model.bin", weights_only=True)
        assert torch.equal(back["w"], state["w"])


class TestCheckoutTarget:
    @pytest.fixture
    def committed(self, root: Path, model: Path) -> Path:
        code, output = fm(root, "model", "commit", "m", str(model), "-m", "x")
        assert code == 0, output
        return root

    def test_an_existing_file_is_not_overwritten(self, committed: Path, tmp_path: Path) -> None:
        target = tmp_path / "passwd"
        target.write_text("root:x:0:0\n")
        line = cli_refused(committed, "model", "checkout", "m@main", "-o", str(target))
        assert "exists and is not a directory" in line
        assert target.read_text() == "root:x:0:0\n"

    def test_a_path_under_a_file_is_refused(self, committed: Path, tmp_path: Path) -> None:
        target = tmp_path / "passwd"
        target.write_text("root:x:0:0\n")
        cli_refused(
            committed, "model", "checkout", "m@main", "-o", str(target / "sub"),
            contains="cannot create the directory",
        )  # fmt: skip

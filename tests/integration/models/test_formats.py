"""Every dtype and odd tensor, PyTorch .bin files and lazy reading, through commit and checkout."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from fmforge.errors import InvalidModelSource
from fmforge.models import checkout, commit_model, load_state_dict, open_model
from fmforge.models.checkout import CommitReader
from fmforge.repository import Repository

DTYPES = [
    torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int8, torch.uint8,
    torch.int16, torch.int32, torch.int64, torch.bool, torch.float8_e4m3fn, torch.float8_e5m2,
]  # fmt: skip


def odd_tensors(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for dtype in DTYPES:
        name = str(dtype).removeprefix("torch.")
        if dtype == torch.bool:
            out[name] = torch.rand(33, 17, generator=g) > 0.5
        elif dtype.is_floating_point:
            out[name] = (torch.randn(33, 17, generator=g) * 0.05).to(dtype)
        else:
            info = torch.iinfo(dtype)
            out[name] = torch.randint(
                max(info.min, -1000), min(info.max, 1000), (33, 17), generator=g
            ).to(dtype)
    specials = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), float("nan"), 1e-45, -3.4e38])
    out["specials.f32"] = specials
    out["specials.bf16"] = specials.to(torch.bfloat16)
    out["specials.f16"] = specials.to(torch.float16)
    payload = torch.tensor([0x7FC00001, 0x7FC12345 - 2**31, 0x7F800001], dtype=torch.int32)
    payload = payload.view(torch.float32)
    out["nan_payloads"] = payload  # NaNs with payload bits: kept bit for bit, not canonicalised
    out["scalar"] = torch.tensor(3.25)
    out["empty"] = torch.zeros(0, 5)
    return out


def write(directory: Path, tensors: dict[str, torch.Tensor]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    return directory


def same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    def bits(t: torch.Tensor) -> bytes:
        return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""

    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and bits(a[k]) == bits(b[k])
        for k in a
    )


class TestDtypes:
    def test_every_dtype_and_odd_value_round_trips_through_deltas(
        self, repo: Repository, tmp_path: Path
    ) -> None:
        first, second = odd_tensors(0), odd_tensors(0)
        for name, tensor in second.items():  # a small change to every tensor that has entries
            if tensor.numel() >= 6 and tensor.dtype != torch.bool:
                second[name] = tensor.clone()
                second[name].view(-1)[0:3] = tensor.view(-1)[3:6]
        v1, v2 = write(tmp_path / "v1", first), write(tmp_path / "v2", second)
        commit_model(repo, "odd", v1, "one")
        result = commit_model(repo, "odd", v2, "two")
        assert result.deltas > 0
        for ref, source in (("main~1", v1), ("main", v2)):
            out = tmp_path / f"out-{ref}"
            checkout(repo, f"odd@{ref}", out)
            assert (out / "model.safetensors").read_bytes() == (
                source / "model.safetensors"
            ).read_bytes()

    def test_a_large_tensor_keeps_memory_bounded(self, repo: Repository, tmp_path: Path) -> None:
        big = torch.randn(4096, 4096)  # 64 MiB
        source = write(tmp_path / "big", {"w": big, "b": torch.zeros(4096)})
        moved = write(tmp_path / "big2", {"w": big * 1.001, "b": torch.zeros(4096)})
        commit_model(repo, "big", source, "one")
        del big
        tracemalloc.start()
        commit_model(repo, "big", moved, "two")
        checkout(repo, "big@main", tmp_path / "out")
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < 3 * 64 * 2**20 + 64 * 2**20, peak / 2**20
        assert (tmp_path / "out" / "model.safetensors").read_bytes() == (
            moved / "model.safetensors"
        ).read_bytes()


class TestTorchFiles:
    def test_a_bin_state_dict_is_stored_tensor_by_tensor(
        self, repo: Repository, tmp_path: Path
    ) -> None:
        state = {k: v for k, v in odd_tensors(1).items() if k != "nan_payloads"}
        (tmp_path / "m").mkdir()
        torch.save(state, tmp_path / "m" / "pytorch_model.bin")
        torch.save({"not": "tensors", "lr": 0.1}, tmp_path / "m" / "training_args.bin")
        result = commit_model(repo, "bin", tmp_path / "m", "from torch.save")
        assert result.tensors == len(state)
        checkout(repo, "bin", tmp_path / "out")
        back = torch.load(tmp_path / "out" / "pytorch_model.bin", weights_only=True)
        assert same_tensors(state, back)
        # a pickle that is not a state dict is kept as an opaque file, byte for byte
        assert (tmp_path / "out" / "training_args.bin").read_bytes() == (
            tmp_path / "m" / "training_args.bin"
        ).read_bytes()
        kinds = {f["path"]: f["kind"] for f in CommitReader(repo, "bin").manifest["files"]}
        assert kinds == {"pytorch_model.bin": "torch", "training_args.bin": "blob"}

    def test_a_malicious_pickle_is_never_executed(
        self, repo: Repository, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        import pickle

        class Boom:
            def __reduce__(self) -> tuple[object, tuple[str]]:
                return (print, ("executed!",))

        (tmp_path / "m").mkdir()
        (tmp_path / "m" / "pytorch_model.bin").write_bytes(pickle.dumps({"w": Boom()}))
        with pytest.raises(InvalidModelSource, match="not a plain state dict"):
            commit_model(repo, "evil", tmp_path / "m", "a pickle with code in it")
        assert "executed!" not in capsys.readouterr().out


class TestLazyReading:
    def test_load_state_dict_reads_only_what_is_asked(
        self, repo: Repository, tmp_path: Path
    ) -> None:
        tensors = odd_tensors(2)
        commit_model(repo, "odd", write(tmp_path / "v", tensors), "one")
        state = load_state_dict("odd@main", repo=repo)
        assert set(state) == set(tensors)
        assert same_tensors({"bfloat16": tensors["bfloat16"]}, {"bfloat16": state["bfloat16"]})
        only = load_state_dict("odd", repo=repo, tensors="specials.*", framework="numpy")
        assert sorted(only) == ["specials.bf16", "specials.f16", "specials.f32"]
        assert only["specials.f32"].tobytes() == tensors["specials.f32"].numpy().tobytes()
        with pytest.raises(KeyError, match="has no tensor 'nope'"):
            state["nope"]

    def test_open_model_checks_out_once(self, repo: Repository, tmp_path: Path) -> None:
        commit_model(repo, "odd", write(tmp_path / "v", odd_tensors(3)), "one")
        path = open_model("odd@main", repo=repo)
        assert (path / "model.safetensors").read_bytes() == (
            tmp_path / "v" / "model.safetensors"
        ).read_bytes()
        mtime = (path / "model.safetensors").stat().st_mtime_ns
        assert open_model("odd", repo=repo) == path
        assert (path / "model.safetensors").stat().st_mtime_ns == mtime


class TestShards:
    def test_a_sharded_model_with_its_index_round_trips(
        self, repo: Repository, tmp_path: Path
    ) -> None:
        import json

        tensors = odd_tensors(4)
        names = sorted(tensors)
        shards = {
            "model-00001-of-00002.safetensors": names[::2],
            "model-00002-of-00002.safetensors": names[1::2],
        }
        source = tmp_path / "sharded"
        source.mkdir()
        for shard, members in shards.items():
            save_file({n: tensors[n] for n in members}, str(source / shard))
        index = {"weight_map": {n: s for s, members in shards.items() for n in members}}
        (source / "model.safetensors.index.json").write_text(json.dumps(index))
        first = commit_model(repo, "sharded", source, "two shards")
        assert first.tensors == len(tensors)
        # a tensor moving to the other shard is still stored as a delta on its old self
        moved = dict(tensors)
        moved["float32"] = tensors["float32"] * 1.001
        (source / "model-00001-of-00002.safetensors").unlink()
        (source / "model-00002-of-00002.safetensors").unlink()
        save_file(moved, str(source / "model-00001-of-00002.safetensors"))
        save_file({"extra": torch.ones(3)}, str(source / "model-00002-of-00002.safetensors"))
        second = commit_model(repo, "sharded", source, "resharded")
        assert second.kinds.get("raw", 0) == 1  # only the new 'extra' tensor is stored in full
        out = tmp_path / "out"
        checkout(repo, "sharded", out)
        for path in source.iterdir():
            assert (out / path.name).read_bytes() == path.read_bytes()


def test_load_state_dict_finds_the_repository_like_the_cli(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit_model(repo, "odd", write(tmp_path / "v", odd_tensors(5)), "one")
    monkeypatch.chdir(repo.root)
    with load_state_dict("odd@main", tensors="float32") as state:
        assert list(state) == ["float32"]
        assert torch.equal(state["float32"], odd_tensors(5)["float32"])

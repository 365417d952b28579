"""Merges of real finetunes scored on their tasks: ``fmforge model merge --auto`` (λ and density
chosen on the inputs' dev splits), a rebased adapter re-evaluated on its new base, and an
evaluation reading the label column the finetune trained on."""

from __future__ import annotations

import json

import pytest

from fmforge.data import add_dataset, read_table
from fmforge.merging.tasks import Task, TaskScorer, evaluate_merge, tasks_of
from fmforge.models import CommitReader, load_state_dict
from fmforge.models.tensorcommit import KnownTensor, commit_tensors
from fmforge.repository import Repository
from fmforge.training import FinetuneSpec, evaluate, finetune
from tests.clirunner import fm

pytest.importorskip("peft")


def _lora(repo: Repository, output: str, **changes: object) -> str:
    values = {"base": "tiny", "data": "spam", "eval_split": "valid", "batch_size": 8,
              "epochs": 2, "threads": 1, "output": output, **changes}  # fmt: skip
    result = finetune(repo, FinetuneSpec.parse(values))
    assert result.commit is not None
    return result.commit_ref


def test_merge_auto_chooses_on_the_dev_splits_and_reports_the_shares(spam_repo: Repository) -> None:
    repo = spam_repo
    soft = _lora(repo, "tiny-soft@main")
    gold = _lora(repo, "tiny-gold@main", soft_labels=False, seed=1)
    code, out = fm(repo.path.parent, "model", "merge", "--method", "ties", "tiny-soft@main",
                   "tiny-gold@main", "--auto", "--lambdas", "0.5,1", "--densities", "0.3,0.7",
                   "--output", "tiny", "--json")  # fmt: skip
    assert code == 0, out
    record = json.loads(out)
    auto = record["provenance"]["auto"]
    assert [(t["lambda"], t["density"]) for t in auto["trials"]] == [
        (0.5, 0.3), (0.5, 0.7), (1.0, 0.3), (1.0, 0.7)
    ]  # fmt: skip
    best = max(auto["trials"], key=lambda t: t["objective"])
    assert (auto["lambda"], auto["density"]) == (best["lambda"], best["density"])
    assert record["provenance"]["spec"]["lambda"] == auto["lambda"]
    tasks = tasks_of(repo, _spec(record))
    assert [(t.data, t.split) for t in tasks] == [("spam@v2", "valid")] * 2
    # the committed merge scores what the search scored for it
    scores = evaluate_merge(repo, f"tiny@{record['commit']}", tasks)
    assert scores == pytest.approx(auto["scores"])
    for name in auto["scores"]:
        gain = auto["single"][name] - auto["floor"][name]
        kept = (auto["scores"][name] - auto["floor"][name]) / gain if gain else 1.0
        assert auto["gain_kept"][name] == pytest.approx(kept)
        assert auto["normalized"][name] == pytest.approx(
            auto["scores"][name] / auto["single"][name]
        )
    assert {soft.split("@")[1], gold.split("@")[1]} <= set(record["parents"])

    code, out = fm(repo.path.parent, "model", "merge", "--method", "task_arithmetic",
                   "tiny-soft@main", "tiny-gold@main", "--auto", "--lambdas", "1",
                   "--output", "tiny")  # fmt: skip
    assert code == 0, out
    assert "--auto: lambda 1 chosen of 1 candidates" in out
    assert "tiny-soft@main  accuracy" in out
    assert "on spam@v2:valid" in out


def _spec(record: dict[str, object]) -> object:
    from fmforge.merging import MergeSpec

    provenance = record["provenance"]
    assert isinstance(provenance, dict)
    return MergeSpec.model_validate(provenance["spec"])


def test_a_rebased_adapter_is_reevaluated_on_its_new_base(spam_repo: Repository) -> None:
    repo = spam_repo
    adapter = _lora(repo, "tiny-ft@main", test_split="test")
    base = CommitReader(repo, "tiny@main")
    name = "embeddings.LayerNorm.weight"
    with load_state_dict("tiny@main", repo=repo, tensors=name) as state:
        changed = state[name].clone() * 1.5
    files = {e["path"]: repo.objects.get(e["object"])
             for e in base.manifest["files"] if e["kind"] == "blob"}  # fmt: skip
    commit_tensors(
        repo, "tiny", ((n, changed if n == name else KnownTensor(raw))
                       for n, raw, _ in base.tensors()),
        message="fix", branch="fix", files=files,
    )  # fmt: skip
    from fmforge.merging.rebase import rebase

    result = rebase(repo, "tiny-ft@main", "tiny@fix", branch="rebased")
    assert result.not_evaluated is None
    assert sorted(e["split"] for e in result.evaluations) == ["test", "valid"]
    task_file = CommitReader(repo, result.target).manifest["files"]
    (entry,) = [e for e in task_file if e["path"] == "fmforge_task.json"]
    assert json.loads(repo.objects.get(entry["object"]))["base"] == result.new_base
    assert adapter != result.target


def test_eval_reads_the_label_column_the_finetune_trained_on(spam_repo: Repository) -> None:
    repo = spam_repo
    rows = read_table(repo, "spam@v1").to_pylist()
    source = repo.path.parent / "kinds.jsonl"
    source.write_text("".join(
        json.dumps({"text": r["text"], "split": r["split"], "kind": ["ham", "spam"][r["label"]],
                    "label": 1 - r["label"]}) + "\n" for r in rows
    ))  # fmt: skip
    add_dataset(repo, "kinds", source)
    ref = _lora(repo, "tiny-kinds@main", data="kinds", label_column="kind", soft_labels=False)
    evaluation = evaluate(repo, ref, "kinds", split="valid", record=False)
    recorded = evaluate(repo, ref, "kinds", split="valid", label_column="kind", record=False)
    assert evaluation.metrics == recorded.metrics
    inverted = evaluate(repo, ref, "kinds", split="valid", label_column="label", record=False)
    assert inverted.metrics["accuracy"] == pytest.approx(1 - recorded.metrics["accuracy"])
    scored = TaskScorer(repo, [Task("kinds", ref, "kinds", "valid")]).single()
    assert scored == {"kinds": pytest.approx(recorded.metrics["accuracy"])}

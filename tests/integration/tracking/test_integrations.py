"""A real transformers Trainer recorded through FmforgeCallback, and the plain-loop example."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest
import torch

from fmforge.models import ModelRefs
from fmforge.repository import Repository
from fmforge.tracking import load_run
from fmforge.tracking.views import RunsView

transformers = pytest.importorskip("transformers")


class Tiny(torch.utils.data.Dataset):  # type: ignore[type-arg]
    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(5, 100, (32, 8), generator=g)
        self.labels = (self.ids[:, 0] > 50).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def test_trainer_callback_records_the_run_and_its_checkpoints(
    repo: Repository, tmp_path: Path
) -> None:
    from fmforge.tracking.integrations.transformers import FmforgeCallback

    config = transformers.BertConfig(
        vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, num_labels=2,
    )  # fmt: skip
    model = transformers.BertForSequenceClassification(config)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=4, logging_steps=1, save_steps=2,
        per_device_train_batch_size=8, report_to=[], use_cpu=True, save_safetensors=True,
        eval_strategy="steps", eval_steps=2,
    )  # fmt: skip
    callback = FmforgeCallback("tiny-bert", repo=repo, log_checkpoints=True, model="tiny-bert")
    trainer = transformers.Trainer(
        model=model, args=args, train_dataset=Tiny(), eval_dataset=Tiny(), callbacks=[callback]
    )
    trainer.train()
    (row,) = repo.view(RunsView).rows()
    record = load_run(repo, row["id"])
    assert record.status == "finished"
    assert record.config["max_steps"] == 4
    assert record.summary["loss"]["count"] == 4
    assert {e["step"] for e in record.evals} == {2, 4}
    assert [c["step"] for c in record.checkpoints] == [2, 4]
    branch = repo.view(ModelRefs).branches("tiny-bert")[f"runs/{record.id}"]
    assert branch == record.checkpoints[-1]["commit"]


def test_the_plain_loop_example_runs(repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    example = Path(__file__).resolve().parents[3] / "examples" / "plain_loop.py"
    monkeypatch.chdir(repo.root)
    runpy.run_path(str(example), run_name="__main__")
    (row,) = repo.view(RunsView).rows()
    assert row["status"] == "finished"
    assert row["metrics"]["loss"]["last"] < row["metrics"]["loss"]["max"]

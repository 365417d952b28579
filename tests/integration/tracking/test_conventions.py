"""What a Hugging Face or Lightning user expects in the first hour (issue 16, section 2): one
short import, the run named and described as the Trainer knows it, a final evaluation in the
same run and queryable, weights-only checkpoints; Lightning's ``version`` and ``fit`` then
``validate``; W&B's one-liner; ``runs_frame``; ids that paste."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.clirunner import fm

from fmforge.models import ModelRefs
from fmforge.models.checkout import CommitReader
from fmforge.repository import Repository
from fmforge.tracking import load_run, runs_frame, start_run
from fmforge.tracking.views import RunsView

transformers = pytest.importorskip("transformers")
lightning = pytest.importorskip("lightning")


class Tiny(torch.utils.data.Dataset):  # type: ignore[type-arg]
    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(5, 100, (32, 8), generator=g)
        self.labels = (self.ids[:, 0] > 50).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def accuracy(prediction: object) -> dict[str, float]:
    logits, labels = prediction.predictions, prediction.label_ids  # type: ignore[attr-defined]
    return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean())}


def train_tiny_bert(repo: Repository, tmp_path: Path, **callback_options: object) -> str:
    from fmforge.integrations import FmforgeCallback

    config = transformers.BertConfig(
        vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, num_labels=2, id2label={0: "ham", 1: "spam"},
        label2id={"ham": 0, "spam": 1},
    )  # fmt: skip
    torch.manual_seed(0)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), run_name="tiny-bert-lr3", max_steps=4, logging_steps=1,
        save_steps=2, per_device_train_batch_size=8, report_to=[], use_cpu=True,
        eval_strategy="steps", eval_steps=2, learning_rate=3e-4,
    )  # fmt: skip
    callback = FmforgeCallback("tiny", repo=repo, log_checkpoints=True, model="tiny-bert",
                               system_interval=None, **callback_options)  # fmt: skip
    trainer = transformers.Trainer(
        model=transformers.BertForSequenceClassification(config), args=args,
        train_dataset=Tiny(), eval_dataset=Tiny(), callbacks=[callback],
        compute_metrics=accuracy,
    )  # fmt: skip
    trainer.train()
    trainer.evaluate()  # after train(): the same run
    (row,) = repo.view(RunsView).rows()
    return str(row["id"])


def checkpoint_files(repo: Repository, commit: str) -> list[str]:
    return sorted(f["path"] for f in CommitReader(repo, f"tiny-bert@{commit}").manifest["files"])


def test_a_hugging_face_trainer_run_as_its_user_expects(repo: Repository, tmp_path: Path) -> None:
    run_id = train_tiny_bert(repo, tmp_path)
    record = load_run(repo, run_id)
    assert record.name == "tiny-bert-lr3"  # TrainingArguments.run_name
    assert record.status == "finished"
    model = record.config["model"]
    assert model["architectures"] == ["BertForSequenceClassification"]
    assert model["num_labels"] == 2
    assert model["id2label"] == {"0": "ham", "1": "spam"}
    # Two evaluations during training and the final one, in the same run.
    assert [e["step"] for e in record.evals] == [2, 4, 4]
    assert record.summary["eval_accuracy"]["count"] == 3
    types = [e.type for e in repo.ledger.read_stream("run/" + run_id)]
    assert (types.count("RunResumed"), types.count("RunFinished"), types[-1]) == (
        1, 2, "RunFinished"), types  # fmt: skip
    # Evaluations are metrics: the query finds them, show and report print them.
    code, out = fm(repo.root, "runs", "ls", "metrics.eval_accuracy.max >= 0", "--json")
    assert [json.loads(line)["id"] for line in out.splitlines()] == [run_id], out
    code, out = fm(repo.root, "runs", "show", run_id)
    assert code == 0, out
    assert "evaluation step" in out
    assert "eval_accuracy=" in out
    code, out = fm(repo.root, "runs", "report", run_id, "-o", str(tmp_path / "r.html"))
    assert "eval_accuracy=" in (tmp_path / "r.html").read_text()
    # Checkpoints hold the weights and config, not the optimizer, scheduler and RNG state.
    files = checkpoint_files(repo, record.checkpoints[-1]["commit"])
    assert "model.safetensors" in files
    assert "config.json" in files
    assert not any(f.startswith(("optimizer", "scheduler", "rng_state")) for f in files), files
    saved = sorted(p.name for p in (tmp_path / "out" / "checkpoint-4").iterdir())
    assert "optimizer.pt" in saved  # the Trainer's own folder is untouched


def test_the_optimizer_state_is_kept_on_request(repo: Repository, tmp_path: Path) -> None:
    run_id = train_tiny_bert(repo, tmp_path, keep_optimizer_state=True)
    commit = load_run(repo, run_id).checkpoints[-1]["commit"]
    assert "optimizer.pt" in checkpoint_files(repo, commit)
    assert repo.view(ModelRefs).branches("tiny-bert")[f"runs/{run_id}"] == commit


class Regression(lightning.LightningModule):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(4, 1)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], index: int) -> torch.Tensor:
        loss = torch.nn.functional.mse_loss(self.net(batch[0]), batch[1])
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], index: int) -> None:
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(batch[0]), batch[1]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)


def loader() -> torch.utils.data.DataLoader:  # type: ignore[type-arg]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=g)
    return torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, x.sum(dim=1, keepdim=True)), batch_size=8
    )


@pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")
def test_lightning_version_starts_nothing_and_fit_then_validate_is_one_run(
    repo: Repository, tmp_path: Path
) -> None:
    from fmforge.integrations import FmforgeLogger

    logger = FmforgeLogger("regression", repo=repo, system_interval=None)
    version = logger.version
    assert repo.view(RunsView).rows() == []  # reading the version started no run
    trainer = lightning.Trainer(
        max_epochs=2, logger=logger, log_every_n_steps=1, accelerator="cpu", devices=1,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        default_root_dir=tmp_path,
    )  # fmt: skip
    model = Regression()
    trainer.fit(model, loader(), loader())
    trainer.validate(model, loader())
    (row,) = repo.view(RunsView).rows()
    assert row["id"] == version
    record = load_run(repo, version)
    assert record.status == "finished"
    assert record.summary["train_loss"]["count"] == 2 * 4
    assert record.summary["val_loss"]["count"] == 3  # two epochs, then validate


_ONE_LINER = textwrap.dedent(
    """
    import fmforge
    run = fmforge.init(project="quick", config={"lr": 0.1, "layers": 2})
    for step in range(10):
        fmforge.log({"loss": 1.0 / (step + 1)}, step=step)
    fmforge.finish()
    print(run.id)
    """
)


def test_the_one_liner_works_outside_a_repository(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "FMFORGE_STORE"}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    done = subprocess.run(
        [sys.executable, "-c", _ONE_LINER], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / ".fmforge").is_dir()  # created where MLflow would create ./mlruns
    with Repository.open(tmp_path) as repo:
        record = load_run(repo, done.stdout.strip())
        assert record.status == "finished"
        assert record.config == {"lr": 0.1, "layers": 2}
        assert record.summary["loss"]["last"] == 0.1


def test_start_run_is_a_plain_object_and_runs_frame_a_data_frame(repo: Repository) -> None:
    run = start_run("plain", repo=repo, config={"lr": "0.01"}, system_interval=None)
    run.log({"loss": 0.5}, step=0)
    run.set_tags({"team": "nlp"})
    run.finish()
    run.finish()  # a second finish does nothing
    with start_run("plain", repo=repo, config={"lr": 0.5}, system_interval=None) as other:
        other.log({"loss": 0.25}, step=0)
    assert load_run(repo, run.id).status == "finished"
    frame = runs_frame("config.lr < 0.1", repo=repo)  # "0.01", an MLflow-style string param
    assert list(frame["run_id"]) == [run.id]
    assert frame["metrics.loss"].iloc[0] == 0.5
    assert frame["tags.team"].iloc[0] == "nlp"
    assert str(frame["start_time"].dtype).startswith("datetime64")


def test_the_id_runs_ls_prints_pastes_into_show_and_compare(repo: Repository) -> None:
    ids = []
    for name in ("a", "b"):
        with start_run("paste", repo=repo, name=name, system_interval=None) as run:
            run.log({"loss": 1.0}, step=0)
        ids.append(run.id)
    code, out = fm(repo.root, "runs", "ls")
    assert code == 0
    printed = [line.split("│")[1].strip() for line in out.splitlines() if "paste" in line]
    assert sorted(printed) == sorted(i[-12:] for i in ids), out
    code, out = fm(repo.root, "runs", "show", printed[0])  # pasted as printed
    assert code == 0, out
    assert "paste" in out
    code, out = fm(repo.root, "runs", "compare", *printed)
    assert code == 0, out


@pytest.mark.slow
def test_a_peft_adapter_from_the_registry_loads_offline(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    peft = pytest.importorskip("peft")
    from fmforge.models import commit_model, open_model

    config = transformers.BertConfig(
        vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, num_labels=2,
    )  # fmt: skip
    torch.manual_seed(0)
    base = transformers.BertForSequenceClassification(config)
    base.save_pretrained(tmp_path / "base")
    commit_model(repo, "tiny-base", tmp_path / "base", "base")
    lora = peft.get_peft_model(
        base, peft.LoraConfig(r=2, target_modules=["query", "value"], task_type="SEQ_CLS")
    )
    lora.save_pretrained(tmp_path / "adapter")
    adapter_config = tmp_path / "adapter" / "adapter_config.json"
    values = json.loads(adapter_config.read_text())
    values["base_model_name_or_path"] = "some-org/unreachable-base"  # a hub id, offline here
    adapter_config.write_text(json.dumps(values))
    commit_model(repo, "tiny-lora", tmp_path / "adapter", "rank 2", base="tiny-base@main")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    checkout = open_model("tiny-lora@main", repo=repo)
    loaded = peft.AutoPeftModelForSequenceClassification.from_pretrained(checkout)
    ids = torch.randint(5, 100, (2, 8), generator=torch.Generator().manual_seed(1))
    lora.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, lora(input_ids=ids).logits)
    named = json.loads((checkout / "adapter_config.json").read_text())
    assert named["base_model_name_or_path"] == str(open_model("tiny-base@main", repo=repo))

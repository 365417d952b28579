"""A real PyTorch Lightning Trainer recorded through FmforgeLogger."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fmforge.models import load_state_dict
from fmforge.repository import Repository
from fmforge.tracking import load_run

lightning = pytest.importorskip("lightning")


class Regression(lightning.LightningModule):  # type: ignore[misc]
    def __init__(self, lr: float = 0.05, hidden: int = 8) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(4, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1)
        )

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], index: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], index: int) -> None:
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def loader() -> torch.utils.data.DataLoader:  # type: ignore[type-arg]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    y = x.sum(dim=1, keepdim=True)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)


# Lightning 2.6 with torch 2.13: a deprecation inside Lightning, not in what is tested here.
@pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")
def test_lightning_logger_records_params_metrics_and_checkpoints(
    repo: Repository, tmp_path: Path
) -> None:
    from lightning.pytorch.callbacks import ModelCheckpoint

    from fmforge.tracking.integrations.lightning import FmforgeLogger

    torch.manual_seed(0)
    logger = FmforgeLogger("regression", repo=repo, log_model=True, name="pl", system_interval=None)
    model = Regression(lr=0.05)
    trainer = lightning.Trainer(
        max_epochs=3, logger=logger, log_every_n_steps=1, accelerator="cpu", devices=1,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
        callbacks=[ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)],
    )  # fmt: skip
    trainer.fit(model, loader(), loader())
    assert logger._run is None  # finalize ended the run

    (record,) = [load_run(repo, r) for r in _run_ids(repo)]
    assert record.status == "finished"
    assert record.name == "pl"
    assert record.config["lr"] == 0.05
    assert record.config["hidden"] == 8
    assert record.summary["train_loss"]["count"] == 3 * 8  # every step of 3 epochs x 8 batches
    assert record.summary["val_loss"]["count"] == 3
    assert record.summary["train_loss"]["last"] < record.summary["train_loss"]["max"]
    assert len(record.checkpoints) == 3  # one per epoch
    last = record.checkpoints[-1]
    assert last["step"] == 24
    with load_state_dict(f"{last['model']}@{last['commit']}", repo=repo) as stored:
        for name, tensor in model.state_dict().items():
            assert torch.equal(stored[name], tensor), name


def _run_ids(repo: Repository) -> list[str]:
    from fmforge.tracking.views import RunsView

    return [row["id"] for row in repo.view(RunsView).rows()]

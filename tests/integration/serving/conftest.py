"""A tiny Llama with three LoRA adapters (made once per session), committed to each test's
repository; MiniLM classification adapters for the encoder tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from fmforge.models import commit_model
from fmforge.repository import Repository
from fmforge.serving.deployment import Deployment, ServingConfig
from tests.servingfiles import write_classifier, write_lora, write_tiny_llama


@dataclass(frozen=True)
class TinyFiles:
    base: Path
    adapters: tuple[Path, ...]


@pytest.fixture(scope="session")
def tiny_files(tmp_path_factory: pytest.TempPathFactory) -> TinyFiles:
    root = tmp_path_factory.mktemp("tiny")
    torch.set_num_threads(1)
    base = write_tiny_llama(root / "base")
    adapters = tuple(write_lora(base, root / f"lora{i}", seed=i + 1) for i in range(3))
    return TinyFiles(base, adapters)


@pytest.fixture
def tiny_repo(repo: Repository, tiny_files: TinyFiles) -> Repository:
    """``tiny`` (the base) and adapters ``ad0``..``ad2`` of it, each on ``main``."""
    commit_model(repo, "tiny", tiny_files.base, "base")
    for i, path in enumerate(tiny_files.adapters):
        commit_model(repo, f"ad{i}", path, f"adapter {i}", base="tiny@main")
    return repo


@pytest.fixture
def tiny_deployment(tiny_repo: Repository) -> Iterator[Deployment]:
    deployment = Deployment(
        tiny_repo.root, "tiny@main", ["ad0@main"], ServingConfig(dtype="float64", flush_s=0.2)
    )
    deployment.start()
    try:
        yield deployment
    finally:
        deployment.stop()


@pytest.fixture(scope="session")
def classifier_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ...]:
    root = tmp_path_factory.mktemp("classifiers")
    return (
        write_classifier(root / "sentiment", seed=1),
        write_classifier(
            root / "topic", seed=2, labels=("sport", "tech", "art", "food"), pooler=True
        ),  # its own pooler, as fmforge.training retrains it
    )

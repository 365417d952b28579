"""Tiny models built once per session, and a fresh repository with them and the comments."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fmforge.repository import Repository

pytest.importorskip("transformers")
pytest.importorskip("peft")

from tests.training_inputs import spam_repository, tiny_bert, tiny_llama


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny-models")
    return tiny_bert(root / "bert"), tiny_llama(root / "llama")


@pytest.fixture
def spam_repo(tmp_path: Path, tiny_models: tuple[Path, Path]) -> Iterator[Repository]:
    """Model ``tiny`` (BERT), ``tiny-lm`` (Llama) and dataset ``spam`` (v2 weakly labelled)."""
    with spam_repository(tmp_path / "repo", *tiny_models) as repo:
        yield repo

"""Where a classification adapter's label names come from: its ``config.json``, else the class
names ``fmforge.training`` records in ``fmforge_task.json``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from fmforge.models import commit_model
from fmforge.repository import Repository
from fmforge.serving.adapters import describe
from tests.servingfiles import minilm_path


def test_label_names_come_from_config_json_else_fmforge_task_json(
    repo: Repository, classifier_files: tuple[Path, ...], tmp_path: Path
) -> None:
    commit_model(repo, "minilm", minilm_path(), "base")
    sentiment = classifier_files[0]
    shutil.copytree(sentiment, tmp_path / "trained")
    (tmp_path / "trained" / "config.json").unlink()
    task = {"task": "classification", "classes": ["bad", "meh", "good"]}
    (tmp_path / "trained" / "fmforge_task.json").write_text(json.dumps(task))
    bare = tmp_path / "bare"
    shutil.copytree(tmp_path / "trained", bare)
    (bare / "fmforge_task.json").unlink()
    expected = {
        "sentiment": {"0": "neg", "1": "neu", "2": "pos"},
        "trained": {"0": "bad", "1": "meh", "2": "good"},
        "bare": None,
    }
    for name, path in (("sentiment", sentiment), ("trained", tmp_path / "trained"),
                       ("bare", bare)):  # fmt: skip
        commit = commit_model(repo, name, path, "classifier", base="minilm@main").commit
        assert describe(repo, name, commit).config.get("id2label") == expected[name]

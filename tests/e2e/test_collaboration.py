"""Issue 13's collaboration story, end to end on a tiny random BERT: two clones of one
repository each finetune the base on their own data (one with FishMask, one with LoRA) and
push; a third pulls both, merges them with a conflict report, scores the merge on both tasks
(on test rows of its own: it holds no dataset), and rebases the merge onto an updated base. No
raw data leaves its clone."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from fmforge.data import add_dataset
from fmforge.data.labeling.functions import apply_lfs, load_lfs
from fmforge.data.labeling.workflow import label_version
from fmforge.data.views import DatasetsView
from fmforge.models import ModelRefs, commit_model, load_state_dict
from fmforge.remotes.sync import clone, pull, push
from fmforge.repository import Repository

pytest.importorskip("transformers")
pytest.importorskip("peft")

from fmforge.merging import MergeSpec, merge, merged_tensors
from fmforge.merging.rebase import rebase
from fmforge.merging.tasks import Task, TaskScorer, evaluate_merge
from fmforge.training import FinetuneSpec, finetune
from fmforge.training.data import Rows
from tests.training_inputs import DEMO, comments, tiny_bert

MUSIC = re.compile(r"song|music|love|voice|listen|beat|dance|best|lyrics", re.I)


def _music(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """Bob's task on other comments: does the comment talk about the music?"""
    return [{**r, "label": int(bool(MUSIC.search(str(r["text"]))))} for r in rows]


def _add(repo: Repository, name: str, rows: list[dict[str, object]], tmp: Path) -> None:
    source = tmp / f"{name}.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    add_dataset(repo, name, source)
    source.unlink()


def _test_rows(rows: list[dict[str, object]]) -> Rows:
    """Carol's own held-out rows: never a dataset in her repository."""
    tests = [r for r in rows if r["split"] == "test"]
    return Rows(
        "test", tuple(str(i) for i in range(len(tests))), tuple(str(r["text"]) for r in tests),
        gold=np.array([int(str(r["label"])) for r in tests], dtype=np.int64),
    )  # fmt: skip


def _objects(repo: Repository) -> set[str]:
    return {info.digest for info in repo.objects.iter_objects()}


def _dataset_objects(repo: Repository) -> set[str]:
    return {
        ref
        for event in repo.ledger.read_all()
        if event.stream.startswith("dataset/")
        for ref in event.refs
    }


def test_two_contributions_merged_scored_and_rebased_without_moving_data(
    tmp_path: Path,
) -> None:
    hub_path = tmp_path / "hub"
    hub_path.mkdir()
    with Repository.init(hub_path) as hub:
        commit_model(hub, "tiny", tiny_bert(tmp_path / "bert"), "a tiny BERT from a config")
        old_base = hub.view(ModelRefs).resolve("tiny", "main")

    # Alice: YouTube spam, labelled by the label model, FishMask on 5% of the body.
    clone(str(hub_path), tmp_path / "alice")
    with Repository.open(tmp_path / "alice") as alice:
        _add(alice, "spam", comments(), tmp_path)
        label_version(alice, apply_lfs(alice, "spam", load_lfs(DEMO / "spam_lfs.yaml"), workers=1))
        spam = finetune(alice, FinetuneSpec.parse({
            "base": "tiny@main", "data": "spam", "method": "sparse", "keep": "5%",
            "eval_split": "valid", "test_split": "test", "epochs": 2, "batch_size": 8,
            "threads": 1, "output": "tiny@alice/spam",
        }))  # fmt: skip
        push(alice, "origin", "tiny", branch="alice/spam")
        alice_data = _dataset_objects(alice)
        assert alice_data

    # Bob: another task on other comments, gold labels, LoRA.
    bob_rows = _music(comments(train=48, valid=8, test=16))
    clone(str(hub_path), tmp_path / "bob")
    with Repository.open(tmp_path / "bob") as bob:
        _add(bob, "music", bob_rows, tmp_path)
        music = finetune(bob, FinetuneSpec.parse({
            "base": "tiny@main", "data": "music", "method": "lora", "eval_split": "valid",
            "test_split": "test", "epochs": 2, "batch_size": 8, "threads": 1,
            "output": "tiny-music@main",
        }))  # fmt: skip
        assert music.adapter
        push(bob, "origin", "tiny-music")
        bob_data = _dataset_objects(bob)

    # Carol pulls both contributions and merges them with TIES.
    clone(str(hub_path), tmp_path / "carol")
    carol = Repository.open(tmp_path / "carol")
    try:
        index = carol.view(ModelRefs)
        assert index.resolve("tiny", "alice/spam") == spam.commit
        assert index.resolve("tiny-music", "main") == music.commit
        spec = MergeSpec.build(
            "ties", ["tiny@alice/spam", "tiny-music@main"], base=f"tiny@{old_base}",
            density=0.5,
        )  # fmt: skip
        merged = merge(carol, spec)
        assert merged.commit.branch == "merge/ties"
        assert set(merged.commit.parents) == {old_base, spam.commit, music.commit}
        summary = merged.report["summary"]
        assert summary["changed"] > 0
        assert 0 <= summary["sign_conflict"] <= 1
        both = [t for t in merged.report["tensors"] if len(t["norms"]) == 2 and all(t["norms"])]
        assert both, "the two contributions change some tensors in common"
        # each input's task head stays its own: Alice's classifier, Bob's saved module
        heads = [n for n in merged.not_merged if "classifier" in n]
        assert "classifier.weight" in heads
        assert any(n.startswith("base_model.") for n in heads)

        tasks = [Task("spam", f"tiny@{spam.commit}", None), Task("music", music.commit_ref, None)]
        rows = {"spam": _test_rows(comments()), "music": _test_rows(bob_rows)}
        scores = evaluate_merge(carol, merged.target, tasks, rows)
        assert set(scores) == {"spam", "music"}
        assert all(0.0 <= v <= 1.0 for v in scores.values())

        # the plumbing: one input merged alone with weight 1 is that finetune, head and all
        scorer = TaskScorer(carol, tasks, rows)
        single = scorer.single()
        alone = MergeSpec.build("task_arithmetic", ["tiny@alice/spam"], base=f"tiny@{old_base}")
        assert scorer.score(merged_tensors(carol, alone))["spam"] == single["spam"]
        with load_state_dict(merged.target, repo=carol) as state:
            name = "encoder.layer.0.attention.self.query.weight"
            scorer.score({n: state[n] for n in state})
            spam_model = scorer.loaded[0][0]  # the merged body now sits under Alice's head
            body = spam_model.state_dict()["bert." + name]
            assert torch.equal(body, state[name].to(body.dtype))

        # The base gets a fix upstream; Carol pulls it and rebases the merge onto it.
        with Repository.open(hub_path) as hub, load_state_dict("tiny@main", repo=hub) as state:
            fixed = tmp_path / "fixed"
            tiny_bert(fixed)
            tensors = {name: state[name].clone() for name in state}
            tensors["embeddings.LayerNorm.weight"] += 0.01
            save_file(tensors, str(fixed / "model.safetensors"), metadata={"format": "pt"})
            commit_model(hub, "tiny", fixed, "fix: the embeddings' LayerNorm")
        pull(carol, "origin", "tiny")
        new_base = carol.view(ModelRefs).resolve("tiny", "main")
        assert new_base != old_base
        rebased = rebase(carol, "tiny@merge/ties", "tiny@main")
        assert list(rebased.commit.parents) == [merged.commit.commit, new_base]
        assert rebased.old_base == f"tiny@{old_base}"
        with (
            load_state_dict(rebased.target, repo=carol) as after,
            load_state_dict(merged.target, repo=carol) as before,
        ):
            delta = after["embeddings.LayerNorm.weight"] - before["embeddings.LayerNorm.weight"]
            assert torch.allclose(delta, torch.full_like(delta, 0.01), atol=1e-6)
            assert torch.equal(after["pooler.dense.weight"], before["pooler.dense.weight"])
        rescored = evaluate_merge(carol, rebased.target, tasks, rows)
        assert set(rescored) == {"spam", "music"}

        # No raw data left its clone: Carol holds no dataset, and none of their objects.
        assert carol.view(DatasetsView).all_versions() == []
        assert not [e for e in carol.ledger.read_all() if e.stream.startswith("dataset/")]
        assert not (_objects(carol) & (alice_data | bob_data))
        with Repository.open(hub_path) as hub:
            assert not (_objects(hub) & (alice_data | bob_data))
        carol.verify()
    finally:
        carol.close()

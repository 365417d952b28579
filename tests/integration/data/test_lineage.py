"""Record-level lineage through cleanings, runs and checkpoints, and forgetting records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fmforge.data import add_dataset, read_table
from fmforge.data.cleaning import apply_cleaning, load_rules
from fmforge.data.lineage import forget, forgotten_in, trace
from fmforge.errors import DataError
from fmforge.repository import Repository
from fmforge.tracking import start_run
from tests.clirunner import fm

ROWS = [
    {"text": "nice song", "label": 0},
    {"text": "write me: fan@example.com", "label": 1},
    {"text": "love the drums", "label": 0},
]


def ids_of(repo: Repository, target: str) -> list[str]:
    return read_table(repo, target, with_ids=True).column("_row_id").to_pylist()


def setup(repo: Repository, tmp_path: Path) -> str:
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    add_dataset(repo, "comments", path)
    apply_cleaning(repo, "comments", load_rules("rules:\n  - redact: {kinds: [email]}\n"))
    with start_run("spam", repo=repo, name="head", datasets=["comments@v2"]) as run:
        run.log({"loss": 1.0}, step=0)
        run.log_checkpoint({"w": torch.ones(2, 2)}, model="spam-head")
    return run.id


def test_trace_follows_a_record_through_cleaning_runs_and_checkpoints(
    repo: Repository, tmp_path: Path
) -> None:
    run_id = setup(repo, tmp_path)
    original = ids_of(repo, "comments@v1")[1]
    found = trace(repo, original[:10])
    assert found.row_ids[0] == original
    assert len(found.row_ids) == 2  # the redaction gave it a new id
    assert [v["ref"] for v in found.versions] == ["comments@v1", "comments@v2"]
    assert found.versions[1]["row_id"] == ids_of(repo, "comments@v2")[1]
    assert [r["id"] for r in found.runs] == [run_id]
    (model,) = found.models
    assert model["model"] == "spam-head"
    untouched = trace(repo, ids_of(repo, "comments@v1")[0])
    assert [v["ref"] for v in untouched.versions] == ["comments@v1", "comments@v2"]
    with pytest.raises(DataError, match="at least 8 characters"):
        trace(repo, "abc")


def test_forget_erases_the_rows_and_flags_what_was_trained_on_them(
    repo: Repository, tmp_path: Path
) -> None:
    setup(repo, tmp_path)
    # Another dataset whose newest version holds one of the same records keeps its chunk.
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps(ROWS[0]) + "\n")
    add_dataset(repo, "other", other)
    done = forget(repo, "comments", "label = 0 OR text LIKE '%[EMAIL]%'", reason="user request")
    assert done.rows == 3
    assert done.erased  # the chunks holding them are gone from the store
    assert done.kept_live == 1  # "nice song" is still in `other`'s newest version
    assert [m["model"] for m in done.models] == ["spam-head"]
    assert read_table(repo, "comments").num_rows == 0
    for old in ("comments@v1", "comments@v2"):
        with pytest.raises(DataError, match="held rows that were later forgotten"):
            read_table(repo, old)
    assert read_table(repo, "other").to_pylist() == [ROWS[0]]
    (record,) = forgotten_in(repo)
    assert record["reason"] == "user request"
    assert record["models"][0]["model"] == "spam-head"
    repo.verify()  # erased on purpose: the repository still verifies
    with pytest.raises(DataError, match="nothing forgotten"):
        forget(repo, "comments", "label = 0", reason="again")
    with pytest.raises(DataError, match="say why"):
        forget(repo, "other", "label = 0", reason=" ")


def test_cli_trace_and_forget(repo: Repository, tmp_path: Path) -> None:
    run_id = setup(repo, tmp_path)
    code, out = fm(repo.root, "data", "trace", "--dataset", "comments@v1", "--where", "label = 1")
    assert code == 0, out
    assert "in comments@v2 (clean)" in out
    assert "trained run head" in out
    assert "model spam-head@" in out
    code, out = fm(repo.root, "data", "forget", "comments", "--where", "label = 1",
                   "--reason", "GDPR request 42")  # fmt: skip
    assert code == 0, out
    assert "1 rows forgotten (GDPR request 42)" in out
    assert "was trained on forgotten data" in out
    code, out = fm(repo.root, "data", "show", "comments@v1")
    assert code == 1
    assert "held rows that were later forgotten" in out
    code, out = fm(repo.root, "model", "show", "spam-head@runs/" + run_id)
    assert code == 0, out
    assert "trained on forgotten data: 1 rows of comments (GDPR request 42)" in out

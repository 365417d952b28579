"""Label issues found by confident learning on real comments with planted label errors."""

from __future__ import annotations

import itertools
import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from fmforge.data import add_dataset, read_table
from fmforge.data.issues import find_issues, issue_queue, review_issue
from fmforge.errors import DataError
from fmforge.repository import Repository
from tests.clirunner import fm

COMMENTS = Path(str(resources.files("fmforge").joinpath("demo_data/youtube_spam.jsonl")))


@pytest.fixture
def flipped(repo: Repository, tmp_path: Path) -> set[str]:
    """The shipped comments with 10% of their labels flipped; returns the flipped texts."""
    rows = [json.loads(line) for line in COMMENTS.read_text().splitlines()]
    rng = np.random.default_rng(3)
    flip = rng.random(len(rows)) < 0.10
    for row, wrong in zip(rows, flip, strict=True):
        if wrong:
            row["label"] = 1 - row["label"]
    path = tmp_path / "noisy.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    add_dataset(repo, "noisy", path)
    return {r["text"] for r, wrong in zip(rows, flip, strict=True) if wrong}


def test_planted_label_errors_lead_the_queue(repo: Repository, flipped: set[str]) -> None:
    issues = find_issues(repo, "noisy", features="tfidf")
    hits = sum(1 for x in issues if x.text in flipped)
    assert hits / len(issues) >= 0.7  # precision of the flagged set
    assert hits / len(flipped) >= 0.6  # recall
    top = issues[: len(issues) // 2]
    assert sum(1 for x in top if x.text in flipped) / len(top) >= 0.8  # the head is cleaner
    assert all(a.quality <= b.quality for a, b in itertools.pairwise(issues))
    assert all(x.suggested != x.given for x in issues)

    queue = issue_queue(repo, "noisy")
    assert [x.row_id for x in queue] == [x.row_id for x in issues]
    first = review_issue(repo, "noisy", queue[0].row_id[:10], "relabel", queue[0].suggested)
    assert (first.verdict, first.label) == ("relabel", queue[0].suggested)
    second = review_issue(repo, "noisy", queue[1].row_id, "keep")
    assert second.verdict == "keep"
    reviewed = [
        e for e in repo.ledger.read_stream("dataset/noisy") if e.type == "LabelIssueReviewed"
    ]
    assert [e.data["reviewer"] for e in reviewed] == [repo.ledger.actor] * 2
    with pytest.raises(DataError, match="relabel needs the right label"):
        review_issue(repo, "noisy", queue[2].row_id, "relabel")


def test_bad_requests_are_refused(repo: Repository, flipped: set[str]) -> None:
    with pytest.raises(DataError, match="no label issues recorded"):
        issue_queue(repo, "noisy")
    with pytest.raises(DataError, match="no column 'gold'"):
        find_issues(repo, "noisy", label="gold", features="tfidf")
    with pytest.raises(DataError, match="features must be one of"):
        find_issues(repo, "noisy", features="bag-of-words")
    assert read_table(repo, "noisy").num_rows == 400


def test_cli_finds_with_minilm_and_records_verdicts(repo: Repository, flipped: set[str]) -> None:
    code, out = fm(repo.root, "data", "issues", "noisy", "--find", "--n", "5")
    assert code == 0, out
    assert "rows flagged, most likely wrong first" in out
    row = out.splitlines()[1].split()[0]
    code, out = fm(repo.root, "data", "issues", "noisy", row, "--relabel", "1")
    assert code == 0, out
    assert "relabel as 1" in out
    code, out = fm(repo.root, "data", "issues", "noisy", "--n", "3")
    assert "[relabel]" in out
    code, out = fm(repo.root, "data", "issues", "noisy", row)
    assert code == 1
    assert "exactly one of --relabel LABEL or --keep" in out

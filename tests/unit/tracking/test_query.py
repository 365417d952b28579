"""The runs query language: parses what the issue shows, refuses what it cannot read."""

from __future__ import annotations

import pytest

from fmforge.tracking.query import QueryError, parse

RUN = {
    "id": "0190abcd", "name": "lr-sweep-3", "project": "sentiment", "status": "finished",
    "tags": ["sweep", "baseline"], "datasets": ["reviews@v2"], "base_model": "minilm@main",
    "config": {"lr": 3e-4, "optim.name": "adamw", "epochs": 3},
    "metrics": {"eval_acc": {"last": 0.91, "min": 0.5, "max": 0.93, "count": 10}},
}  # fmt: skip


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("config.lr > 1e-4 and metrics.eval_acc.max > 0.9", True),
        ("config.lr > 1e-3 or metrics.eval_acc.last >= 0.91", True),
        ("config.lr > 1e-3 and metrics.eval_acc.last >= 0.91", False),
        ("status = finished", True),
        ("status != 'finished'", False),
        ('config.optim.name = "adamw"', True),
        ("tags ~ sweep and datasets ~ reviews", True),
        ("not (tags ~ sweep)", False),
        ("base_model ~ minilm", True),
        ("config.missing = 1", False),
        ("metrics.loss.min < 1", False),
        ("config.optim.name > 3", False),  # a word against a number: no match, no error
        ("name ~ sweep and (config.epochs = 3 or config.epochs = 5)", True),
    ],
)
def test_queries(query: str, expected: bool) -> None:
    assert parse(query)(RUN) is expected


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("lr > 1", "unknown field 'lr'"),
        ("config.lr >", "ends too early"),
        ("config.lr 3", "expected a comparison"),
        ("(status = finished", "ends too early"),
        ("status = finished extra", "unexpected 'extra'"),
        ("metrics.loss > 1", "unknown field"),
        ("(" * 5000 + "status = finished", "deeper than 100 levels"),  # not a RecursionError
        ("not " * 5000 + "status = finished", "deeper than 100 levels"),
    ],
)
def test_bad_queries_say_what_is_wrong(query: str, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        parse(query)

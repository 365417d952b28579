"""Declarative cleaning on real dataset versions: preview, apply, and every change traceable."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fmforge.data import add_dataset, dataset_log, read_table
from fmforge.data.cleaning import (
    CleaningError,
    Redact,
    apply_cleaning,
    load_rules,
    normalize,
    plan_cleaning,
)
from fmforge.errors import DataError, InvalidFilter
from fmforge.repository import Repository
from tests.clirunner import fm

ROWS = [
    {"text": "Great song, love it", "label": 0},
    {"text": "great  SONG, love it!", "label": 0},  # a normalized duplicate of row 0
    {"text": "Great song, love it", "label": 0},  # an exact duplicate of row 0
    {"text": "   ", "label": 0},
    {"text": "mail me at jo.smith@example.com or call +1 415-555-0134", "label": 1},
    {"text": "CHECK OUT my channel http://spam.example/x now", "label": 1},
    {"text": "server at 192.168.1.20, card 4111 1111 1111 1111", "label": 1},
    {"text": "short", "label": None},
]

RULES = """
column: text
rules:
  - drop_empty: {}
  - dedup: {mode: exact}
  - dedup: {mode: normalized}
  - drop: {max_length: 5}
  - keep: {sql: "label IS NOT NULL"}
  - redact: {kinds: [email, phone, url, ip, credit_card]}
"""


def dataset(repo: Repository, tmp_path: Path) -> None:
    path = tmp_path / "comments.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    add_dataset(repo, "comments", path)


def test_preview_records_nothing_and_apply_records_who_changed_what(
    repo: Repository, tmp_path: Path
) -> None:
    dataset(repo, tmp_path)
    rules = load_rules(RULES)
    plan = plan_cleaning(repo, "comments", rules)
    assert [(r.dropped, r.rewritten) for r in plan.reports] == [
        (1, 0), (1, 0), (1, 0), (1, 0), (0, 0), (0, 3),
    ]  # fmt: skip
    assert plan.reports[1].examples[0]["action"] == "drop"
    assert [v.number for v in dataset_log(repo, "comments")] == [1]  # a preview records nothing

    _, result = apply_cleaning(repo, "comments", rules)
    version = result.version
    assert version.number == 2
    assert version.transformation["kind"] == "clean"
    texts = read_table(repo, "comments@v2").column("text").to_pylist()
    assert texts == [
        "Great song, love it",
        "mail me at [EMAIL] or call [PHONE]",
        "CHECK OUT my channel [URL] now",
        "server at [IP], card [CREDIT_CARD]",
    ]
    changes = pq.read_table(io.BytesIO(repo.objects.get(version.transformation["changes"])))
    v1_ids = read_table(repo, "comments@v1", with_ids=True).column("_row_id").to_pylist()
    v2_ids = read_table(repo, "comments@v2", with_ids=True).column("_row_id").to_pylist()
    by_row = {r["row_id"]: r for r in changes.to_pylist()}
    assert by_row[v1_ids[2]]["rule"] == 1  # the exact duplicate, by rule 2 (exact dedup)
    assert by_row[v1_ids[1]]["rule"] == 2  # the normalized duplicate
    assert by_row[v1_ids[3]]["action"] == "drop"  # the empty row
    rewritten = by_row[v1_ids[4]]
    assert rewritten["action"] == "rewrite"
    assert rewritten["new_row_id"] == v2_ids[1]
    assert v2_ids[0] == v1_ids[0]  # an untouched row keeps its id
    assert changes.num_rows == 4 + 3
    # The version's event refers to the changes object, so gc keeps it.
    (event,) = [e for e in repo.ledger.read_stream("dataset/comments") if e.data["number"] == 2]
    assert version.transformation["changes"] in event.refs
    assert apply_cleaning(repo, "comments@v2", rules)[1].created is False  # nothing left to do


def test_redaction_and_normalization_by_example() -> None:
    redact = Redact("text")
    assert redact.redact("write to a.b@c.org") == "write to [EMAIL]"
    assert redact.redact("see https://x.y/z?q=1 and www.a.com") == "see [URL] and [URL]"
    assert redact.redact("from 10.0.0.255 not 999.1.1.1") == "from [IP] not 999.1.1.1"
    assert redact.redact("call (020) 7946 0958") == "call [PHONE]"
    assert redact.redact("in 2024 we had 3 cats") == "in 2024 we had 3 cats"
    assert normalize("Ça  va? ÇA VA!") == normalize("ca va ca va")


def test_bad_rules_are_refused_with_the_rule_named(repo: Repository, tmp_path: Path) -> None:
    dataset(repo, tmp_path)
    with pytest.raises(CleaningError, match="rule 1: unknown kind 'squash'"):
        load_rules("rules:\n  - squash: {}\n")
    with pytest.raises(CleaningError, match=r"rule 1 \(drop\): option 'regex': bad regex '\('"):
        load_rules("rules:\n  - drop: {regex: '('}\n")
    with pytest.raises(CleaningError, match=r"rules: line \d, column \d+: not valid YAML"):
        load_rules("rules:\n  - drop: {regex: [\n")
    with pytest.raises(
        CleaningError, match="rule 1 \\(redact\\): option 'kinds' must be a list of"
    ):
        load_rules("rules:\n  - redact: {kinds: [ssn]}\n")
    with pytest.raises(CleaningError, match=r"rule 1 \(drop_empty\): no column 'body'"):
        plan_cleaning(repo, "comments", load_rules("column: body\nrules:\n  - drop_empty: {}\n"))
    with pytest.raises(InvalidFilter, match="rule keep: sql 'nope > 1': the dataset has no column"):
        plan_cleaning(repo, "comments", load_rules("rules:\n  - keep: {sql: 'nope > 1'}\n"))
    assert [v.number for v in dataset_log(repo, "comments")] == [1]


def test_cli_preview_then_apply(repo: Repository, tmp_path: Path) -> None:
    dataset(repo, tmp_path)
    (tmp_path / "rules.yaml").write_text(RULES)
    code, out = fm(repo.root, "data", "clean", "comments", "--rules", str(tmp_path / "rules.yaml"))
    assert code == 0, out
    assert "comments@v1: 8 rows -> 4" in out
    assert "6. redact" in out
    assert "preview only: nothing recorded" in out
    code, out = fm(repo.root, "data", "clean", "comments", "-r", str(tmp_path / "rules.yaml"),
                   "--apply")  # fmt: skip
    assert code == 0, out
    assert "recorded comments@v2" in out
    code, out = fm(repo.root, "data", "clean", "comments", "-r", str(tmp_path / "missing.yaml"))
    assert code == 1
    assert "missing.yaml" in out


def test_near_duplicates_are_dropped_by_their_rule(repo: Repository, tmp_path: Path) -> None:
    base = "this video is amazing, the drums in the second verse are incredible and I love it"
    rows = [
        {"text": base, "label": 0},
        {"text": base.replace("amazing", "amazin"), "label": 0},  # one typo
        {"text": "subscribe to my channel for free giveaways every week", "label": 1},
        {"text": "SUBSCRIBE to my channel for free giveaways every week!!", "label": 1},
        {"text": "a completely different comment about the singer's voice", "label": 0},
    ]
    path = tmp_path / "near.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    add_dataset(repo, "near", path)
    rules = load_rules("rules:\n  - near_dedup: {threshold: 0.7}\n")
    plan = plan_cleaning(repo, "near", rules)
    assert plan.reports[0].dropped == 2
    kept = plan.table.column("text").to_pylist()
    assert kept == [rows[0]["text"], rows[2]["text"], rows[4]["text"]]
    with pytest.raises(CleaningError, match=r"'threshold' must be a number in \(0, 1\], not 1.5"):
        load_rules("rules:\n  - near_dedup: {threshold: 1.5}\n")


def test_review_verdicts_are_events_and_overrides_survive_reapplying(
    repo: Repository, tmp_path: Path
) -> None:
    from fmforge.data.review import flagged, review

    dataset(repo, tmp_path)
    rules = load_rules(RULES)
    apply_cleaning(repo, "comments", rules)
    flags = flagged(repo, "comments")
    assert len(flags) == 7
    assert all(f.verdict is None for f in flags)
    email = next(f for f in flags if "jo.smith" in str(f.row.get("text")))
    duplicate = next(f for f in flags if f.action == "drop" and "dedup" in f.rule)
    review(repo, "comments", email.row_id[:10], "override", note="a public support address")
    review(repo, "comments", duplicate.row_id, "override")
    accepted = review(repo, "comments", flags[0].row_id, "accept")
    assert accepted.verdict == "accept"
    assert accepted.reviewer == repo.ledger.actor
    events = [
        e for e in repo.ledger.read_stream("dataset/comments") if e.type == "CleaningReviewed"
    ]
    assert [e.data["verdict"] for e in events] == ["override", "override", "accept"]
    assert events[0].data["note"] == "a public support address"

    # Re-applying the rules to the raw version keeps both human decisions.
    plan, result = apply_cleaning(repo, "comments@v1", rules)
    assert result.version.number == 3
    texts = read_table(repo, "comments@v3").column("text").to_pylist()
    assert ROWS[4]["text"] in texts  # the override of the redaction
    assert texts.count("Great song, love it") == 2  # the override of the dedup
    # The duplicate is kept from both dedup rules (the verdict is about dedup), the email row
    # from the redaction.
    assert [r.overridden for r in plan.reports] == [0, 1, 1, 0, 0, 1]
    with pytest.raises(DataError, match="no flagged row"):
        review(repo, "comments", "zzzz", "accept")


def test_cli_review_lists_and_records(repo: Repository, tmp_path: Path) -> None:
    dataset(repo, tmp_path)
    (tmp_path / "rules.yaml").write_text(RULES)
    code, out = fm(repo.root, "data", "review", "comments")
    assert code == 1
    assert "no cleaned version to review" in out
    fm(repo.root, "data", "clean", "comments", "-r", str(tmp_path / "rules.yaml"), "--apply")
    code, out = fm(repo.root, "data", "review", "comments")
    assert code == 0, out
    assert out.count("redact") == 3
    row = out.split("\n")[3].split("│")[1].strip()
    code, out = fm(repo.root, "data", "review", "comments", row, "--accept")
    assert code == 0, out
    assert "accept by" in out
    code, out = fm(repo.root, "data", "review", "comments", "--pending")
    assert row not in out
    code, out = fm(repo.root, "data", "review", "comments", row, "--accept", "--override")
    assert code == 1
    assert "exactly one of --accept or --override" in out


def test_language_rule_keeps_the_wanted_languages(repo: Repository, tmp_path: Path) -> None:
    rows = [
        {"text": "This is a really wonderful song and I listen to it every single day"},
        {"text": "Esta canción es maravillosa y la escucho todos los días sin parar"},
        {"text": "Cette chanson est magnifique et je l'écoute tous les jours"},
        {"text": "ok"},  # too short to tell: kept
    ]
    path = tmp_path / "lang.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    add_dataset(repo, "lang", path)
    plan = plan_cleaning(repo, "lang", load_rules("rules:\n  - language: {keep: [en]}\n"))
    kept = plan.table.column("text").to_pylist()
    assert kept[0] == rows[0]["text"]
    assert rows[1]["text"] not in kept
    assert rows[2]["text"] not in kept
    with pytest.raises(CleaningError, match="option 'keep' is required"):
        load_rules("rules:\n  - language: {}\n")

"""The data chapter of ``fmforge demo``: the 1,956 comments of the UCI YouTube Spam Collection
shipped with fmforge (CC BY 4.0, see ``fmforge/demo_data/SOURCE.md``) added, cleaned with a
preview first, weakly labelled with the shipped labeling functions (the label model chosen on
the valid split), labelled again with LFs synthesized from an intent and 50 examples (accepted
by the demo's reviewer), and one comment traced through every version."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from fmforge.data.cleaning import apply_cleaning, load_rules, plan_cleaning
from fmforge.data.labeling.functions import apply_lfs, load_lfs
from fmforge.data.labeling.review import accepted_lfs, review
from fmforge.data.labeling.synth import SynthSpec, synthesize
from fmforge.data.labeling.workflow import Gold, analyze, fit_label_model, label_version
from fmforge.data.lineage import trace
from fmforge.data.versions import add_dataset, read_table
from fmforge.repository import Repository

RULES = """
column: text
rules:
  - drop_empty: {}
  - dedup: {mode: normalized}
  - near_dedup: {threshold: 0.9}
  - redact: {kinds: [url, email]}
"""
DEV = Gold()  # gold labels on the valid split
INTENT = "comments that advertise a channel, link or giveaway"


def _shipped(name: str) -> Path:
    return Path(str(resources.files("fmforge").joinpath(f"demo_data/{name}")))


def add_comments(repo: Repository, facts: dict[str, Any]) -> list[str]:
    source = _shipped("youtube_spam_collection.jsonl")
    result = add_dataset(repo, "comments", source, message="the UCI YouTube Spam Collection")
    v = result.version
    facts["dataset"] = v.ref
    columns = ", ".join(c["name"] for c in v.columns)
    return [f"{v.ref}: {v.rows} comments ({columns}); each row's id is the hash of its record"]


def clean_comments(repo: Repository, facts: dict[str, Any]) -> list[str]:
    rules = load_rules(RULES)
    preview = plan_cleaning(repo, "comments", rules)
    lines = [f"preview: {preview.rows_before} rows -> {preview.rows_after}, nothing recorded yet"]
    for report in preview.reports:
        (kind,) = report.rule
        lines.append(f"  {kind}: {report.dropped} dropped, {report.rewritten} rewritten")
    rewrites = [e for r in preview.reports for e in r.examples if e["action"] == "rewrite"]
    # The shortest example that is more than a bare link.
    example = min(rewrites, key=lambda e: (len(e["before"]["text"]) < 40, len(e["before"]["text"])))
    lines.append(f"  e.g. {example['before']['text'][:70]!r}")
    lines.append(f"    -> {example['after']['text'][:70]!r}")
    _, result = apply_cleaning(repo, "comments", rules, message="dedup and redact links")
    facts["cleaned"] = result.version.ref
    lines.append(f"applied: {result.version.ref}, every change recorded with its rule")
    return lines


def label_comments(repo: Repository, facts: dict[str, Any]) -> list[str]:
    lfs = load_lfs(_shipped("spam_lfs.yaml"))
    matrix = apply_lfs(repo, facts["cleaned"], lfs)
    reports, warnings = analyze(repo, matrix, gold=DEV)
    lines = [f"{len(lfs)} labeling functions over {matrix.matrix.shape[0]} rows"]
    for r in sorted(reports, key=lambda r: -r.coverage)[:4]:
        right = "-" if r.accuracy is None else f"{r.accuracy:.2f}"
        lines.append(
            f"  {r.name:13} votes {','.join(r.polarity):4} on {r.coverage:5.1%} of rows, "
            f"{right} right on gold"
        )
    lines.append(f"  {len(warnings)} warnings (near-duplicate LFs, LFs worse than chance)")
    model, result = label_version(repo, matrix, gold=DEV)
    labelled = read_table(repo, result.version.ref)
    train = np.array([s == "train" for s in labelled.column("split").to_pylist()])
    names = np.array(labelled.column("weak_label").to_pylist(), dtype=object)
    gold = np.array(["ham", "spam"], dtype=object)[labelled.column("label").to_numpy()]
    covered = train & (names != None)  # noqa: E711 - an object array compares elementwise
    accuracy = float(np.mean(names[covered] == gold[covered]))
    facts["labelled"] = result.version.ref
    lines.append(
        f"label model: {model.chosen}, chosen on the valid split's gold labels; "
        f"{result.version.ref} records weak labels for {covered.sum()} of {train.sum()} training "
        f"comments, {accuracy:.0%} right against their gold labels"
    )
    return lines


def synthesize_lfs(repo: Repository, facts: dict[str, Any]) -> list[str]:
    """LFs from the intent and 25 + 25 labelled training comments, beside the hand-written
    ones; accepted; both label models scored on the test split's gold labels."""
    rows = read_table(repo, facts["cleaned"], with_ids=True).to_pylist()
    train = [r for r in rows if r["split"] == "train"]
    picked = [r for r in train if r["label"] == 1][:25] + [r for r in train if r["label"] == 0][:25]
    examples = repo.root / "examples.jsonl"
    examples.write_text("".join(
        f'{{"row_id": "{r["_row_id"]}", "label": "{["ham", "spam"][r["label"]]}"}}\n'
        for r in picked
    ))  # fmt: skip
    # Exemplar LFs would embed every comment (about a minute, once); the demo leaves them out.
    spec = SynthSpec(target=facts["cleaned"], intent=INTENT, examples=examples,
                     labels=("ham", "spam"), budget_s=10.0,
                     generators=("keywords", "stems", "intent", "stumps"))  # fmt: skip
    result = synthesize(repo, spec)
    hand = load_lfs(_shipped("spam_lfs.yaml"))
    lines = [
        f"intent: {INTENT!r}; 50 labelled comments; {result.candidates} candidates, "
        f"{len(result.lfs)} chosen ({result.stopped}); {result.embedded} words and texts "
        f"embedded in {result.embedding_s:.0f} s, cached for later runs",
        f"  {'hand-written':22} {'synthesized':26} kind      out-of-fold  coverage",
    ]
    for i, lf in enumerate(result.lfs[:8]):
        oof = f"{lf.oof_right}/{lf.oof_votes}" if lf.oof_votes else "-"
        left = hand[i].name if i < len(hand) else ""
        lines.append(f"  {left:22} {lf.name:26} {lf.kind:9} {oof:>11}  {lf.coverage:7.1%}")
    verdicts = review(repo, "comments", accept=[lf.proposal for lf in result.lfs])
    lines.append(f"accepted all {len(verdicts)} (LabelingFunctionReviewed events by "
                 f"{repo.principal}); `--lfs accepted` is now an LF set")  # fmt: skip
    table = read_table(repo, facts["cleaned"])
    test = np.array([s == "test" for s in table.column("split").to_pylist()], dtype=bool)
    gold = np.asarray(table.column("label").to_numpy())
    scores = []
    for lfs in (hand, accepted_lfs(repo, "comments")):
        matrix = apply_lfs(repo, facts["cleaned"], lfs)
        _, proba = fit_label_model(repo, matrix, gold=DEV)
        covered = np.asarray((matrix.matrix >= 0).any(axis=1))
        right = float(np.mean(proba.argmax(axis=1)[test] == gold[test]))
        scores.append((right, float(covered[test].mean())))
    lines.append(
        f"label models on the {test.sum()} test comments' gold labels: hand-written LFs "
        f"{scores[0][0]:.1%} ({scores[0][1]:.0%} covered), synthesized {scores[1][0]:.1%} "
        f"({scores[1][1]:.0%} covered, the default rule included)"
    )
    return lines


def trace_comment(repo: Repository, facts: dict[str, Any]) -> list[str]:
    raw = read_table(repo, facts["dataset"], with_ids=True).to_pylist()
    comment = next(r for r in raw if "http" in r["text"] and len(r["text"]) > 60)
    found = trace(repo, comment["_row_id"])
    lines = [f"comment {comment['_row_id'][:12]}: {comment['text'][:60]!r}"]
    lines += [f"  in {v['ref']} ({v['made_by']}) as {v['row_id'][:12]}" for v in found.versions]
    return lines

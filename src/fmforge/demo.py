"""The main job, as a script of steps: ``fmforge demo`` runs them on the embedded default.

Each step takes the shared context and returns lines saying what it did; the CLI prints them.
Later capabilities add their steps to ``STEPS`` (a plain, explicit list).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fmforge.access import demo as access_demo
from fmforge.data import demo as data_demo
from fmforge.errors import StreamVersionConflict
from fmforge.ledger import Event, NewEvent, Projection, handles
from fmforge.models import demo as model_demo
from fmforge.repository import Repository
from fmforge.serving import demo as serving_demo
from fmforge.tracking import demo as runs_demo
from fmforge.training import demo as training_demo


@dataclass
class DemoContext:
    directory: Path
    repo: Repository | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def repository(self) -> Repository:
        assert self.repo is not None, "the init step runs first"
        return self.repo


@dataclass(frozen=True)
class DemoStep:
    title: str
    run: Callable[[DemoContext], list[str]]


class EventCounts(Projection[dict[str, int]]):
    """Events per type: the smallest useful read model."""

    name = "demo_event_counts"
    tables = ("demo_event_counts",)

    def create_tables(self, db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE demo_event_counts (type TEXT PRIMARY KEY, n INTEGER NOT NULL)")

    def read(self, db: sqlite3.Connection) -> dict[str, int]:
        return dict(db.execute("SELECT type, n FROM demo_event_counts ORDER BY type").fetchall())

    @handles("RepositoryInitialized", "NoteTaken", "ObjectsStored")
    def count(self, db: sqlite3.Connection, event: Event) -> None:
        db.execute(
            "INSERT INTO demo_event_counts VALUES (?, 1) "
            "ON CONFLICT (type) DO UPDATE SET n = n + 1",
            (event.type,),
        )


def _init(ctx: DemoContext) -> list[str]:
    ctx.repo = Repository.init(ctx.directory)
    repo = ctx.repository
    return [f"initialised {repo.path}", f"ledger  {repo.ledger.url}", f"objects {repo.objects.url}"]


def _append(ctx: DemoContext) -> list[str]:
    ledger = ctx.repository.ledger
    first = NewEvent("NoteTaken", {"text": "fmforge records every fact as an event"})
    result = ledger.append("demo/notes", [first], expected_version=0)
    retry = ledger.append("demo/notes", [first], expected_version=0)
    more = ledger.append(
        "demo/notes",
        [NewEvent("NoteTaken", {"text": f"note {i}"}) for i in range(2, 5)],
        expected_version=result.version,
    )
    lines = [
        f"appended 1 event at seq {result.first_seq} (stream version {result.version})",
        f"retried the same event_id: seq {retry.first_seq} again, "
        f"deduplicated={retry.deduplicated}, nothing written",
        f"appended 3 events atomically at seq {more.first_seq}..{more.last_seq}",
    ]
    try:
        ledger.append("demo/notes", NewEvent("NoteTaken", {"text": "stale"}), expected_version=1)
    except StreamVersionConflict as exc:
        lines.append(f"stale writer refused: {exc}")
    return lines


def _read(ctx: DemoContext) -> list[str]:
    ledger = ctx.repository.ledger
    notes = list(ledger.read_stream("demo/notes"))
    everything = list(ledger.read_all())
    return [
        f"read_stream('demo/notes'): {len(notes)} events, versions {[e.version for e in notes]}",
        f"read_all(): {len(everything)} events, types {sorted({e.type for e in everything})}",
        f"newest hash {everything[-1].hash.hex()[:16]}... "
        f"links to {everything[-1].prev_hash.hex()[:16]}...",
    ]


def _objects(ctx: DemoContext) -> list[str]:
    repo = ctx.repository
    text = b"A small, repetitive text compresses well. " * 200
    weights = os.urandom(4 << 20)  # stands in for 4 MiB of float weights: incompressible
    text_digest = repo.objects.put(text)
    weights_digest = repo.objects.put(weights)
    assert repo.objects.get(text_digest) == text
    assert repo.objects.get(weights_digest) == weights
    repo.ledger.append(
        "demo/objects",
        NewEvent(
            "ObjectsStored",
            {"text": text_digest, "weights": weights_digest},
            refs=(text_digest, weights_digest),
        ),
    )
    ctx.facts["digests"] = (text_digest, weights_digest)
    return [
        f"put {len(text)} bytes of text -> {text_digest[:16]}... (stored compressed)",
        f"put {len(weights)} bytes of random data -> {weights_digest[:16]}... (stored raw)",
        "read both back bit for bit, verified by blake3",
        "recorded an ObjectsStored event that refers to both",
    ]


def _projection(ctx: DemoContext) -> list[str]:
    repo = ctx.repository
    before = repo.view(EventCounts)
    repo.views.rebuild(repo.views.projection(EventCounts))
    after = repo.view(EventCounts)
    return [
        f"projection events-per-type: {before}",
        f"rebuilt from seq 1: identical={before == after}",
    ]


def _verify(ctx: DemoContext) -> list[str]:
    report = ctx.repository.verify()
    return [
        f"hash chain of {report.events} events verifies; head {report.head.hash.hex()[:16]}...",
        f"{report.objects_checked} referenced objects read back and hash-checked",
    ]


def _gc(ctx: DemoContext) -> list[str]:
    repo = ctx.repository
    orphan = repo.objects.put(b"an object no event refers to")
    report = repo.gc(grace_period_s=0)
    return [
        f"gc kept {report.kept} referenced objects, deleted {report.deleted} orphan(s)",
        f"orphan gone: {not repo.objects.has(orphan)}",
    ]


def _models(
    chapter: Callable[[Repository, Path, dict[str, Any]], list[str]],
) -> Callable[[DemoContext], list[str]]:
    """A model-registry step, given a scratch folder for the model files it writes."""

    def step(ctx: DemoContext) -> list[str]:
        scratch = ctx.directory / "model-files"
        scratch.mkdir(exist_ok=True)
        return chapter(ctx.repository, scratch, ctx.facts)

    return step


def _data(
    chapter: Callable[[Repository, dict[str, Any]], list[str]],
) -> Callable[[DemoContext], list[str]]:
    def step(ctx: DemoContext) -> list[str]:
        return chapter(ctx.repository, ctx.facts)

    return step


STEPS: list[DemoStep] = [
    DemoStep("Initialise a repository (embedded default: SQLite + local objects)", _init),
    DemoStep("Append events: optimistic concurrency and idempotent retries", _append),
    DemoStep("Read events back", _read),
    DemoStep("Store and verify objects", _objects),
    DemoStep("Build a projection and rebuild it", _projection),
    DemoStep("Verify the ledger and every referenced object", _verify),
    DemoStep("Garbage-collect unreferenced objects", _gc),
    DemoStep("Commit the all-MiniLM-L6-v2 model", _models(model_demo.commit_minilm)),
    DemoStep("Commit two finetune-like versions on branches", _models(model_demo.commit_finetunes)),
    DemoStep("Diff them against main", _models(model_demo.diff_finetunes)),
    DemoStep(
        "Check out the first version and verify it bit for bit", _models(model_demo.checkout_first)
    ),
    DemoStep("Train and log two runs; a planted NaN stops one", _models(runs_demo.train_runs)),
    DemoStep("Overview of the runs and an HTML report", _models(runs_demo.overview)),
    DemoStep("The same runs in the dashboard (fmforge ui)", _models(runs_demo.dashboard)),
    DemoStep("Add the raw YouTube comments as a dataset", _data(data_demo.add_comments)),
    DemoStep("Clean them: preview, then apply", _data(data_demo.clean_comments)),
    DemoStep(
        "Label them with labeling functions and a label model", _data(data_demo.label_comments)
    ),
    DemoStep(
        "Synthesize LFs from an intent and 50 examples, accept them, compare",
        _data(data_demo.synthesize_lfs),
    ),
    DemoStep("Trace one comment through every version", _data(data_demo.trace_comment)),
    DemoStep(
        "Finetune MiniLM with LoRA on the weakly labelled comments",
        _models(training_demo.finetune_spam),
    ),
    DemoStep("Finetune a second task: which video", _models(training_demo.finetune_video)),
    DemoStep(
        "Merge the two adapters with TIES: conflict report, accuracy per task",
        _models(training_demo.merge_adapters),
    ),
    DemoStep("Select a base for a new dataset (LogME)", _models(training_demo.select_base)),
    DemoStep(
        "Rebase the spam finetune onto a modified MiniLM", _models(training_demo.rebase_finetune)
    ),
    DemoStep(
        "Adapters to serve: MiniLM classifiers and a tiny Llama with two LoRAs",
        _models(serving_demo.prepare_adapters),
    ),
    DemoStep(
        "Serve them (fmforge serve): mixed openai requests, a branch moved mid-stream, metrics",
        _models(serving_demo.serve_and_move),
    ),
    DemoStep("Access control: two users and a service principal", _data(access_demo.principals)),
    DemoStep(
        "A dataset with personal data, encrypted per author", _data(access_demo.tagged_dataset)
    ),
    DemoStep("A denied read, a masked read, a cleared read", _data(access_demo.reads)),
    DemoStep("A non-commercial licence refuses commercial use", _data(access_demo.licence)),
    DemoStep("Audit: who read, what was denied, a signed checkpoint", _data(access_demo.audit)),
    DemoStep("Erase an author by crypto-shredding, then verify", _data(access_demo.erasure)),
]


def run_demo(directory: Path) -> Iterator[tuple[DemoStep, list[str]]]:
    """Run every step in ``directory``; yields each step with what it reported."""
    ctx = DemoContext(directory)
    try:
        for step in STEPS:
            yield step, step.run(ctx)
    finally:
        if ctx.repo is not None:
            ctx.repo.close()

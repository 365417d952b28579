"""Labeling functions from an intent and a few labelled examples: ``synthesize(repo, spec)``.

    spec = SynthSpec(target="comments@v2", intent="comments that advertise a channel, link or
                     giveaway", examples=Path("gold.jsonl"))
    result = synthesize(repo, spec)      # result.yaml: the LF file; one event per new LF

The pipeline (all local and deterministic given the inputs and the seed):

1. The examples (a file or a gold column, ``examples.py``), the version's texts, and MiniLM
   embeddings of the texts, the examples, the vocabulary, the intent and the class names,
   through the repository's embedding cache (``embedcache.py``: computed once, then read).
2. Candidates from every generator of ``candidates.py`` on all the examples, and again on each
   of 5 folds' complements (stratified by class, shuffled by the seed) for out-of-fold votes.
3. Candidates a reviewer rejected for this intent and example set are dropped; the greedy
   selection of ``selection.py`` chooses among the rest, stopping at no gain or at the budget
   (``budget_s`` bounds steps 2-3; embedding, cached for later runs, is not counted).
4. An explicit ``default`` rule for the class of the examples the chosen LFs leave uncovered:
   unipolar LFs leave the other class uncovered, and an end model trained on covered rows only
   learns that (0.73 on YouTube without it, 0.89 with it; design note (B)).
5. The LF file (YAML of the declarative kinds; nothing generated is ever executed) and one
   ``LabelingFunctionProposed`` event per LF not proposed before for this intent and example
   set, with its generator, version, seed, intent, the example set's digest and its scores.

The same inputs and seed give the same file byte for byte, unless the budget cut the search
(``stopped == "budget"``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import blake3
import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field

from fmforge.access import targets
from fmforge.access.mediation import mediated
from fmforge.data.events import LabelingFunctionProposed
from fmforge.data.labeling.candidates import (
    GENERATORS,
    Candidate,
    Context,
    Pool,
    generate,
    slug,
    vocabulary,
)
from fmforge.data.labeling.embedcache import EmbeddingCache
from fmforge.data.labeling.examples import Examples, load_examples
from fmforge.data.labeling.functions import LabelingFunction, build_lf
from fmforge.data.labeling.kinds import Exemplars
from fmforge.data.labeling.selection import folds, precision, select
from fmforge.data.userinput import SpecProblem, validate_fields
from fmforge.data.versions import STREAM_PREFIX, read_table, resolve
from fmforge.data.views import SynthWork
from fmforge.errors import LabelingError
from fmforge.repository import Repository

GENERATOR = "fmforge-synth/1"
INTENT_VOCABULARY = 400  # words embedded for intent-seeded keywords
Array = np.ndarray[Any, Any]
_Name = Annotated[str, Field(min_length=1, max_length=200)]
Generator = Literal["keywords", "stems", "intent", "stumps", "exemplars"]


class SynthSpec(BaseModel):
    """What ``synthesize`` is asked: the dataset version, the intent, the labelled examples
    (a file or a gold column), the text column, and the search's budget and seed."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    target: _Name = Field(description="a dataset and version, NAME[@REF]")
    intent: str = Field(min_length=1, max_length=2000, description="a text of 1 to 2,000 chars")
    examples: Path | None = Field(default=None, description="a JSON Lines or CSV file of examples")
    gold_column: _Name | None = Field(default=None, description="a column name")
    column: _Name = Field(default="text", description="the text column's name")
    labels: tuple[_Name, ...] | None = Field(
        default=None, min_length=2, description="two or more class names, in class-index order"
    )
    numeric_columns: tuple[_Name, ...] = Field(default=(), description="numeric columns for stumps")
    generators: tuple[Generator, ...] = Field(
        default=("keywords", "stems", "intent", "stumps", "exemplars"),
        min_length=1,
        description=f"some of {', '.join(GENERATORS)}",
    )
    budget_s: float = Field(default=60.0, gt=0, le=86_400, description="seconds, more than 0")
    seed: int = Field(default=0, ge=0, le=2**32 - 1, description="an integer from 0 to 2**32 - 1")

    @classmethod
    def parse(cls, **fields: Any) -> SynthSpec:
        """The spec of ``fields``, or ``LabelingError`` naming the first wrong one."""
        try:
            spec: SynthSpec = validate_fields(cls, fields)
        except SpecProblem as problem:
            raise LabelingError(f"synth: {problem}") from None
        return spec


@dataclass(frozen=True)
class SynthLF:
    """One LF of the file, with where it came from and how it scored."""

    name: str
    kind: str
    generator: str
    version: str  # the LF's version (before a default is bound to the set)
    label: str
    oof_right: int  # its out-of-fold votes on the examples that were right
    oof_votes: int  # ... all of them
    coverage: float  # of the unlabelled rows
    proposal: str
    new: bool  # proposed now (False: proposed before for this intent and example set)
    entry: dict[str, Any]

    @property
    def oof_accuracy(self) -> float | None:
        return self.oof_right / self.oof_votes if self.oof_votes else None


@dataclass(frozen=True)
class SynthResult:
    yaml: str
    lfs: list[SynthLF]
    labels: tuple[str, ...]
    column: str
    version: str  # the dataset version's ref
    examples: str  # the example set's digest
    oof_accuracy: float  # of the chosen set with its default rule, out of fold
    stopped: str  # "no gain" | "limit" | "budget"
    candidates: int
    skipped_rejected: int
    embedded: int  # texts embedded now (the rest came from the cache)
    embedding_s: float
    search_s: float
    oof_votes: Array  # examples x LFs of the file (the default rule last)
    example_labels: Array


def proposal_id(dataset: str, intent: str, examples: str, lf_version: str) -> str:
    key = "\0".join((dataset, intent, examples, lf_version))
    return blake3.blake3(key.encode()).hexdigest()[:32]


@mediated("label", lambda repo, args: targets.dataset_resource(repo, args["spec"].target))
def synthesize(repo: Repository, spec: SynthSpec) -> SynthResult:
    """Synthesize LFs for ``spec.target`` and propose each new one (see the module)."""
    start = time.monotonic()
    version = resolve(repo, spec.target)
    table = read_table(repo, version.ref, with_ids=True)
    _check_columns(spec, table.column_names, version.ref, table)
    examples = load_examples(
        spec.examples, spec.gold_column, table, spec.column, version.ref, spec.labels
    )
    rows = table.select([spec.column, *spec.numeric_columns]).to_pylist()
    texts = ["" if r[spec.column] is None else str(r[spec.column]) for r in rows]
    intent = " ".join(spec.intent.split())
    if not intent:
        raise LabelingError("synth: the intent is blank")
    index = repo.view(SynthWork)
    rejected = index.rejected(version.dataset, intent, examples.digest)
    known = {p.proposal for p in index.proposals(version.dataset)}

    cache = EmbeddingCache(repo, version)
    uses = set(spec.generators)

    def embedded(texts: list[str], what: str, needed: bool) -> Array:
        return cache(texts, what) if needed else np.zeros((len(texts), 384), np.float32)

    embedded_rows = embedded(texts, f"column {spec.column}", "exemplars" in uses)
    embedded_examples = embedded(examples.texts, "examples", bool(uses & {"intent", "exemplars"}))
    is_example = np.zeros(len(texts), bool)
    is_example[[p for p in examples.positions if p >= 0]] = True
    words, stems = vocabulary(texts)  # every row's: the same vocabulary whatever the examples
    names = [label.replace("_", " ") for label in examples.labels]
    seeded = "intent" in uses
    words = words[:INTENT_VOCABULARY]  # the intent's candidates: the most frequent words
    ctx = Context(
        examples.labels, spec.column, spec.numeric_columns, words,
        embedded(words, "vocabulary", seeded), embedded([intent], "intent", seeded)[0],
        embedded(names, "class names", seeded), stems, spec.generators,
    )  # fmt: skip
    embedding_s = time.monotonic() - start

    deadline = time.monotonic() + spec.budget_s
    pool = Pool(examples.texts, examples.y, examples.rows, embedded_examples)
    builder = _Builder(examples.labels, spec.column, cache)
    every = _unique(generate(pool, ctx))
    final = [c for c in every if builder.lf(c).version not in rejected]
    oof, cut = _out_of_fold(final, pool, ctx, builder, spec.seed, deadline)
    everywhere = np.full((len(texts), len(final)), -1, np.int8)
    for j, candidate in enumerate(final):
        if time.monotonic() > deadline:
            cut = True
            break
        everywhere[:, j] = builder.votes(candidate, rows, embedded_rows)
    chosen = select(oof, everywhere[~is_example], examples.y, len(examples.labels),
                    deadline=deadline)  # fmt: skip
    stopped = "budget" if cut else chosen.stopped

    picked = [final[j] for j in chosen.chosen]
    if not picked:
        why = (
            f"the budget of {spec.budget_s:g} s ran out first (give a larger --budget)"
            if stopped == "budget"
            else f"none of {len(final)} candidates is precise enough out of fold on the "
            f"{len(examples)} examples (give more examples, or check their labels)"
        )
        raise LabelingError(f"synth: no labeling function was chosen: {why}")
    default = {"name": f"default_{slug(examples.labels[chosen.default])}", "default": True,
               "label": examples.labels[chosen.default]}  # fmt: skip
    default_lf = build_lf(default, examples.labels, spec.column, "synthesized")
    with_default = default_lf.version not in rejected
    oof_chosen = oof[:, chosen.chosen]
    if with_default:
        uncovered = ~(oof_chosen >= 0).any(axis=1) if picked else np.ones(len(examples), bool)
        oof_chosen = np.column_stack([oof_chosen, np.where(uncovered, chosen.default, -1)])
    right, fired, _ = precision(oof_chosen, examples.y)
    coverage = (everywhere[~is_example][:, chosen.chosen] >= 0).mean(axis=0) if picked else []
    lfs = []
    entries = [c.entry for c in picked] + ([default] if with_default else [])
    generators = [c.generator for c in picked] + (["default"] if with_default else [])
    for j, (entry, generator) in enumerate(zip(entries, generators, strict=True)):
        lf = default_lf if generator == "default" else builder.lf(picked[j])
        pid = proposal_id(version.dataset, intent, examples.digest, lf.version)
        lfs.append(SynthLF(
            lf.name, lf.kind, generator, lf.version, str(entry["label"]), int(right[j]),
            int(fired[j]), float(coverage[j]) if generator != "default" else 1.0, pid,
            pid not in known, entry,
        ))  # fmt: skip
    text = render(spec, intent, examples, version.ref, entries)
    _propose(repo, version, spec, intent, examples, lfs)
    return SynthResult(
        text, lfs, examples.labels, spec.column, version.ref, examples.digest,
        chosen.oof_accuracy, stopped, len(final), len(every) - len(final), cache.computed,
        embedding_s,
        time.monotonic() - start - embedding_s, oof_chosen, examples.y,
    )  # fmt: skip


def _out_of_fold(
    final: list[Candidate], pool: Pool, ctx: Context, builder: _Builder, seed: int,
    deadline: float,
) -> tuple[Array, bool]:  # fmt: skip
    """(examples x candidates votes of each candidate's twin generated without the example's
    fold, -1 where it abstains or has none; whether the deadline cut it short)."""
    oof = np.full((len(pool.texts), len(final)), -1, np.int8)
    for train, held in folds(pool.y, seed):
        if time.monotonic() > deadline:
            return oof, True
        fold = {c.key: c for c in _unique(generate(pool.subset(train), ctx))}
        rows = [pool.rows[i] for i in held]
        for j, candidate in enumerate(final):
            twin = fold.get(candidate.key)
            if twin is not None:
                oof[held, j] = builder.votes(twin, rows, pool.embedded[held])
    return oof, False


def _check_columns(spec: SynthSpec, names: list[str], ref: str, table: Any) -> None:
    have = [c for c in names if c != "_row_id"]
    for column in (spec.column, *spec.numeric_columns):
        if column not in have:
            raise LabelingError(f"{ref} has no column {column!r} (columns: {', '.join(have)})")
    import pyarrow as pa

    if not pa.types.is_string(table.schema.field(spec.column).type) and not (
        pa.types.is_large_string(table.schema.field(spec.column).type)
    ):
        raise LabelingError(
            f"{ref}: column {spec.column!r} is {table.schema.field(spec.column).type}, not text"
        )
    for column in spec.numeric_columns:
        kind = table.schema.field(column).type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
            raise LabelingError(f"{ref}: column {column!r} is {kind}, not numeric")


def _unique(candidates: list[Candidate]) -> list[Candidate]:
    """The first candidate of each key (generators run in a fixed order)."""
    seen: dict[tuple[str, ...], Candidate] = {}
    for candidate in candidates:
        seen.setdefault(candidate.key, candidate)
    return list(seen.values())


class _Builder:
    """Candidates as the LFs the file will hold (built once each), and their votes."""

    def __init__(self, labels: tuple[str, ...], column: str, embed: Any) -> None:
        self.labels, self.column, self.embed = labels, column, embed
        self._built: dict[str, LabelingFunction] = {}

    def lf(self, candidate: Candidate) -> LabelingFunction:
        key = repr(sorted(candidate.entry.items()))
        if key not in self._built:
            self._built[key] = build_lf(candidate.entry, self.labels, self.column, "synthesized")
        return self._built[key]

    def votes(self, candidate: Candidate, rows: list[dict[str, Any]], embedded: Array) -> Array:
        lf = self.lf(candidate)
        if isinstance(lf.function, Exemplars):
            values = lf.function.votes(embedded, self.embed(lf.function.texts))
            return np.array([-1 if v is None else self.labels.index(v) for v in values], np.int8)
        return np.array(lf.vote_many(rows), dtype=np.int8)


def render(
    spec: SynthSpec, intent: str, examples: Examples, ref: str, entries: list[dict[str, Any]]
) -> str:
    """The LF file: a header saying what made it, then labels, column and the LFs."""
    head = [
        f"# Labeling functions synthesized by fmforge label synth ({GENERATOR}); review them",
        "# with `fmforge label review`. Nothing here is code: each LF is declarative.",
        f"# intent: {intent}",
        f"# examples: {len(examples)} from {_oneline(examples.source)} "
        f"(blake3 {examples.digest[:16]}), seed {spec.seed}, dataset {ref}",
    ]
    body = yaml.dump(
        {"labels": list(examples.labels), "column": spec.column, "lfs": entries},
        Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100,
    )  # fmt: skip
    return "\n".join(head) + "\n" + body


class _Dumper(yaml.SafeDumper):
    """Block style, except short lists of short words (``keywords: [subscribe]``)."""


def _list(dumper: yaml.SafeDumper, value: list[Any]) -> yaml.Node:
    short = len(value) <= 8 and all(isinstance(v, str) and len(v) <= 40 for v in value)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=short)


_Dumper.add_representer(list, _list)


def _oneline(text: str) -> str:
    return " ".join(text.split())


def _propose(
    repo: Repository, version: Any, spec: SynthSpec, intent: str, examples: Examples,
    lfs: list[SynthLF],
) -> None:  # fmt: skip
    events = [
        LabelingFunctionProposed(
            {
                "proposal": lf.proposal,
                "version": version.id,
                "intent": intent,
                "examples": examples.digest,
                "seed": spec.seed,
                "generator": lf.generator,
                "generator_version": GENERATOR,
                "labels": list(examples.labels),
                "column": spec.column,
                "kind": lf.kind,
                "lf": lf.entry,
                "lf_version": lf.version,
                "scores": {
                    "oof_right": float(lf.oof_right),
                    "oof_votes": float(lf.oof_votes),
                    "coverage": round(lf.coverage, 6),
                },
            }
        )
        for lf in lfs
        if lf.new
    ]
    if events:
        repo.record(STREAM_PREFIX + version.dataset, events)

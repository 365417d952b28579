"""Declarative cleaning: rules that drop or rewrite rows, previewed before they are applied.

Rules run in order, each on the rows the previous ones kept. A rule says, per row, "drop" or
"rewrite" (with the new values). ``preview`` reports per rule how many rows it would change and
examples; ``apply`` commits a new version whose transformation lists the rules and points at a
changes object (Parquet: the row id, the rule, drop or rewrite, the new row id), so every change
is traceable to its rule. Rules, as YAML (or the same as Python objects)::

    column: text                      # the default column of text rules
    rules:
      - drop_empty: {}
      - dedup: {mode: exact}          # or normalized (case, spacing and punctuation folded)
      - near_dedup: {threshold: 0.8}  # MinHash/LSH over character shingles
      - drop: {regex: "^\\s*$"}       # also keywords: [...], min_length / max_length, sql: "..."
      - keep: {sql: "label IS NOT NULL"}
      - redact: {kinds: [email, phone, url, ip, credit_card], replacement: "[{kind}]"}
      - language: {keep: [en], min_probability: 0.8}   # needs langdetect
      - python: {function: "my_rules:drop_spam"}   # f(table, column) -> list of drop flags
"""

from __future__ import annotations

import importlib
import io
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from fmforge.data.filters import check_filter, mask
from fmforge.data.minhash import near_duplicate_groups
from fmforge.data.storage import ROW_ID, row_ids
from fmforge.data.text import normalize
from fmforge.data.versions import AddResult, commit_table, read_table, resolve
from fmforge.errors import CleaningError, InvalidFilter
from fmforge.repository import Repository

PII_PATTERNS = {
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
    "url": r"\b(?:https?://|www\.)[^\s<>\"']+",
    "ip": r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b",
    "credit_card": r"\b(?:\d[ -]?){13,16}\b",
    "phone": (
        r"(?<!\w)(?:\+?\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?)?"  # country code, area code
        r"\d{3,4}(?:[ .-]?\d{3,4}){1,2}(?!\w)"
    ),
}
_ORDER = ("email", "url", "ip", "credit_card", "phone")  # longest-reaching patterns first


@dataclass
class Decision:
    """What one rule did to the rows it saw: dropped positions and rewritten values."""

    dropped: list[int] = field(default_factory=list)
    rewritten: dict[int, dict[str, Any]] = field(default_factory=dict)


class Rule:
    kind = ""

    def __init__(self, column: str, **options: Any) -> None:
        self.column = column
        self.options = options

    def describe(self) -> dict[str, Any]:
        return {self.kind: {"column": self.column, **self.options}}

    def decide(self, table: pa.Table) -> Decision:
        raise NotImplementedError

    def _texts(self, table: pa.Table) -> list[str | None]:
        if self.column not in table.column_names:
            raise CleaningError(
                f"rule {self.kind}: no column {self.column!r} (columns: "
                f"{', '.join(c for c in table.column_names if c != ROW_ID)})"
            )
        return [None if v is None else str(v) for v in table.column(self.column).to_pylist()]


class DropEmpty(Rule):
    kind = "drop_empty"

    def decide(self, table: pa.Table) -> Decision:
        texts = self._texts(table)
        return Decision([i for i, t in enumerate(texts) if t is None or not t.strip()])


class Dedup(Rule):
    """Keep the first of rows whose text is equal (``exact``) or equal once case, accents,
    spacing and punctuation are folded (``normalized``)."""

    kind = "dedup"

    def decide(self, table: pa.Table) -> Decision:
        mode = self.options.get("mode", "exact")
        if mode not in ("exact", "normalized"):
            raise CleaningError(f"rule dedup: mode must be exact or normalized, not {mode!r}")
        seen: set[str] = set()
        dropped = []
        for i, text in enumerate(self._texts(table)):
            if text is None:
                continue
            key = text if mode == "exact" else normalize(text)
            if key in seen:
                dropped.append(i)
            seen.add(key)
        return Decision(dropped)


class NearDedup(Rule):
    """Keep the first of each cluster of near-duplicates: MinHash/LSH estimate of the Jaccard
    similarity of character shingles at or above ``threshold`` (default 0.8)."""

    kind = "near_dedup"

    def __init__(self, column: str, **options: Any) -> None:
        super().__init__(column, **options)
        unknown = set(options) - {"threshold", "permutations", "shingle"}
        if unknown:
            raise CleaningError(f"rule near_dedup: unknown options {sorted(unknown)}")
        self.threshold = float(options.get("threshold", 0.8))
        if not 0 < self.threshold <= 1:
            raise CleaningError(
                f"rule near_dedup: threshold must be in (0, 1], not {self.threshold}"
            )

    def decide(self, table: pa.Table) -> Decision:
        texts = self._texts(table)
        present = [i for i, t in enumerate(texts) if t]
        groups = near_duplicate_groups(
            [texts[i] or "" for i in present], threshold=self.threshold,
            permutations=int(self.options.get("permutations", 64)),
            shingle=int(self.options.get("shingle", 5)),
        )  # fmt: skip
        return Decision([present[k] for k, first in enumerate(groups) if first != k])


class Filter(Rule):
    """``drop`` (or ``keep``) rows matching all the given conditions: a regex, any of some
    keywords (whole words, case-insensitive), a length range, an SQL condition over the row."""

    def __init__(self, column: str, *, keep: bool, **options: Any) -> None:
        super().__init__(column, **options)
        self.kind = "keep" if keep else "drop"
        known = {"regex", "keywords", "min_length", "max_length", "sql"}
        unknown = set(options) - known
        if unknown or not options:
            raise CleaningError(
                f"rule {self.kind}: give one or more of {', '.join(sorted(known))}"
                + (f" (unknown: {', '.join(sorted(unknown))})" if unknown else "")
            )
        self.keep = keep
        try:
            self.regex = re.compile(options["regex"]) if "regex" in options else None
        except re.error as error:
            raise CleaningError(
                f"rule {self.kind}: bad regex {options['regex']!r}: {error}"
            ) from None
        _check_sql(self.kind, options)
        words = options.get("keywords")
        self.keywords = (
            re.compile(r"\b(?:" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE)
            if words
            else None
        )

    def decide(self, table: pa.Table) -> Decision:
        needs_text = (
            self.regex
            or self.keywords
            or "min_length" in self.options
            or ("max_length" in self.options)
        )
        texts = self._texts(table) if needs_text else [None] * table.num_rows
        matches = [True] * table.num_rows
        if "sql" in self.options:
            matches = _sql_mask(table, self.options["sql"], self.kind)
        low = self.options.get("min_length", 0)
        high = self.options.get("max_length", float("inf"))
        for i, text in enumerate(texts):
            if not matches[i] or not needs_text:
                continue
            value = text or ""
            matches[i] = (
                (self.regex is None or bool(self.regex.search(value)))
                and (self.keywords is None or bool(self.keywords.search(value)))
                and ("min_length" not in self.options or len(value) >= low)
                and ("max_length" not in self.options or len(value) <= high)
            )
        return Decision([i for i, hit in enumerate(matches) if hit != self.keep])


class Redact(Rule):
    """Replace emails, URLs, IP addresses, credit-card-like numbers and phone numbers with a
    token (``[{kind}]`` by default)."""

    kind = "redact"

    def __init__(self, column: str, **options: Any) -> None:
        super().__init__(column, **options)
        kinds = options.get("kinds", list(_ORDER))
        unknown = [k for k in kinds if k not in PII_PATTERNS]
        if unknown:
            raise CleaningError(
                f"rule redact: unknown kinds {unknown} (known: {', '.join(PII_PATTERNS)})"
            )
        self.patterns = [(k, re.compile(PII_PATTERNS[k])) for k in _ORDER if k in kinds]
        self.replacement = str(options.get("replacement", "[{kind}]"))

    def redact(self, text: str) -> str:
        for kind, pattern in self.patterns:
            text = pattern.sub(self.replacement.format(kind=kind.upper()), text)
        return text

    def decide(self, table: pa.Table) -> Decision:
        decision = Decision()
        for i, text in enumerate(self._texts(table)):
            if text:
                new = self.redact(text)
                if new != text:
                    decision.rewritten[i] = {self.column: new}
        return decision


class Language(Rule):
    """Keep rows whose detected language is one of ``keep`` (ISO 639-1 codes); a row whose
    language is detected with less than ``min_probability`` is kept (too short to tell).
    Needs the ``langdetect`` package (seeded, so the result is the same on every run)."""

    kind = "language"

    def __init__(self, column: str, **options: Any) -> None:
        super().__init__(column, **options)
        try:
            from langdetect import DetectorFactory
        except ImportError:
            raise CleaningError(
                "rule language needs a language detector: pip install langdetect"
            ) from None
        DetectorFactory.seed = 0
        keep = options.get("keep")
        if not keep or not isinstance(keep, list):
            raise CleaningError("rule language: give keep: [codes], e.g. [en]")
        self.keep = {str(code) for code in keep}
        self.minimum = float(options.get("min_probability", 0.8))

    def decide(self, table: pa.Table) -> Decision:
        from langdetect import detect_langs
        from langdetect.lang_detect_exception import LangDetectException

        dropped = []
        for i, text in enumerate(self._texts(table)):
            try:
                best = detect_langs(text or "")[0]
            except LangDetectException:  # no letters to judge by
                continue
            if best.prob >= self.minimum and best.lang not in self.keep:
                dropped.append(i)
        return Decision(dropped)


class PythonRule(Rule):
    """A function by import path, ``module:function(table, column) -> sequence of bools``
    (True: drop the row)."""

    kind = "python"

    def __init__(self, column: str, **options: Any) -> None:
        super().__init__(column, **options)
        target = str(options.get("function", ""))
        module, _, name = target.partition(":")
        try:
            self.function: Callable[[pa.Table, str], Sequence[bool]] = getattr(
                importlib.import_module(module), name
            )
        except (ImportError, AttributeError, ValueError):
            raise CleaningError(
                f"rule python: cannot import {target!r} (write it as module:function)"
            ) from None

    def decide(self, table: pa.Table) -> Decision:
        flags = list(self.function(table.drop_columns([ROW_ID]), self.column))
        if len(flags) != table.num_rows:
            raise CleaningError(
                f"rule python {self.options['function']}: returned {len(flags)} flags for "
                f"{table.num_rows} rows"
            )
        return Decision([i for i, drop in enumerate(flags) if drop])


def _sql_mask(table: pa.Table, condition: str, kind: str) -> list[bool]:
    """Per row: whether the filter holds (one expression over the columns, as ``--where``)."""
    return mask(table, condition, source=f"rule {kind}: sql {condition!r}")


def _check_sql(kind: str, options: dict[str, Any]) -> None:
    """Refuse an ``sql:`` option that is not one filter expression before any row is read
    (the columns are checked when the rule runs)."""
    if "sql" in options:
        if not isinstance(options["sql"], str):
            raise InvalidFilter(f"rule {kind}: sql must be a string, not {options['sql']!r}")
        check_filter(options["sql"], source=f"rule {kind}: sql {options['sql']!r}")


_KINDS: dict[str, Callable[..., Rule]] = {
    "drop_empty": DropEmpty,
    "dedup": Dedup,
    "near_dedup": NearDedup,
    "drop": lambda column, **o: Filter(column, keep=False, **o),
    "keep": lambda column, **o: Filter(column, keep=True, **o),
    "redact": Redact,
    "language": Language,
    "python": PythonRule,
}


def load_rules(source: str | Path | dict[str, Any]) -> list[Rule]:
    """Rules from a YAML file, YAML text or the parsed mapping."""
    if isinstance(source, Path):
        try:
            text = source.read_text()
        except OSError as error:
            raise CleaningError(f"{source}: {error.strerror}") from None
        spec = _parse(text, str(source))
    elif isinstance(source, str):
        spec = _parse(source, "rules")
    else:
        spec = source
    if not isinstance(spec, dict) or not isinstance(spec.get("rules"), list):
        raise CleaningError("rules: expected a mapping with a 'rules' list")
    default_column = str(spec.get("column", "text"))
    rules = []
    for number, entry in enumerate(spec["rules"], 1):
        if not isinstance(entry, dict) or len(entry) != 1:
            raise CleaningError(f"rule {number}: write each rule as 'kind: {{options}}'")
        ((kind, options),) = entry.items()
        if kind not in _KINDS:
            raise CleaningError(
                f"rule {number}: unknown kind {kind!r} (known: {', '.join(_KINDS)})"
            )
        options = dict(options or {})
        column = str(options.pop("column", default_column))
        try:
            rules.append(_KINDS[kind](column, **options))
        except TypeError as error:
            raise CleaningError(f"rule {number} ({kind}): {error}") from None
    return rules


def _parse(text: str, name: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise CleaningError(f"{name}:{where}: not valid YAML") from None


@dataclass
class RuleReport:
    rule: dict[str, Any]
    dropped: int
    rewritten: int
    examples: list[dict[str, Any]]
    overridden: int = 0  # changes the rule would make that a reviewer overrode


@dataclass
class CleaningPlan:
    source: str  # NAME@vN
    rows_before: int
    rows_after: int
    reports: list[RuleReport]
    table: pa.Table  # the cleaned rows, with their original ids where unchanged
    changes: pa.Table  # row_id, rule, action, new_row_id


def plan_cleaning(
    repo: Repository,
    target: str,
    rules: Sequence[Rule],
    *,
    examples: int = 3,
    overrides: set[tuple[str, str]] | None = None,
) -> CleaningPlan:
    """What ``rules`` would do to ``target``, without recording anything. A change a reviewer
    overrode (``overrides``: (row id, rule key); default: the dataset's standing verdicts) is
    not made."""
    from fmforge.data.review import overrides as standing_overrides
    from fmforge.data.views import rule_key

    version = resolve(repo, target)
    if overrides is None:
        overrides = standing_overrides(repo, version.dataset)
    table = read_table(repo, version.ref, with_ids=True)
    reports = []
    changes: list[tuple[str, int, str, str | None]] = []
    for number, rule in enumerate(rules):
        decision = rule.decide(table)
        ids = table.column(ROW_ID).to_pylist()
        key = rule_key(rule.describe())
        overridden = {i for i, row_id in enumerate(ids) if (row_id, key) in overrides}
        kept = len(overridden.intersection(decision.dropped)) + len(
            overridden.intersection(decision.rewritten)
        )
        decision.dropped = [i for i in decision.dropped if i not in overridden]
        decision.rewritten = {i: v for i, v in decision.rewritten.items() if i not in overridden}
        shown = []
        for position in decision.dropped[:examples]:
            row = {k: v for k, v in table.slice(position, 1).to_pylist()[0].items() if k != ROW_ID}
            shown.append({"action": "drop", "row": row})
        for position, values in list(decision.rewritten.items())[:examples]:
            before = {c: table.column(c)[position].as_py() for c in values}
            shown.append({"action": "rewrite", "before": before, "after": values})
        reports.append(
            RuleReport(rule.describe(), len(decision.dropped), len(decision.rewritten), shown, kept)
        )
        for position in decision.dropped:
            changes.append((ids[position], number, "drop", None))
        if decision.rewritten:
            table = _rewrite(table, decision.rewritten, changes, number)
        if decision.dropped:
            gone = set(decision.dropped)
            table = table.filter(pa.array([i not in gone for i in range(table.num_rows)]))
    change_table = pa.table(
        {
            "row_id": pa.array([c[0] for c in changes], pa.string()),
            "rule": pa.array([c[1] for c in changes], pa.int32()),
            "action": pa.array([c[2] for c in changes], pa.string()),
            "new_row_id": pa.array([c[3] for c in changes], pa.string()),
        }
    )
    return CleaningPlan(version.ref, version.rows, table.num_rows, reports, table, change_table)


def _rewrite(
    table: pa.Table,
    rewritten: dict[int, dict[str, Any]],
    changes: list[tuple[str, int, str, str | None]],
    number: int,
) -> pa.Table:
    """Apply the new values; a rewritten row gets a new id (its record changed)."""
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    for position, values in rewritten.items():
        for name, value in values.items():
            columns[name][position] = value
    data = {n: pa.array(v, table.schema.field(n).type) for n, v in columns.items() if n != ROW_ID}
    fresh = row_ids(pa.table(data))
    ids = columns[ROW_ID]
    for position in rewritten:
        changes.append((ids[position], number, "rewrite", fresh[position]))
        ids[position] = fresh[position]
    return pa.table({**data, ROW_ID: pa.array(ids, pa.string())}).select(table.column_names)


def apply_cleaning(
    repo: Repository, target: str, rules: Sequence[Rule], *, message: str | None = None
) -> tuple[CleaningPlan, AddResult]:
    """Commit the cleaned rows as the next version, with the changes object naming, for every
    dropped or rewritten row, the rule that did it."""
    plan = plan_cleaning(repo, target, rules)
    sink = io.BytesIO()
    pq.write_table(plan.changes, sink, compression="zstd")
    changes = repo.objects.put(sink.getvalue(), compress=False)
    version = resolve(repo, target)
    result = commit_table(
        repo, version.dataset, plan.table.drop_columns([ROW_ID]),
        plan.table.column(ROW_ID).to_pylist(),
        transformation={
            "kind": "clean", "source": version.id, "rules": [r.rule for r in plan.reports],
            "changes": changes, "dropped": plan.rows_before - plan.rows_after,
            "rewritten": sum(r.rewritten for r in plan.reports),
        },
        message=message or f"clean {plan.source}", parents=(version.id,),
        extra_refs=(changes,),
    )  # fmt: skip
    return plan, result

"""Labeling functions (LFs): Python functions, declarative LFs from YAML (the kinds of
``kinds.py``: keywords, regex, exemplars, threshold, default), and applying them to a dataset
version as a label matrix.

    @labeling_function("kw_subscribe", labels=["ham", "spam"])
    def subscribe(row):
        return "spam" if "subscribe" in row["text"].lower() else None   # None: abstain

An LF returns a class name, a class index, or None to abstain. A YAML LF file is checked field
by field when loaded (``LFSpec``), and an LF reading a column the version lacks is refused
before any LF runs. Each LF has a version: the
blake3 of its source (a Python function's code, or a YAML LF's definition), recorded with its
votes. ``apply_lfs`` builds the matrix (int8, -1 = abstain) in parallel across processes and
reuses every column whose LF version it has computed before on the same rows: editing one LF
recomputes one column. A ``default`` LF votes where no other LF of the set does, so it runs
last and its version is bound to the other LFs' versions (``bind_default``). Exemplar LFs
embed rows through the repository's embedding cache (``embedcache.py``).
"""

from __future__ import annotations

import importlib.util
import inspect
import multiprocessing as mp
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

import blake3
import numpy as np
import orjson
import pyarrow as pa
import zstandard
from pydantic import BaseModel, ConfigDict, Field

from fmforge.access import targets
from fmforge.access.mediation import mediated
from fmforge.data.events import LabelMatrixBuilt
from fmforge.data.labeling.kinds import (
    FEATURES,
    KINDS,
    Default,
    Embed,
    Exemplars,
    Keywords,
    Regex,
    Threshold,
)
from fmforge.data.userinput import SpecProblem, UserPattern, load_yaml, shown, validate_fields
from fmforge.data.versions import STREAM_PREFIX, read_table, resolve
from fmforge.data.views import DatasetVersion, DatasetWork
from fmforge.errors import LabelingError
from fmforge.repository import Repository

ABSTAIN = -1


@dataclass(frozen=True)
class LabelingFunction:
    name: str
    labels: tuple[str, ...]
    function: Callable[[dict[str, Any]], Any]
    kind: str  # python | keyword | regex | exemplar | threshold | default
    source: str  # what the version hashes: the code or the YAML definition
    columns: tuple[str, ...] = ()  # the columns it reads, where known (YAML LFs)
    origin: str = ""  # where it was defined, for messages ("lfs.yaml: LF 3 (kw_link)")
    after: tuple[str, ...] = ()  # a default LF: the versions of the LFs it falls back from

    @property
    def batched(self) -> bool:
        """Votes whole batches in this process (a model that must not be forked)."""
        return hasattr(self.function, "vote_many")

    @property
    def is_default(self) -> bool:
        return isinstance(self.function, Default)

    def vote_many(self, rows: list[dict[str, Any]], embed: Embed | None = None) -> list[int]:
        if isinstance(self.function, Exemplars):
            return [self._index(v) for v in self.function.vote_many(rows, embed)]
        if self.batched:
            values = self.function.vote_many(rows)  # type: ignore[attr-defined]
            return [self._index(value) for value in values]
        return [self.vote(row) for row in rows]

    @property
    def version(self) -> str:
        after = "\nafter " + ",".join(self.after) if self.after else ""
        return blake3.blake3((self.source + after).encode()).hexdigest()[:16]

    def vote(self, row: dict[str, Any]) -> int:
        return self._index(self.function(row))

    def _index(self, value: Any) -> int:
        if value is None or value == ABSTAIN:
            return ABSTAIN
        if isinstance(value, str):
            if value not in self.labels:
                raise LabelingError(
                    f"LF {self.name} voted {value!r}, not one of {', '.join(self.labels)}"
                )
            return self.labels.index(value)
        index = int(value)
        if not 0 <= index < len(self.labels):
            raise LabelingError(
                f"LF {self.name} voted {index}: classes are 0..{len(self.labels) - 1}"
            )
        return index

    def describe(self) -> dict[str, str]:
        return {"name": self.name, "kind": self.kind, "version": self.version}


def labeling_function(
    name: str | None = None, *, labels: Sequence[str]
) -> Callable[[Callable[[dict[str, Any]], Any]], LabelingFunction]:
    """Make a function of one row (a dict) an LF voting one of ``labels`` or None."""

    def wrap(function: Callable[[dict[str, Any]], Any]) -> LabelingFunction:
        try:
            source = inspect.getsource(function)
        except (OSError, TypeError):
            source = f"{function.__module__}.{function.__qualname__}"
        return LabelingFunction(
            name or function.__name__, tuple(labels), function, "python", source
        )

    return wrap


_Text = Annotated[str, Field(min_length=1)]


class LFSpec(BaseModel):
    """One YAML LF: a name, the label it votes, and the fields of exactly one kind (keywords,
    regex, exemplars, min/max for threshold, default)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    name: _Text = Field(description="a non-empty string, unique in the file")
    label: _Text | int | None = Field(None, description="one of the file's labels")
    column: _Text | None = Field(None, description="a column name (default: the file's column)")
    keywords: list[_Text] | None = Field(
        None, min_length=1, description="a list of one or more non-empty strings"
    )
    regex: str | None = Field(None, description="a regular expression (a string)")
    ignore_case: bool = Field(True, description="true or false")
    exemplars: dict[str, list[_Text]] | None = Field(
        None, min_length=1, description="a mapping of labels to lists of example texts"
    )
    threshold: float = Field(0.6, ge=-1, le=1, description="a number from -1 to 1")
    min: float | None = Field(None, description="a number")
    max: float | None = Field(None, description="a number")
    feature: str | None = Field(None, description=f"one of {', '.join(FEATURES)}")
    default: bool | None = Field(None, description="true")


def load_lfs(source: Path | str) -> list[LabelingFunction]:
    """LFs from a YAML file (the declarative kinds) or a Python file (its decorated LFs).
    Every field of a YAML file is checked before anything runs."""
    path = Path(source)
    if path.suffix == ".py":
        return _python_lfs(path)
    spec, name = load_yaml(path, LabelingError, "lfs")
    return parse_lfs(spec, name)


def parse_lfs(spec: Any, name: str) -> list[LabelingFunction]:
    """The LFs of a parsed YAML LF file (``name`` says where it came from, in messages)."""
    if (
        not isinstance(spec, dict)
        or not isinstance(spec.get("lfs"), list)
        or not spec.get("labels")
    ):
        raise LabelingError(f"{name}: expected 'labels' (class names) and an 'lfs' list")
    unknown = [str(k) for k in spec if k not in ("labels", "column", "lfs")]
    if unknown:
        raise LabelingError(f"{name}: unknown key {unknown[0]!r} (keys: labels, column, lfs)")
    labels = _labels(name, spec["labels"])
    column = spec.get("column", "text")
    if not isinstance(column, str) or not column:
        raise LabelingError(f"{name}: 'column' must be a column name, not {shown(column)}")
    if not spec["lfs"]:
        raise LabelingError(f"{name}: the 'lfs' list is empty")
    lfs = [_yaml_lf(name, n, entry, labels, column) for n, entry in enumerate(spec["lfs"], 1)]
    _check_unique(lfs, name)
    return lfs


def _labels(name: str, given: Any) -> tuple[str, ...]:
    if not isinstance(given, list) or not all(
        isinstance(v, str | int) and not isinstance(v, bool) for v in given
    ):
        raise LabelingError(
            f"{name}: 'labels' must be a list of class names (strings; quote yes/no/true/false)"
        )
    labels = tuple(str(label) for label in given)
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise LabelingError(f"{name}: 'labels' must name two or more distinct classes")
    return labels


def build_lf(entry: Any, labels: Sequence[str], column: str, where: str) -> LabelingFunction:
    """One LF from its YAML entry (a mapping), as a file of ``labels`` reading ``column``
    would make it: the same checks, the same version."""
    return _yaml_lf(where, 1, entry, tuple(labels), column)


def _yaml_lf(
    name: str, number: int, entry: Any, labels: tuple[str, ...], column: str
) -> LabelingFunction:
    lf_name = entry.get("name") if isinstance(entry, dict) else None
    where = f"{name}: LF {number}" + (
        f" ({lf_name})" if isinstance(lf_name, str) and lf_name else ""
    )
    try:
        spec = validate_fields(LFSpec, entry, "field")
    except SpecProblem as problem:
        raise LabelingError(f"{where}: {problem}") from None
    given = [k for k in KINDS.values() if any(getattr(spec, f) is not None for f in k.fields)]
    if len(given) != 1:
        raise LabelingError(
            f"{where}: give exactly one of keywords, regex, exemplars, min/max (threshold) "
            "or default"
        )
    (kind,) = given
    for owner in KINDS.values():
        for option in owner.options:
            if option in entry and owner is not kind:
                raise LabelingError(f"{where}: {option} applies to {owner.noun} LFs only")
    if spec.label is None and kind.name != "exemplar":
        raise LabelingError(f"{where}: needs the label it votes (one of {', '.join(labels)})")
    label = str(spec.label if spec.label is not None else labels[0])
    if label not in labels:
        raise LabelingError(f"{where}: votes {label!r}, not one of {', '.join(labels)}")
    definition = orjson.dumps({"column": column, **entry}, option=orjson.OPT_SORT_KEYS).decode()
    col = spec.column or column
    function = _build(spec, kind.name, col, label, labels, where)
    columns = () if kind.name == "default" else (col,)
    return LabelingFunction(
        spec.name, labels, function, kind.name, definition, columns=columns, origin=where
    )


def _build(
    spec: LFSpec, kind: str, column: str, label: str, labels: tuple[str, ...], where: str
) -> Callable[[dict[str, Any]], Any]:
    """The callable of one validated YAML LF of ``kind``."""
    if kind == "keyword":
        return Keywords(column, spec.keywords or [], label)
    if kind == "regex":
        pattern = UserPattern(spec.regex or "", where, LabelingError, ignore_case=spec.ignore_case)
        return Regex(column, pattern, label)
    if kind == "exemplar":
        exemplars = spec.exemplars or {}
        strangers = [k for k in exemplars if k not in labels]
        if strangers:
            raise LabelingError(
                f"{where}: exemplars for {strangers[0]!r}, not one of {', '.join(labels)}"
            )
        return Exemplars(column, {k: list(v) for k, v in exemplars.items()}, spec.threshold)
    if kind == "threshold":
        if spec.feature is not None and spec.feature not in FEATURES:
            raise LabelingError(
                f"{where}: field 'feature' must be one of {', '.join(FEATURES)}, "
                f"not {shown(spec.feature)}"
            )
        if spec.min is not None and spec.max is not None and spec.min > spec.max:
            raise LabelingError(f"{where}: min {spec.min:g} is above max {spec.max:g}")
        return Threshold(column, label, spec.min, spec.max, spec.feature)
    if spec.default is not True:
        raise LabelingError(f"{where}: field 'default' must be true (or leave it out)")
    return Default(label)


def _python_lfs(path: Path) -> list[LabelingFunction]:
    name = f"fmforge_lfs_{blake3.blake3(str(path.resolve()).encode()).hexdigest()[:12]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None or not path.exists():
        raise LabelingError(f"{path}: no such Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # so worker processes can unpickle what it defines
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # the user's module: report what failed, with where
        raise LabelingError(
            f"{path}: importing it failed: {type(error).__name__}: {error}"
        ) from None
    lfs = [v for v in vars(module).values() if isinstance(v, LabelingFunction)]
    if not lfs:
        raise LabelingError(f"{path}: no @labeling_function in it")
    _check_unique(lfs, str(path))
    return lfs


def _check_unique(lfs: Sequence[LabelingFunction], name: str) -> None:
    names = [lf.name for lf in lfs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise LabelingError(f"{name}: LF names must be unique: {', '.join(repeated)}")
    if len({lf.labels for lf in lfs}) > 1:
        raise LabelingError(f"{name}: every LF must vote over the same labels")
    defaults = [lf.name for lf in lfs if lf.is_default]
    if len(defaults) > 1:
        raise LabelingError(f"{name}: at most one default LF, not {', '.join(defaults)}")
    if defaults and len(defaults) == len(lfs):
        raise LabelingError(f"{name}: a default LF needs other LFs to fall back from")


def bind_default(lfs: Sequence[LabelingFunction]) -> list[LabelingFunction]:
    """``lfs`` with the default LF (if any) bound to the versions of the others: its votes
    depend on theirs, so its version does too."""
    _check_unique(lfs, "the LF set")
    others = sorted(lf.version for lf in lfs if not lf.is_default)
    return [replace(lf, after=tuple(others)) if lf.is_default else lf for lf in lfs]


def default_votes(lfs: Sequence[LabelingFunction], matrix: np.ndarray[Any, Any]) -> Any:
    """``matrix`` (rows x ``lfs``) with the default LF's column filled from the others'."""
    for j, lf in enumerate(lfs):
        if isinstance(lf.function, Default):
            others = np.delete(matrix, j, axis=1)
            matrix[:, j] = lf.function.column(others, lf.labels.index(lf.function.label))
    return matrix


# What forked workers read (set before the pool starts; nothing is pickled but the results).
_JOB: dict[str, Any] = {}


def _run_part(bounds: tuple[int, int]) -> bytes:
    rows, lfs = _JOB["rows"][bounds[0] : bounds[1]], _JOB["lfs"]
    votes = np.array([[lf.vote(row) for lf in lfs] for row in rows], dtype=np.int8)
    return votes.reshape(len(rows), len(lfs)).tobytes()


def _votes(rows: list[dict[str, Any]], lfs: Sequence[LabelingFunction], workers: int) -> Any:
    """(rows, LFs) int8 votes; across ``workers`` forked processes for large inputs."""
    _JOB.update(rows=rows, lfs=list(lfs))
    try:
        step = -(-len(rows) // workers)
        bounds = [(i, min(len(rows), i + step)) for i in range(0, len(rows), step)] or [(0, 0)]
        if workers > 1 and len(rows) >= 2000 and "fork" in mp.get_all_start_methods():
            with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
                parts = list(pool.map(_run_part, bounds))
        else:
            parts = [_run_part(b) for b in bounds]
    except LabelingError:
        raise
    except Exception as error:  # an LF that raised: say which error
        raise LabelingError(f"an LF failed: {type(error).__name__}: {error}") from None
    finally:
        _JOB.clear()
    return np.frombuffer(b"".join(parts), dtype=np.int8).reshape(len(rows), len(lfs))


@dataclass
class LabelMatrix:
    version: DatasetVersion
    lfs: list[dict[str, str]]  # name, kind, version
    labels: tuple[str, ...]
    matrix: np.ndarray[Any, Any]  # rows x LFs, int8
    row_ids: list[str]
    computed: list[str]  # LFs computed now (the others were reused)


@mediated("label", targets.dataset())
def apply_lfs(
    repo: Repository, target: str, lfs: Sequence[LabelingFunction], *, workers: int | None = None
) -> LabelMatrix:
    """The label matrix of ``lfs`` over ``target``'s rows, recorded as ``LabelMatrixBuilt``."""
    if not lfs:
        raise LabelingError("no labeling functions to apply")
    lfs = bind_default(lfs)
    version = resolve(repo, target)
    table = read_table(repo, version.ref, with_ids=True)
    _check_columns(lfs, table, version)
    row_ids = table.column("_row_id").to_pylist()
    known = _known_columns(repo, version)
    columns: dict[str, bytes] = {}
    todo = []
    for lf in lfs:
        digest = known.get(lf.version)
        if digest is not None and repo.objects.has(digest):
            columns[lf.name] = zstandard.ZstdDecompressor().decompress(repo.objects.get(digest))
        else:
            todo.append(lf)
    if todo:
        rows = table.drop_columns(["_row_id"]).to_pylist()
        plain = [lf for lf in todo if not lf.batched and not lf.is_default]
        if plain:
            votes = _votes(rows, plain, workers or os.cpu_count() or 1)
            for index, lf in enumerate(plain):
                columns[lf.name] = np.ascontiguousarray(votes[:, index]).tobytes()
        batched = [lf for lf in todo if lf.batched]
        if batched:
            from fmforge.data.labeling.embedcache import EmbeddingCache

            embed = EmbeddingCache(repo, version)
            for lf in batched:
                columns[lf.name] = np.array(lf.vote_many(rows, embed), dtype=np.int8).tobytes()
        for lf in todo:
            if lf.is_default:
                columns[lf.name] = np.full(len(row_ids), -1, np.int8).tobytes()
    matrix = np.stack([np.frombuffer(columns[lf.name], dtype=np.int8) for lf in lfs], axis=1)
    if any(lf.is_default for lf in todo):
        matrix = default_votes(lfs, matrix.copy())
        for j, lf in enumerate(lfs):
            columns[lf.name] = np.ascontiguousarray(matrix[:, j]).tobytes()
    stored = {}
    for lf in lfs:
        stored[lf.version] = repo.objects.put(
            zstandard.ZstdCompressor(level=3).compress(columns[lf.name]), compress=False
        )
    described = [{**lf.describe(), "column": stored[lf.version]} for lf in lfs]
    if todo or _last_matrix(repo, version) != described:  # nothing new: nothing to record
        _record_matrix(repo, version, lfs, described, todo, stored)
    return LabelMatrix(
        version, [lf.describe() for lf in lfs], lfs[0].labels, matrix.reshape(len(row_ids), -1),
        row_ids, [lf.name for lf in todo],
    )  # fmt: skip


def _check_columns(
    lfs: Sequence[LabelingFunction], table: pa.Table, version: DatasetVersion
) -> None:
    """Refuse an LF that reads a column the version does not have (it would never vote)."""
    have = [c for c in table.column_names if c != "_row_id"]
    for lf in lfs:
        for column in lf.columns:
            if column not in have:
                raise LabelingError(
                    f"{lf.origin or 'LF ' + lf.name}: reads column {column!r}, which "
                    f"{version.ref} does not have (columns: {', '.join(have)})"
                )


def _last_matrix(repo: Repository, version: DatasetVersion) -> list[dict[str, str]] | None:
    matrices = repo.view(DatasetWork).label_matrices(version.dataset, version.id)
    return matrices[-1] if matrices else None


def _record_matrix(
    repo: Repository,
    version: DatasetVersion,
    lfs: Sequence[LabelingFunction],
    described: list[dict[str, str]],
    todo: list[LabelingFunction],
    stored: dict[str, str],
) -> None:
    repo.record(
        STREAM_PREFIX + version.dataset,
        LabelMatrixBuilt(
            {"version": version.id, "labels": list(lfs[0].labels), "lfs": described,  # type: ignore[typeddict-item]
             "computed": [lf.name for lf in todo]},
            refs=tuple(sorted(set(stored.values()))),
        ),
    )  # fmt: skip


def _known_columns(repo: Repository, version: DatasetVersion) -> dict[str, str]:
    """LF version -> stored column, from earlier matrices over the same version."""
    known: dict[str, str] = {}
    for lfs in repo.view(DatasetWork).label_matrices(version.dataset, version.id):
        for lf in lfs:
            known[lf["version"]] = lf["column"]
    return known


def stale_lfs(
    repo: Repository, target: str, lfs: Sequence[LabelingFunction], *, sample: int = 1000
) -> dict[str, int]:
    """LFs whose recorded votes differ from running them again on (a sample of) the stored
    rows: name -> rows that differ. A recorded column of the same LF version must agree."""
    from fmforge.data.labeling.embedcache import EmbeddingCache

    lfs = bind_default(lfs)
    version = resolve(repo, target)
    known = _known_columns(repo, version)
    table = read_table(repo, version.ref)
    _check_columns(lfs, table, version)
    picked = np.sort(np.random.default_rng(0).permutation(table.num_rows)[:sample])
    rows = table.take(picked).to_pylist()
    embed = EmbeddingCache(repo, version, record=False)
    fresh = np.full((len(rows), len(lfs)), -1, np.int8)
    for j, lf in enumerate(lfs):
        if not lf.is_default:
            fresh[:, j] = lf.vote_many(rows, embed)
    fresh = default_votes(lfs, fresh)
    out = {}
    for j, lf in enumerate(lfs):
        digest = known.get(lf.version)
        if digest is None:
            continue
        raw = zstandard.ZstdDecompressor().decompress(repo.objects.get(digest))
        recorded = np.frombuffer(raw, dtype=np.int8)[picked]
        if np.any(recorded != fresh[:, j]):
            out[lf.name] = int(np.sum(recorded != fresh[:, j]))
    return out

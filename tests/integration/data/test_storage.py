"""How versions are stored: bytes a new version writes, chunks read by small answers, versions
written before manifest format 2, and forgetting rows whose chunks versions share."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import blake3
import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest

from fmforge.data import add_dataset, diff_datasets, head, read_table, resolve, where
from fmforge.data.cleaning import apply_cleaning, load_rules
from fmforge.data.lineage import forget, trace
from fmforge.data.storage import ROW_ID, load_manifest, manifest_ids
from fmforge.errors import DataError, ObjectNotFound
from fmforge.repository import Repository
from tests.clirunner import fm

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def write_csv(path: Path, texts: list[str], ids: list[int] | None = None) -> Path:
    """id, text, score: ``ids`` default to the rows' positions."""
    ids = list(range(len(texts))) if ids is None else ids
    path.write_text(
        "id,text,score\n"
        + "".join(f"{i},{t},{i % 1000 / 8}\n" for i, t in zip(ids, texts, strict=True))
    )
    return path


def texts(n: int) -> list[str]:
    rng = np.random.default_rng(n)
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
    return [" ".join(words[w] for w in row) + f" {i}" for i, row in enumerate(
        rng.integers(0, len(words), (n, 4)))]  # fmt: skip


def store_size(repo: Repository) -> int:
    """Bytes of every object file in the store."""
    objects = repo.root / ".fmforge" / "objects"
    return sum(p.stat().st_size for p in objects.rglob("*") if p.is_file())


def added(repo: Repository, name: str, path: Path) -> int:
    """Add ``path`` as the next version of ``name``: the bytes the store grew by."""
    before = store_size(repo)
    assert add_dataset(repo, name, path).created
    return store_size(repo) - before


def manifest(repo: Repository, target: str) -> dict[str, Any]:
    return load_manifest(repo.objects, resolve(repo, target).manifest)


def test_an_edit_stores_the_rows_it_changed_not_a_copy(repo: Repository, tmp_path: Path) -> None:
    rows = texts(100_000)
    first = added(repo, "d", write_csv(tmp_path / "a.csv", rows))
    assert len(manifest(repo, "d")["chunks"]) >= 10  # content-defined: about 4,000 rows each
    rng = np.random.default_rng(1)
    edited = list(rows)
    for i in rng.choice(len(rows), 1000, replace=False):  # 1% of the rows, anywhere
        edited[i] += " edited"
    assert added(repo, "d", write_csv(tmp_path / "b.csv", edited)) <= 0.05 * first
    assert read_table(repo, "d@v2").column("text").to_pylist() == edited
    assert read_table(repo, "d@v1").column("text").to_pylist() == rows

    one = list(edited)
    one[50_000] = "one row edited"
    third = added(repo, "d", write_csv(tmp_path / "c.csv", one))
    v3 = manifest(repo, "d@v3")
    new_chunks = [c for c in v3["chunks"] if c["digest"] in set(_refs(repo, "d", 3))]
    assert [c["rows"] for c in new_chunks] == [1]  # the edited row alone
    assert third <= 0.01 * first
    assert read_table(repo, "d@v3").column("text").to_pylist() == one

    ids = [i for i in range(len(one)) if i % 100 != 7] + list(range(len(one), len(one) + 1000))
    kept = [t for i, t in enumerate(one) if i % 100 != 7] + [f"appended {i}" for i in range(1000)]
    fourth = added(repo, "d", write_csv(tmp_path / "e.csv", kept, ids))  # 1% off, 1% appended
    assert fourth <= 0.05 * first
    assert read_table(repo, "d@v4").column("text").to_pylist() == kept
    assert add_dataset(repo, "d", write_csv(tmp_path / "f.csv", kept, ids)).created is False


def _refs(repo: Repository, name: str, number: int) -> tuple[str, ...]:
    events = repo.ledger.read_stream(f"dataset/{name}")
    return next(e for e in events if e.data["number"] == number).refs


def test_the_same_rows_make_the_same_chunks_in_any_dataset(
    repo: Repository, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "a.csv", texts(20_000))
    add_dataset(repo, "one", path)
    assert added(repo, "two", path) == 0  # the same chunks and manifest: all there already
    assert manifest(repo, "one")["chunks"] == manifest(repo, "two")["chunks"]
    two = next(iter(repo.ledger.read_stream("dataset/two")))
    one = next(iter(repo.ledger.read_stream("dataset/one")))
    assert set(two.refs) == set(one.refs)  # its event keeps them too, whoever wrote them


def _delete_chunks(repo: Repository, target: str, keep: set[int]) -> None:
    for number, chunk in enumerate(manifest(repo, target)["chunks"]):
        if number not in keep:
            repo.objects.path_of(chunk["digest"]).unlink()  # type: ignore[attr-defined]


def test_small_answers_read_only_the_chunks_they_need(repo: Repository, tmp_path: Path) -> None:
    rows = texts(30_000)
    add_dataset(repo, "d", write_csv(tmp_path / "a.csv", rows))
    chunks = manifest(repo, "d")["chunks"]
    assert len(chunks) >= 3
    target = chunks[1]["stats"]["id"][0]  # the second chunk's first id
    selective = f"id = {target} OR text = 'nothing'"  # texts start with alpha..hotel
    expected = where(repo, "d", selective).to_pylist()
    assert len(expected) == 1
    _delete_chunks(repo, "d", keep={0, 1})  # the others are gone: reading them would fail
    assert head(repo, "d", 5).column("text").to_pylist() == rows[:5]
    assert where(repo, "d", selective).to_pylist() == expected
    assert where(repo, "d", f"id BETWEEN {target} AND {target}").num_rows == 1
    assert where(repo, "d", f"id IN ({target}, -5) AND score IS NOT NULL").num_rows == 1
    code, out = fm(repo.root, "data", "show", "d", "--where", f"id = {target}")
    assert code == 0, out
    assert "(1 match)" in out
    with pytest.raises(ObjectNotFound):
        where(repo, "d", f"id > {target}")  # needs chunks that are gone
    with pytest.raises(ObjectNotFound):
        where(repo, "d", "length(text) > 3")  # a function: no chunk can be skipped


def test_diff_reads_only_the_rows_that_differ(repo: Repository, tmp_path: Path) -> None:
    rows = texts(30_000)
    add_dataset(repo, "d", write_csv(tmp_path / "a.csv", rows))
    edited = list(rows)
    edited[20_000] = "changed"
    add_dataset(repo, "d", write_csv(tmp_path / "b.csv", edited))
    v1, v2 = manifest(repo, "d@v1"), manifest(repo, "d@v2")
    holding = next(
        c["digest"] for c in v1["chunks"] if c["stats"]["id"][0] <= 20_000 <= c["stats"]["id"][1]
    )
    fresh = {c["digest"] for c in v2["chunks"]} - {c["digest"] for c in v1["chunks"]}
    assert len(fresh) == 1  # the edited row's chunk; v2 takes v1's others, and the rest of its
    for chunk in v1["chunks"]:
        if chunk["digest"] != holding:
            repo.objects.path_of(chunk["digest"]).unlink()  # type: ignore[attr-defined]
    report = diff_datasets(repo, "d@v1", "v2", key="id")
    assert (report.added, report.removed, report.changed, report.unchanged) == (0, 0, 1, 29_999)
    assert report.changed_by_column == {"text": 1}
    with pytest.raises(ObjectNotFound):
        read_table(repo, "d@v2")  # the chunks the diff did not need are really gone


def naive_diff(repo: Repository, old: str, new: str) -> tuple[int, int, int, list[Any], list[Any]]:
    a = read_table(repo, old, with_ids=True).to_pylist()
    b = read_table(repo, new, with_ids=True).to_pylist()
    a_ids, b_ids = {r[ROW_ID] for r in a}, {r[ROW_ID] for r in b}
    added = [{k: v for k, v in r.items() if k != ROW_ID} for r in b if r[ROW_ID] not in a_ids]
    removed = [{k: v for k, v in r.items() if k != ROW_ID} for r in a if r[ROW_ID] not in b_ids]
    return len(added), len(removed), len(a_ids & b_ids), added[:3], removed[:3]


def check(repo: Repository, pairs: list[tuple[str, str]]) -> None:
    for old, new in pairs:
        report = diff_datasets(repo, old, new)
        want = naive_diff(repo, old, new)
        got = (report.added, report.removed, report.unchanged,
               report.examples["added"], report.examples["removed"])  # fmt: skip
        assert got == want, (old, new)


def test_diffs_agree_with_comparing_whole_tables(repo: Repository, tmp_path: Path) -> None:
    rows = texts(12_000)
    add_dataset(repo, "d", write_csv(tmp_path / "a.csv", rows))
    shuffled = list(reversed(rows[:6000])) + rows[6000:] + ["new one", "new two"]
    add_dataset(repo, "d", write_csv(tmp_path / "b.csv", shuffled))
    apply_cleaning(repo, "d", load_rules("column: text\nrules:\n  - drop: {keywords: [golf]}\n"))
    add_dataset(repo, "e", write_csv(tmp_path / "c.csv", rows[::2]))
    pairs = [("d@v1", "d@v2"), ("d@v2", "d@v1"), ("d@v2", "d@v3"), ("d@v3", "d@v1"),
             ("d@v3", "e@v1"), ("e@v1", "d@v1")]  # fmt: skip
    check(repo, pairs)
    add_dataset(repo, "f", write_csv(tmp_path / "c.csv", rows[::2]))  # e's chunks, live in f
    done = forget(repo, "e", "id % 97 = 3", reason="test")
    assert not done.erased  # f's newest version holds them: kept, and said so
    assert done.kept_live == done.rows
    copied = [c for c in manifest(repo, "e@v2")["chunks"] if c.get("copied")]
    assert copied  # the rows e@v2 kept from e@v1's chunks, written again
    check(repo, [("e@v1", "e@v2"), ("e@v2", "e@v1"), ("e@v2", "f@v1"), ("e@v2", "d@v1")])


def test_forget_erases_every_chunk_holding_the_rows(repo: Repository, tmp_path: Path) -> None:
    rows = texts(20_000)
    first = added(repo, "d", write_csv(tmp_path / "a.csv", rows))
    edited = list(rows)
    edited[5] = "edited"
    add_dataset(repo, "d", write_csv(tmp_path / "b.csv", edited))  # shares v1's other chunks
    doomed = where(repo, "d", "id = 12345").column(ROW_ID).to_pylist()
    done = forget(repo, "d", "id = 12345", reason="request")
    assert done.erased
    assert done.kept_live == 0
    for path in (repo.root / ".fmforge" / "objects").rglob("*"):
        if path.is_file() and path.parent.name != "tmp":
            digest = path.parent.name + path.name
            try:
                ids = pq.read_table(io.BytesIO(repo.objects.get(digest)), columns=[ROW_ID])
            except Exception:  # not a row chunk
                continue
            assert doomed[0] not in ids.column(ROW_ID).to_pylist()
    left = read_table(repo, "d").column("text").to_pylist()
    assert left == [t for i, t in enumerate(edited) if i != 12345]
    for old in ("d@v1", "d@v2"):
        with pytest.raises(DataError, match="held rows that were later forgotten"):
            read_table(repo, old)
    written = next(e for e in repo.ledger.read_stream("dataset/d") if e.data.get("number") == 3)
    assert sum(repo.objects.size(d) for d in written.refs) < 0.5 * first  # not all again
    repo.verify()


def _canonical(table: Any) -> str:
    body = b"".join(
        orjson.dumps(row, option=orjson.OPT_SORT_KEYS, default=str) + b"\n"
        for row in table.to_pylist()
    )
    return blake3.blake3(body).hexdigest()


@pytest.fixture
def legacy(tmp_path: Path) -> Repository:
    root = tmp_path / "legacy"
    shutil.copytree(FIXTURES / "format1-datasets", root)
    return Repository.open(root)


def test_versions_written_in_format_1_read_back_exactly(legacy: Repository) -> None:
    expected = json.loads((FIXTURES / "format1-datasets.json").read_text())
    with legacy as repo:
        for ref, want in expected.items():
            assert manifest(repo, ref)["format"] == 1
            table = read_table(repo, ref, with_ids=True)
            assert table.num_rows == want["rows"]
            assert [f"{f.name}: {f.type}" for f in table.schema] == want["schema"]
            assert (
                json.loads(json.dumps(table.slice(0, 1).to_pylist()[0], default=str))
                == (want["first"])
            )
            assert _canonical(table) == want["blake3"], ref
            ids = table.column(ROW_ID).to_pylist()
            assert manifest_ids(repo.objects, manifest(repo, ref)) == ids
            assert (
                head(repo, ref, 7).to_pylist()
                == table.drop_columns([ROW_ID]).slice(0, 7).to_pylist()
            )
            hits = where(repo, ref, "id % 10 = 3" if ref.startswith("legacy") else "n = 3")
            assert hits.num_rows > 0
        repo.verify()


def test_format_1_versions_diff_trace_forget_and_grow(legacy: Repository, tmp_path: Path) -> None:
    with legacy as repo:
        for old, new in (("legacy@v1", "legacy@v2"), ("legacy@v2", "legacy@v3"),
                         ("legacy@v3", "legacy@v1")):  # fmt: skip
            report = diff_datasets(repo, old, new)
            want = naive_diff(repo, old, new)
            assert (report.added, report.removed, report.unchanged) == want[:3]
        rows = read_table(repo, "legacy").to_pylist()
        path = tmp_path / "more.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in [*rows, {**rows[0], "id": -1}]))
        grown = add_dataset(repo, "legacy", path)  # written in format 2 beside format 1
        assert manifest(repo, grown.version.ref)["format"] == 2
        assert read_table(repo, grown.version.ref).to_pylist()[:-1] == rows
        report = diff_datasets(repo, "legacy@v3", grown.version.ref)
        assert (report.added, report.removed) == (1, 0)
        row_id = where(repo, "legacy@v1", "id = 42").column(ROW_ID).to_pylist()[0]
        found = trace(repo, row_id)
        assert [v["ref"] for v in found.versions] == ["legacy@v1", "legacy@v2", "legacy@v3",
                                                      grown.version.ref]  # fmt: skip
        done = forget(repo, "legacy", "id = 42", reason="request")
        assert done.rows == 1
        assert len(done.erased) >= 2  # format-1 and format-2 chunks
        for ref in ("legacy@v1", grown.version.ref):
            with pytest.raises(DataError, match="later forgotten"):
                read_table(repo, ref)
        assert where(repo, "legacy", "id = 42").num_rows == 0
        assert read_table(repo, "small").num_rows == 3
        repo.verify()

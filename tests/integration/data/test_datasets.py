"""Versioned datasets on a real repository: round trips, shared rows, errors that lose nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fmforge.data import add_dataset, dataset_log, diff_datasets, query, read_table, resolve
from fmforge.data.storage import row_ids
from fmforge.errors import InvalidDataSource, SchemaClash
from fmforge.repository import Repository
from tests.clirunner import fm

SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "data"


def comments() -> list[dict[str, object]]:
    from importlib import resources

    text = resources.files("fmforge").joinpath("demo_data/youtube_spam.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_version_gives_back_its_rows_and_same_records_keep_their_ids(
    repo: Repository, tmp_path: Path
) -> None:
    rows = comments()
    rows.append(dict(rows[0]))  # an exact duplicate keeps its own row and id
    first = add_dataset(repo, "yt", write_jsonl(tmp_path / "a.jsonl", rows))
    assert first.created
    assert first.version.ref == "yt@v1"
    assert read_table(repo, "yt").to_pylist() == rows
    ids = read_table(repo, "yt", with_ids=True).column("_row_id").to_pylist()
    assert len(set(ids)) == len(rows)

    again = add_dataset(repo, "yt", write_jsonl(tmp_path / "b.jsonl", rows))
    assert not again.created  # the same rows: nothing recorded
    assert [v.number for v in dataset_log(repo, "yt")] == [1]

    edited = [*rows[:-6], {**rows[3], "text": "an edited comment"}]
    second = add_dataset(repo, "yt", write_jsonl(tmp_path / "c.jsonl", edited))
    assert second.version.parents == (first.version.id,)
    assert read_table(repo, "yt@v1").to_pylist() == rows  # every version stays readable
    assert read_table(repo, "yt@latest~1").to_pylist() == rows
    assert read_table(repo, "yt@v2").to_pylist() == edited
    v2_ids = read_table(repo, "yt@v2", with_ids=True).column("_row_id").to_pylist()
    assert v2_ids[:10] == ids[:10]  # unchanged records, unchanged ids
    assert resolve(repo, f"yt@{second.version.id[:8]}").number == 2

    report = diff_datasets(repo, "yt@v1", "v2", key="text")
    assert (report.added, report.removed, report.changed) == (1, 6, 0)
    by_label = diff_datasets(repo, "yt@v1", "yt@v2")
    assert (by_label.added, by_label.removed, by_label.unchanged) == (1, 6, len(rows) - 6)


def test_versions_share_unchanged_rows(repo: Repository, tmp_path: Path) -> None:
    rows = [{"id": i, "text": f"record number {i}", "score": i * 0.5} for i in range(30_000)]
    add_dataset(repo, "big", write_jsonl(tmp_path / "a.jsonl", rows))
    rows[12_345]["text"] = "changed"
    add_dataset(repo, "big", write_jsonl(tmp_path / "b.jsonl", rows))
    events = list(repo.ledger.read_stream("dataset/big"))
    chunks = len(json.loads(repo.objects.get(events[0].data["manifest"]))["chunks"])
    assert chunks >= 4  # about one per 4,096 rows
    # The second version wrote one or two chunks (the changed row's id moved), its row order
    # and its manifest: the other chunks are shared.
    assert len(events[1].refs) <= 4
    report = diff_datasets(repo, "big@v1", "big@v2", key="id")
    assert (report.changed, report.added, report.removed) == (1, 0, 0)
    assert report.changed_by_column == {"text": 1}
    assert report.examples["changed"] == [
        {"id": 12_345, "text": ["record number 12345", "changed"]}
    ]


def test_bad_input_names_file_line_and_column_and_records_nothing(
    repo: Repository, tmp_path: Path
) -> None:
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("text,label\nhello,0\nbroken,1,extra\n")
    with pytest.raises(InvalidDataSource, match=r"bad.csv: line 3 has 3 fields where the header"):
        add_dataset(repo, "d", bad_csv)
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"text": "a", "label": 0}\n{"text": "b", "label": 1\n')
    with pytest.raises(InvalidDataSource, match=r"bad.jsonl: line 2, character 25: malformed JSON"):
        add_dataset(repo, "d", bad_json)
    clash = tmp_path / "clash.jsonl"
    clash.write_text('{"text": "a", "label": 0}\n{"text": "b", "label": "spam"}\n')
    with pytest.raises(
        InvalidDataSource, match=r"line 2, column 'label': a string where line 1 has an integer"
    ):
        add_dataset(repo, "d", clash)
    (tmp_path / "x.txt").write_text("text\n")
    with pytest.raises(InvalidDataSource, match=r"unsupported file type '\.txt'"):
        add_dataset(repo, "d", tmp_path / "x.txt")
    with pytest.raises(InvalidDataSource, match=r"missing\.csv: no such file"):
        add_dataset(repo, "d", tmp_path / "missing.csv")
    assert repo.ledger.stream_version("dataset/d") == 0  # nothing was recorded

    add_dataset(repo, "d", write_jsonl(tmp_path / "ok.jsonl", [{"text": "a", "label": 0}]))
    retyped = write_jsonl(tmp_path / "retyped.jsonl", [{"text": "a", "label": "spam"}])
    with pytest.raises(SchemaClash, match=r"column 'label' is string \(was int64\)"):
        add_dataset(repo, "d", retyped)
    assert [v.number for v in dataset_log(repo, "d")] == [1]
    assert add_dataset(repo, "d", retyped, allow_schema_change=True).version.number == 2


def test_directories_parquet_and_export_round_trip(repo: Repository, tmp_path: Path) -> None:
    rows = comments()
    folder = tmp_path / "parts"
    folder.mkdir()
    write_jsonl(folder / "1.jsonl", rows[:200])
    write_jsonl(folder / "2.jsonl", rows[200:])
    version = add_dataset(repo, "yt", folder).version
    assert version.rows == len(rows)
    for suffix in ("jsonl", "parquet", "csv"):
        code, out = fm(repo.root, "data", "export", "yt", "-o", str(tmp_path / f"out.{suffix}"))
        assert code == 0, out
        code, out = fm(repo.root, "data", "add", "yt", str(tmp_path / f"out.{suffix}"))
        assert code == 0, out
        assert "already holds exactly these rows: nothing recorded" in out, suffix
    pq.write_table(pa.table({"text": ["x"]}), folder / "3.parquet")
    with pytest.raises(InvalidDataSource, match=r"3.parquet: columns text: string differ"):
        add_dataset(repo, "yt", folder)
    spam = query(repo, "yt", "SELECT count(*) AS n FROM data WHERE label = 1").to_pylist()
    assert spam == [{"n": sum(1 for r in rows if r["label"] == 1)}]


def test_cli_add_log_show_diff_and_one_line_errors(repo: Repository, tmp_path: Path) -> None:
    rows = comments()
    write_jsonl(tmp_path / "a.jsonl", rows)
    code, out = fm(repo.root, "data", "add", "yt", str(tmp_path / "a.jsonl"), "-m", "raw")
    assert code == 0, out
    assert "yt@v1" in out
    assert "400 rows, 3 columns" in out
    write_jsonl(tmp_path / "b.jsonl", rows[:390])
    fm(repo.root, "data", "add", "yt", str(tmp_path / "b.jsonl"))
    code, out = fm(repo.root, "data", "log", "yt")
    assert code == 0
    assert out.index("v2") < out.index("v1")
    assert "add: raw" in out
    code, out = fm(repo.root, "data", "show", "yt@v1", "--where", "label = 1", "-n", "2")
    assert code == 0, out
    assert f"({sum(1 for r in rows if r['label'] == 1)} match)" in out
    code, out = fm(repo.root, "data", "diff", "yt@v1", "v2", "--json")
    assert json.loads(out)["removed"] == 10
    code, out = fm(repo.root, "data", "show", "nope")
    assert code == 1
    assert out.startswith("fmforge: error: no dataset 'nope'")
    code, out = fm(repo.root, "data", "show", "yt", "--where", "no_such_column = 1")
    assert code == 1
    assert "no_such_column" in out
    assert len(out.strip().splitlines()) == 1


def test_row_ids_are_content_hashes_of_records() -> None:
    table = pa.table({"a": [1, 1, 2], "b": ["x", "x", "y"]})
    ids = row_ids(table)
    assert ids[0] != ids[1]  # the repeat of a record
    assert ids[0] == row_ids(pa.table({"b": ["x"], "a": [1]}))[0]  # column order does not matter
    assert ids[2] == row_ids(pa.table({"a": [2], "b": ["y"]}))[0]


@pytest.mark.skipif(not (SHARED / "wrench_youtube").is_dir(), reason="needs ../shared/data")
def test_the_uci_youtube_csvs_as_one_dataset(repo: Repository) -> None:
    version = add_dataset(repo, "uci", SHARED / "wrench_youtube" / "raw_uci_csv").version
    assert version.rows == 1956
    assert [c["name"] for c in version.columns] == [
        "COMMENT_ID",
        "AUTHOR",
        "DATE",
        "CONTENT",
        "CLASS",
    ]


def test_merge_keeps_each_record_once_and_names_every_parent(
    repo: Repository, tmp_path: Path
) -> None:
    rows = comments()
    add_dataset(repo, "a", write_jsonl(tmp_path / "a.jsonl", rows[:250]))
    add_dataset(repo, "b", write_jsonl(tmp_path / "b.jsonl", rows[200:]))
    code, out = fm(repo.root, "data", "merge", "all", "a@v1", "b")
    assert code == 0, out
    assert "all@v1" in out
    merged = resolve(repo, "all")
    a_ids = read_table(repo, "a", with_ids=True).column("_row_id").to_pylist()
    b_ids = read_table(repo, "b", with_ids=True).column("_row_id").to_pylist()
    assert merged.rows == len(set(a_ids) | set(b_ids))  # a record in both is kept once
    assert merged.transformation["duplicates"] == len(set(a_ids) & set(b_ids)) >= 50
    assert merged.parents == (resolve(repo, "a").id, resolve(repo, "b").id)
    merged_rows = read_table(repo, "all").to_pylist()
    assert merged_rows[:250] == rows[:250]
    assert all(row in merged_rows for row in rows)
    add_dataset(repo, "c", write_jsonl(tmp_path / "c.jsonl", [{"other": 1}]))
    code, out = fm(repo.root, "data", "merge", "bad", "a", "c")
    assert code == 1
    assert "columns differ" in out

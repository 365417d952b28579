"""Labeling functions over a real dataset version: matrix, reuse, analysis, label model,
active learning, manual labels and stale matrices."""

from __future__ import annotations

import json
import textwrap
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from fmforge.data import add_dataset, read_table
from fmforge.data.labeling.functions import (
    LabelingError,
    apply_lfs,
    labeling_function,
    load_lfs,
    stale_lfs,
)
from fmforge.data.labeling.workflow import Gold, analyze, label_version, set_label, suggest
from fmforge.repository import Repository
from tests.clirunner import fm

SPAM_LFS = Path(str(resources.files("fmforge").joinpath("demo_data/spam_lfs.yaml")))
COMMENTS = Path(str(resources.files("fmforge").joinpath("demo_data/youtube_spam.jsonl")))
DEV = Gold(dev_splits=("test",))  # the sample's held-out split serves as the gold dev split


@pytest.fixture
def comments(repo: Repository) -> str:
    add_dataset(repo, "yt", COMMENTS)
    return "yt"


def test_matrix_votes_are_what_the_lfs_say_and_unchanged_lfs_are_reused(
    repo: Repository, comments: str, tmp_path: Path
) -> None:
    lfs = load_lfs(SPAM_LFS)
    matrix = apply_lfs(repo, comments, lfs, workers=1)
    assert matrix.matrix.shape == (400, len(lfs))
    assert matrix.matrix.dtype == np.int8
    rows = read_table(repo, comments).to_pylist()
    for j, lf in enumerate(lfs):
        assert matrix.matrix[:, j].tolist() == [lf.vote(r) for r in rows], lf.name
    assert sorted(matrix.computed) == sorted(lf.name for lf in lfs)

    edited = SPAM_LFS.read_text().replace("[money, free, win", "[money, free, prize, win")
    (tmp_path / "lfs.yaml").write_text(edited)
    again = apply_lfs(repo, comments, load_lfs(tmp_path / "lfs.yaml"), workers=2)
    assert again.computed == ["kw_money"]  # one LF changed: one column recomputed
    unchanged = [j for j, lf in enumerate(lfs) if lf.name != "kw_money"]
    assert np.array_equal(again.matrix[:, unchanged], matrix.matrix[:, unchanged])


def test_python_lfs_by_decorator_run_in_worker_processes(repo: Repository, tmp_path: Path) -> None:
    rows = [{"text": f"buy cheap stuff {i}" if i % 3 else f"nice song {i}"} for i in range(3000)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    add_dataset(repo, "d", tmp_path / "d.jsonl")
    (tmp_path / "my_lfs.py").write_text(
        textwrap.dedent("""
        from fmforge.data.labeling import labeling_function

        @labeling_function("cheap", labels=["ham", "spam"])
        def cheap(row):
            return "spam" if "cheap" in row["text"] else None

        @labeling_function(labels=["ham", "spam"])
        def song(row):
            return 0 if "song" in row["text"] else None
    """)
    )
    lfs = load_lfs(tmp_path / "my_lfs.py")
    assert [lf.name for lf in lfs] == ["cheap", "song"]
    matrix = apply_lfs(repo, "d", lfs, workers=2)
    expected_cheap = [1 if i % 3 else -1 for i in range(3000)]
    assert matrix.matrix[:, 0].tolist() == expected_cheap
    assert matrix.matrix[:, 1].tolist() == [-1 if i % 3 else 0 for i in range(3000)]

    @labeling_function("bad", labels=["ham", "spam"])
    def bad(row: dict[str, str]) -> str:
        return "eggs"

    with pytest.raises(LabelingError, match="LF bad voted 'eggs'"):
        apply_lfs(repo, "d", [bad], workers=1)


def test_analysis_model_and_labelled_version(repo: Repository, comments: str) -> None:
    matrix = apply_lfs(repo, comments, load_lfs(SPAM_LFS), workers=1)
    reports, warnings = analyze(repo, matrix, gold=DEV)
    by_name = {r.name: r for r in reports}
    assert by_name["kw_subscribe"].polarity == ["spam"]
    assert by_name["kw_subscribe"].accuracy is not None
    assert by_name["kw_subscribe"].accuracy > 0.8
    assert 0 < by_name["kw_song"].coverage < 1
    assert by_name["re_link"].fires  # examples of rows it votes on
    assert isinstance(warnings, list)

    _model, result = label_version(repo, matrix, gold=DEV)
    labelled = read_table(repo, result.version.ref)
    assert result.version.transformation["kind"] == "label"
    assert [lf["version"] for lf in result.version.transformation["lfs"]] == [
        lf["version"] for lf in matrix.lfs
    ]
    gold = np.array(labelled.column("label").to_pylist())
    names = labelled.column("weak_label").to_pylist()
    predicted = np.array([{"ham": 0, "spam": 1}.get(n, -1) for n in names])
    covered = predicted >= 0
    assert np.mean(predicted[covered] == gold[covered]) > 0.75
    # The labelled rows keep their ids: lineage follows them.
    assert read_table(repo, result.version.ref, with_ids=True).column("_row_id").to_pylist() == (
        matrix.row_ids
    )


def test_suggestions_manual_labels_and_stale_columns(
    repo: Repository, comments: str, tmp_path: Path
) -> None:
    lfs = load_lfs(SPAM_LFS)
    matrix = apply_lfs(repo, comments, lfs, workers=1)
    picks = suggest(repo, matrix, 10)
    assert len(picks) == 10
    assert picks[0][1] == "no LF votes on it"
    uncovered = {matrix.row_ids[i] for i in np.flatnonzero((matrix.matrix < 0).all(axis=1))}
    assert picks[0][0] in uncovered
    row_id = set_label(repo, comments, picks[0][0][:12], "spam", ["ham", "spam"])
    assert row_id not in [p[0] for p in suggest(repo, matrix, 10)]  # labelled: no longer asked
    _, result = label_version(repo, matrix, gold=DEV)
    labelled = read_table(repo, result.version.ref, with_ids=True).to_pylist()
    assert next(r for r in labelled if r["_row_id"] == row_id)["weak_label"] == "spam"
    with pytest.raises(LabelingError, match="not one of the labels"):
        set_label(repo, comments, row_id, "eggs", ["ham", "spam"])

    source = matrix.version.ref  # the version the matrix was built on (v2 is the labelled one)
    assert stale_lfs(repo, source, lfs) == {}
    # An LF whose code changed but whose recorded version did not (e.g. a dependency moved):
    # simulate it by giving another function the same source.
    original = next(lf for lf in lfs if lf.name == "kw_song")
    import dataclasses

    drifted = dataclasses.replace(original, function=lambda row: None)
    assert stale_lfs(repo, source, [drifted])["kw_song"] > 0


def test_cli_apply_analyze_model_suggest(repo: Repository, comments: str) -> None:
    code, out = fm(repo.root, "label", "apply", comments, "--lfs", str(SPAM_LFS))
    assert code == 0, out
    assert "400 rows x 9 LFs" in out
    code, out = fm(repo.root, "label", "apply", comments, "--lfs", str(SPAM_LFS))
    assert "computed none; reused 9" in out
    code, out = fm(repo.root, "label", "analyze", comments, "--lfs", str(SPAM_LFS),
                   "--dev-split", "test")  # fmt: skip
    assert code == 0, out
    assert "gold acc" in out
    (line,) = [row for row in out.splitlines() if row.startswith("kw_subscribe")]
    assert line.split()[1:2] == ["keyword"]
    code, out = fm(repo.root, "label", "model", comments, "--lfs", str(SPAM_LFS),
                   "--dev-split", "test")  # fmt: skip
    assert code == 0, out
    assert "recorded yt@v2" in out
    code, out = fm(repo.root, "label", "suggest", comments, "--lfs", str(SPAM_LFS), "--n", "3")
    assert code == 0, out
    assert len(out.strip().splitlines()) == 3
    code, out = fm(repo.root, "label", "check", comments, "--lfs", str(SPAM_LFS))
    assert code == 0, out
    code, out = fm(repo.root, "label", "apply", comments, "--lfs", "nope.yaml")
    assert code == 1
    assert "nope.yaml" in out


def test_exemplar_lfs_vote_by_similarity_to_labelled_examples(
    repo: Repository, comments: str, tmp_path: Path
) -> None:
    (tmp_path / "ex.yaml").write_text(
        textwrap.dedent("""
        labels: [ham, spam]
        lfs:
          - name: ex_promo
            exemplars:
              spam: ["check out my channel and subscribe", "visit my website for free money"]
              ham: ["I love this song so much", "her voice is beautiful"]
            threshold: 0.5
    """)
    )
    (lf,) = load_lfs(tmp_path / "ex.yaml")
    assert lf.kind == "exemplar"
    matrix = apply_lfs(repo, comments, [lf], workers=2)
    votes = matrix.matrix[:, 0]
    gold = np.array(read_table(repo, comments).column("label").to_pylist())
    voted = votes >= 0
    assert 0.1 < voted.mean() < 1.0  # it abstains below the threshold
    assert np.mean(votes[voted] == gold[voted]) > 0.75
    assert stale_lfs(repo, comments, [lf], sample=50) == {}

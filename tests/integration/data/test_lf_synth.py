"""`label synth` on 400 real YouTube comments: the same inputs give the same file and votes,
the review loop (a rejected LF never comes back; accepted LFs are the set `label model` uses),
the end model against the classifier of the 50 examples, the budget, the embedding cache, and
the threshold and default LF kinds."""

from __future__ import annotations

import json
import shutil
import time
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from fmforge.data import add_dataset, read_table, resolve
from fmforge.data.labeling.embedcache import EmbeddingCache
from fmforge.data.labeling.endmodel import EndModelSpec, end_model
from fmforge.data.labeling.functions import apply_lfs, load_lfs, stale_lfs
from fmforge.data.labeling.review import accepted_lfs, proposals, review
from fmforge.data.labeling.synth import SynthSpec, synthesize
from fmforge.data.labeling.workflow import label_version
from fmforge.data.userinput import backtracking_risk
from fmforge.data.views import SynthWork
from fmforge.errors import LabelingError
from fmforge.repository import Repository
from tests.clirunner import fm

COMMENTS = Path(str(resources.files("fmforge").joinpath("demo_data/youtube_spam.jsonl")))
INTENT = "comments that advertise a channel, link or giveaway"


def _examples(path: Path) -> Path:
    """25 spam and 25 ham comments of the train split, as JSON Lines."""
    rows = [json.loads(line) for line in COMMENTS.read_text().splitlines()]
    picked = [r for r in rows if r["split"] == "train" and r["label"] == 1][:25]
    picked += [r for r in rows if r["split"] == "train" and r["label"] == 0][:25]
    path.write_text("".join(
        json.dumps({"text": r["text"], "label": ["ham", "spam"][r["label"]]}) + "\n"
        for r in picked
    ))  # fmt: skip
    return path


@pytest.fixture(scope="module")
def warmed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository with the comments as dataset `yt` and their embeddings cached (one cold
    synthesis), and the examples file beside it."""
    root = tmp_path_factory.mktemp("synth")
    (root / "repo").mkdir()
    with Repository.init(root / "repo") as repo:
        add_dataset(repo, "yt", COMMENTS)
        synthesize(repo, spec(_examples(root / "examples.jsonl")))
    return root


@pytest.fixture
def store(warmed: Path, tmp_path: Path) -> Path:
    """A copy of the warmed repository (and the examples), for one test to change."""
    shutil.copytree(warmed, tmp_path / "w")
    return tmp_path / "w"


def spec(examples: Path, **fields: object) -> SynthSpec:
    given: dict[str, object] = {"target": "yt", "intent": INTENT, "examples": examples,
                                "labels": ("ham", "spam"), **fields}  # fmt: skip
    return SynthSpec.parse(**given)


class TestDeterminism:
    def test_the_same_inputs_and_seed_give_the_same_file_and_propose_once(
        self, store: Path
    ) -> None:
        examples = store / "examples.jsonl"
        with Repository.open(store / "repo") as repo:
            before = len(proposals(repo, "yt"))
            events = repo.ledger.count()
            result = synthesize(repo, spec(examples))
            assert result.embedded == 0  # every vector came from the cache
            assert not any(lf.new for lf in result.lfs)  # proposed by the warming run
            assert len(proposals(repo, "yt")) == before
            assert repo.ledger.count() == events
        assert result.stopped in ("no gain", "limit")
        assert result.lfs[-1].kind == "default"
        assert result.lfs[-1].generator == "default"
        assert f"# intent: {INTENT}" in result.yaml
        for n in (1, 2):
            code, out = fm(store / "repo", "label", "synth", "yt", "--intent", INTENT,
                           "--examples", str(examples), "--labels", "ham,spam",
                           "-o", str(store / f"lfs{n}.yaml"))  # fmt: skip
            assert code == 0, out
            assert "out-of-fold accuracy" in out
        assert (store / "lfs1.yaml").read_bytes() == (store / "lfs2.yaml").read_bytes()
        assert (store / "lfs1.yaml").read_text() == result.yaml
        lfs = load_lfs(store / "lfs1.yaml")
        assert [lf.name for lf in lfs] == [lf.name for lf in result.lfs]
        assert [lf.version for lf in lfs] == [lf.version for lf in result.lfs]
        kinds = {lf.kind for lf in lfs}
        assert {"keyword", "default"} <= kinds
        for lf in lfs:
            if lf.kind == "regex":
                assert backtracking_risk(lf.function.pattern.pattern) is None  # type: ignore[attr-defined]

    def test_replay_re_derives_identical_votes(self, store: Path) -> None:
        with Repository.open(store / "repo") as repo:
            result = synthesize(repo, spec(store / "examples.jsonl"))
            (store / "lfs.yaml").write_text(result.yaml)
            lfs = load_lfs(store / "lfs.yaml")
            matrix = apply_lfs(repo, "yt", lfs, workers=1)
            assert (matrix.matrix >= 0).any(axis=1).all()  # the default rule covers the rest
            assert stale_lfs(repo, "yt", lfs) == {}
            version = resolve(repo, "yt")
            fresh = EmbeddingCache(repo, version, record=False)
            rows = read_table(repo, "yt").to_pylist()
            for j, lf in enumerate(lfs):
                if not lf.is_default:
                    assert lf.vote_many(rows, fresh) == matrix.matrix[:, j].tolist(), lf.name
            # The out-of-fold votes the search scored are what the LFs say on the examples.
            in_sample = [lf.oof_votes for lf in result.lfs]
            assert result.oof_votes.shape == (len(result.example_labels), len(lfs))
            assert all(v <= len(result.example_labels) for v in in_sample)
        code, out = fm(store / "repo", "label", "check", "yt", "--lfs", str(store / "lfs.yaml"))
        assert code == 0, out


class TestReview:
    def test_a_rejected_lf_is_never_proposed_again_for_that_intent_and_examples(
        self, store: Path
    ) -> None:
        examples = store / "examples.jsonl"
        with Repository.open(store / "repo") as repo:
            first = synthesize(repo, spec(examples))
            victim = first.lfs[0]
        code, out = fm(store / "repo", "label", "review", "yt", "--reject", victim.name,
                       "--note", "too broad")  # fmt: skip
        assert code == 0, out
        assert f"rejected {victim.name}" in out
        with Repository.open(store / "repo") as repo:
            (rejected,) = [p for p in proposals(repo, "yt") if p.proposal == victim.proposal]
            assert (rejected.status, rejected.reviewer, rejected.note) == (
                "rejected", "tester@fmforge", "too broad",
            )  # fmt: skip
            for seed in (0, 1):
                again = synthesize(repo, spec(examples, seed=seed))
                assert victim.version not in [lf.version for lf in again.lfs]
                assert f"name: {victim.name}\n" not in again.yaml
                assert again.skipped_rejected >= 1
            # Another intent is another question: the LF may be proposed for it.
            other = synthesize(repo, spec(examples, intent="comments asking for subscribers"))
            assert other.skipped_rejected == 0
            index = repo.view(SynthWork)
            assert index.rejected("yt", INTENT, first.examples) == {victim.version}
        code, out = fm(store / "repo", "label", "review", "yt")
        assert code == 0, out
        assert "rejected" in out
        assert "pending" in out

    def test_accepted_lfs_are_the_set_label_model_uses_versioned_like_a_file(
        self, store: Path
    ) -> None:
        code, out = fm(store / "repo", "label", "model", "yt", "--lfs", "accepted")
        assert code == 1
        assert "has no accepted LFs" in out
        code, out = fm(store / "repo", "label", "review", "yt", "--accept-all",
                       "--write", str(store / "accepted.yaml"))  # fmt: skip
        assert code == 0, out
        assert "accepted " in out
        assert "wrote" in out
        written = load_lfs(store / "accepted.yaml")
        code, out = fm(store / "repo", "label", "model", "yt", "--lfs", "accepted",
                       "--dev-split", "test")  # fmt: skip
        assert code == 0, out
        with Repository.open(store / "repo") as repo:
            from_events = accepted_lfs(repo, "yt")
            assert [lf.version for lf in from_events] == [lf.version for lf in written]
            labelled = resolve(repo, "yt")
            recorded = labelled.transformation["lfs"]
            matrix = apply_lfs(repo, "yt@v1", written, workers=1)
            assert [lf["version"] for lf in recorded] == [lf["version"] for lf in matrix.lfs]
            assert [lf["name"] for lf in recorded] == [lf.name for lf in written]
            weak = read_table(repo, labelled.ref).column("weak_label").to_pylist()
            assert None not in weak  # the accepted default rule covers every row
            with pytest.raises(LabelingError, match="no proposed LF 'nope'"):
                review(repo, "yt", accept=["nope"])


class TestEndModel:
    def test_the_end_model_beats_the_classifier_of_the_50_examples(self, store: Path) -> None:
        examples = store / "examples.jsonl"
        with Repository.open(store / "repo") as repo:
            result = synthesize(repo, spec(examples))
            (store / "lfs.yaml").write_text(result.yaml)
            matrix = apply_lfs(repo, "yt", load_lfs(store / "lfs.yaml"), workers=1)
            _, labelled = label_version(repo, matrix)
        code, out = fm(store / "repo", "label", "end-model", labelled.version.ref,
                       "--examples", str(examples), "--eval-gold", "label")  # fmt: skip
        assert code == 0, out
        assert "beats the classifier on the examples alone" in out
        with Repository.open(store / "repo") as repo:
            last = resolve(repo, "yt")
            assert last.transformation["kind"] == "end-model"
            scores = last.transformation["scores"]
            assert scores["eval_accuracy"] > scores["baseline_eval_accuracy"]
            assert scores["eval_accuracy"] >= 0.85
            table = read_table(repo, last.ref)
            assert set(table.column("end_label").to_pylist()) == {"ham", "spam"}
            again = end_model(repo, EndModelSpec(target=labelled.version.ref, examples=examples,
                                                 eval_column="label"))  # fmt: skip
            assert again.eval_accuracy == scores["eval_accuracy"]  # deterministic
            assert not again.version.created  # the same predictions: nothing new recorded


class TestBudget:
    def test_the_budget_stops_the_search(self, store: Path) -> None:
        with Repository.open(store / "repo") as repo:
            full = synthesize(repo, spec(store / "examples.jsonl"))
            events = repo.ledger.count()
            with pytest.raises(LabelingError, match=r"budget of 0.001 s ran out first"):
                synthesize(repo, spec(store / "examples.jsonl", budget_s=0.001))
            assert repo.ledger.count() == events  # nothing proposed
            budget = full.search_s / 10
            started = time.monotonic()
            try:
                cut = synthesize(repo, spec(store / "examples.jsonl", budget_s=budget))
            except LabelingError as error:
                problem = str(error)
            else:
                problem = f"stopped: {cut.stopped}"
                assert len(cut.lfs) <= len(full.lfs)
            assert "ran out first" in problem or problem == "stopped: budget"
            # Past the deadline, at most one step runs (a fold, a candidate's votes).
            assert time.monotonic() - started < full.embedding_s + budget + 2.0
        assert full.stopped != "budget"


class TestEmbeddingCache:
    def test_a_new_version_embeds_only_its_new_texts(self, store: Path, tmp_path: Path) -> None:
        rows = [json.loads(line) for line in COMMENTS.read_text().splitlines()]
        rows.append({"split": "test", "text": "a brand new comment, never embedded", "label": 0})
        (tmp_path / "more.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        with Repository.open(store / "repo") as repo:
            add_dataset(repo, "yt", tmp_path / "more.jsonl")
            version = resolve(repo, "yt")
            index = repo.view(SynthWork)
            objects = len(index.embedding_objects("yt", EmbeddingCache(repo, version).model))
            cache = EmbeddingCache(repo, version)
            texts = read_table(repo, "yt").column("text").to_pylist()
            vectors = cache(texts, "column text")
            assert cache.computed == 1
            assert vectors.shape == (401, 384)
            assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
            assert len(repo.view(SynthWork).embedding_objects("yt", cache.model)) == objects + 1
            assert EmbeddingCache(repo, version).has(texts)
            repo.verify()


LFS = """
labels: [ham, spam]
lfs:
  - name: th_long
    feature: chars
    min: 60
    label: spam
  - name: th_number
    column: score
    max: 2
    label: ham
  - name: kw_check
    keywords: [check]
    label: spam
  - name: default_ham
    default: true
    label: ham
"""


class TestNewKinds:
    def test_threshold_and_default_lfs(self, repo: Repository, tmp_path: Path) -> None:
        rows = [
            {"text": "check this", "score": 5}, {"text": "x" * 70, "score": 9},
            {"text": "short", "score": 1}, {"text": "plain words", "score": None},
            {"text": "also plain", "score": 3.5},
        ]  # fmt: skip
        (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        add_dataset(repo, "t", tmp_path / "t.jsonl")
        (tmp_path / "lfs.yaml").write_text(LFS)
        lfs = load_lfs(tmp_path / "lfs.yaml")
        assert [lf.kind for lf in lfs] == ["threshold", "threshold", "keyword", "default"]
        matrix = apply_lfs(repo, "t", lfs, workers=1)
        assert matrix.matrix.tolist() == [
            [-1, -1, 1, -1],
            [1, -1, -1, -1],
            [-1, 0, -1, -1],
            [-1, -1, -1, 0],
            [-1, -1, -1, 0],
        ]
        assert stale_lfs(repo, "t", lfs) == {}
        # The default rule's version follows the LFs it falls back from.
        edited = tmp_path / "edited.yaml"
        edited.write_text(LFS.replace("keywords: [check]", "keywords: [check, plain]"))
        again = apply_lfs(repo, "t", load_lfs(edited), workers=1)
        assert again.lfs[3]["version"] != matrix.lfs[3]["version"]
        assert again.matrix[:, 3].tolist() == [-1, -1, -1, -1, -1]
        assert set(again.computed) == {"kw_check", "default_ham"}
        _, result = label_version(repo, matrix)
        weak = read_table(repo, result.version.ref).column("weak_label").to_pylist()
        assert None not in weak  # the default rule covers the rows nobody else votes on


def test_examples_can_name_rows_and_come_as_csv(repo: Repository, tmp_path: Path) -> None:
    add_dataset(repo, "yt", COMMENTS)
    table = read_table(repo, "yt", with_ids=True).to_pylist()
    by_id = tmp_path / "ids.jsonl"
    by_id.write_text("".join(
        json.dumps({"row_id": r["_row_id"][:10], "label": r["label"]}) + "\n" for r in table[:40]
    ))  # fmt: skip
    csv = tmp_path / "ex.csv"
    csv.write_text("text,label\n" + "".join(
        '"' + r["text"].replace('"', '""') + f'",{r["label"]}\n' for r in table[:40]
    ))  # fmt: skip
    from fmforge.data.labeling.examples import load_examples

    version = resolve(repo, "yt")
    full = read_table(repo, "yt", with_ids=True)
    a = load_examples(by_id, None, full, "text", version.ref, ("ham", "spam"))
    b = load_examples(csv, None, full, "text", version.ref, ("ham", "spam"))
    assert a.digest == b.digest
    assert a.texts == b.texts
    assert all(p >= 0 for p in a.positions)
    reordered = tmp_path / "reordered.jsonl"
    reordered.write_text("\n".join(reversed(by_id.read_text().splitlines())) + "\n")
    assert load_examples(reordered, None, full, "text", version.ref, ("ham", "spam")).digest == (
        a.digest
    )
    gold = load_examples(None, "label", full, "text", version.ref, ("ham", "spam"))
    assert len(gold) == len({r["text"] for r in table})

"""Label issues in labelled data: confident learning (cleanlab) on out-of-sample probabilities.

A logistic regression (scikit-learn) on the text's features is fitted in ``folds`` folds, so
each row's class probabilities come from a model that never saw it; cleanlab flags the rows
whose given label the probabilities contradict (``filter_by="confident_learning"``), ranked by
the given label's self-confidence, lowest first. Features: TF-IDF of character and word
n-grams (``tfidf``), MiniLM sentence embeddings (``minilm``), or both (``tfidf+minilm``, the
default). The queue is recorded (``LabelIssuesFound``); reviewers' verdicts are events too
(``LabelIssueReviewed``: relabel with a class, or keep the given label).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fmforge.access import targets
from fmforge.access.mediation import mediated
from fmforge.data.events import LabelIssueReviewed, LabelIssuesFound
from fmforge.data.versions import STREAM_PREFIX, read_table, resolve
from fmforge.data.views import DatasetWork
from fmforge.errors import DataError
from fmforge.repository import Repository

FEATURES = ("tfidf", "minilm", "tfidf+minilm")


@dataclass(frozen=True)
class Issue:
    row_id: str
    given: Any  # the label as stored
    suggested: Any  # the class the model puts most probability on
    quality: float  # the given label's out-of-sample probability (lower: more likely wrong)
    text: str
    verdict: str | None = None  # relabel | keep
    label: Any = None  # the reviewer's label, with relabel


def features_of(texts: list[str], kind: str) -> Any:
    from scipy.sparse import csr_matrix, hstack
    from sklearn.feature_extraction.text import TfidfVectorizer

    if kind not in FEATURES:
        raise DataError(f"features must be one of {', '.join(FEATURES)}, not {kind!r}")
    parts = []
    if "tfidf" in kind:
        chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True)
        words = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
        parts += [chars.fit_transform(texts), words.fit_transform(texts)]
    if "minilm" in kind:
        from fmforge.embeddings import embed_texts

        parts.append(csr_matrix(embed_texts(texts).numpy()))
    return hstack(parts).tocsr()


def out_of_sample_probabilities(
    texts: list[str], labels: np.ndarray[Any, Any], *, features: str, folds: int, seed: int
) -> np.ndarray[Any, Any]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    counts = np.bincount(labels)
    if (counts[counts > 0] < folds).any():
        raise DataError(f"every label needs at least {folds} rows for {folds}-fold probabilities")
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    model = LogisticRegression(C=4.0, max_iter=5000)
    return np.asarray(
        cross_val_predict(
            model, features_of(texts, features), labels, cv=splitter, method="predict_proba"
        )
    )


@mediated("label", targets.dataset())
def find_issues(
    repo: Repository,
    target: str,
    *,
    label: str = "label",
    text: str = "text",
    features: str = "tfidf+minilm",
    folds: int = 5,
    seed: int = 0,
) -> list[Issue]:
    """The ranked review queue of rows whose label looks wrong, recorded as an event."""
    from cleanlab.filter import find_label_issues

    version = resolve(repo, target)
    table = read_table(repo, version.ref, with_ids=True)
    for column in (label, text):
        if column not in table.column_names:
            raise DataError(f"{version.ref} has no column {column!r}")
    given = table.column(label).to_pylist()
    keep = [i for i, value in enumerate(given) if value is not None]
    classes = sorted({given[i] for i in keep}, key=str)
    if len(classes) < 2:
        raise DataError(f"{version.ref}: column {label!r} holds fewer than two labels")
    index = {value: c for c, value in enumerate(classes)}
    labels = np.array([index[given[i]] for i in keep])
    texts = [str(table.column(text)[i].as_py() or "") for i in keep]
    proba = out_of_sample_probabilities(texts, labels, features=features, folds=folds, seed=seed)
    flagged = find_label_issues(
        labels, proba, filter_by="confident_learning", return_indices_ranked_by="self_confidence"
    )
    ids = table.column("_row_id").to_pylist()
    issues = [
        Issue(ids[keep[i]], classes[labels[i]], classes[int(proba[i].argmax())],
              float(proba[i, labels[i]]), texts[i])
        for i in flagged
    ]  # fmt: skip
    repo.record(
        STREAM_PREFIX + version.dataset,
        LabelIssuesFound(
            {"version": version.id, "label_column": label, "features": features,
             "rows": len(keep), "issues": [
                 {"row_id": x.row_id, "given": x.given, "suggested": x.suggested,
                  "quality": round(x.quality, 6)} for x in issues]},
        ),
    )  # fmt: skip
    return issues


@mediated("read", targets.dataset())
def issue_queue(repo: Repository, target: str) -> list[Issue]:
    """The last recorded queue of ``target``'s dataset, with every standing verdict."""
    version = resolve(repo, target)
    work = repo.view(DatasetWork)
    found = work.label_issue_queue(version.dataset)
    verdicts = work.label_issue_verdicts(version.dataset)
    if found is None:
        raise DataError(f"no label issues recorded for {version.dataset}: find them first")
    source = resolve(repo, f"{version.dataset}@{found['version']}")
    table = read_table(repo, source.ref, with_ids=True)
    column = table.column("text").to_pylist() if "text" in table.column_names else []
    texts = dict(zip(table.column("_row_id").to_pylist(), column, strict=False))
    return [
        Issue(x["row_id"], x["given"], x["suggested"], x["quality"], str(texts.get(x["row_id"])),
              *verdicts.get(x["row_id"], (None, None)))
        for x in found["issues"]
    ]  # fmt: skip


@mediated("label", targets.dataset())
def review_issue(repo: Repository, target: str, row: str, verdict: str, label: Any = None) -> Issue:
    """Record a verdict on the queued row whose id starts with ``row``: ``relabel`` (with the
    right label) or ``keep`` (the given label is right)."""
    if verdict not in ("relabel", "keep"):
        raise DataError(f"a verdict is relabel or keep, not {verdict!r}")
    if verdict == "relabel" and label is None:
        raise DataError("relabel needs the right label")
    queue = [x for x in issue_queue(repo, target) if x.row_id.startswith(row)]
    if len(queue) != 1:
        raise DataError(f"{row!r} names {len(queue)} queued rows (see the label-issue queue)")
    version = resolve(repo, target)
    repo.record(
        STREAM_PREFIX + version.dataset,
        LabelIssueReviewed({"row_id": queue[0].row_id, "verdict": verdict,
                            "label": label, "reviewer": repo.principal}),
    )  # fmt: skip
    return next(x for x in issue_queue(repo, target) if x.row_id == queue[0].row_id)

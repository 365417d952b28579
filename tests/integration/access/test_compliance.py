"""Compliance checked at the moment of access, on the shipped YouTube comments with ``author``
tagged as personal data and a non-commercial licence: a principal without ``read_pii`` reads
that column masked (or is denied, per the dataset's policy) and every other column intact; a
commercial purpose is refused ``use`` and ``export`` of the dataset, and ``use`` of a model
trained from it, with reason ``forbid:licence``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv
import pytest

from fmforge.access.control import AccessControl
from fmforge.access.mediation import TOKEN_ENV, purpose
from fmforge.access.policy import PolicySpec
from fmforge.data import add_dataset, export_dataset, read_table
from fmforge.data.subjects import tag_dataset
from fmforge.errors import AccessDenied
from fmforge.models import commit_tensors
from fmforge.repository import Repository
from fmforge.tracking import start_run
from fmforge.training import evaluate

DEMO = Path(__file__).parents[3] / "src" / "fmforge" / "demo_data"
COMMENTS = DEMO / "youtube_spam_collection.jsonl"


def _denied(repo: Repository) -> dict[str, object]:
    events = list(repo.ledger.read_all(types=("AccessDenied",)))
    return dict(events[-1].data)


@pytest.fixture
def tokens(repo: Repository) -> dict[str, str]:
    control = AccessControl(repo)
    control.bootstrap()
    control.set_policy(PolicySpec(), "test")
    tag_dataset(repo, "yt", licence="CC-BY-NC-4.0", pii=["author"], consent=["research"])
    add_dataset(repo, "yt", COMMENTS)
    control.add_principal("user:analyst", {"purposes": ["research", "commercial"]})
    control.grant("user:analyst", "dataset/yt", role="maintainer")  # read, use, export; no pii
    control.add_principal("user:officer", {"pii_cleared": True, "purposes": ["research"]})
    control.grant("user:officer", "dataset/yt", role="owner")  # read_pii among the rest
    return {
        "analyst": control.issue_token("user:analyst").token,
        "officer": control.issue_token("user:officer").token,
    }


def test_personal_data_is_masked_or_denied_and_the_rest_intact(
    repo: Repository, tokens: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    source = [json.loads(line) for line in COMMENTS.read_text().splitlines()]
    monkeypatch.setenv(TOKEN_ENV, tokens["analyst"])
    masked = read_table(repo, "yt")
    assert masked.num_rows == len(source) == 1956
    assert set(masked.column("author").to_pylist()) == {"***"}
    for column in ("video", "comment_id", "date", "text", "label", "split"):
        assert masked.column(column).to_pylist() == [r[column] for r in source], column
    granted = list(repo.ledger.read_all(types=("AccessGranted",)))[-1]
    assert granted.data["masked"] == ["author"]

    monkeypatch.setenv(TOKEN_ENV, tokens["officer"])
    with purpose("research"):  # cleared, and a purpose the consent covers
        clear = read_table(repo, "yt")
    assert clear.column("author").to_pylist() == [r["author"] for r in source]
    assert clear.drop(["author"]).equals(masked.drop(["author"]))
    with purpose("marketing"):  # cleared, but not for this purpose
        assert set(read_table(repo, "yt").column("author").to_pylist()) == {"***"}

    monkeypatch.delenv(TOKEN_ENV)
    tag_dataset(repo, "yt", pii_mode="deny")
    monkeypatch.setenv(TOKEN_ENV, tokens["analyst"])
    with pytest.raises(AccessDenied, match="forbid:pii"):
        read_table(repo, "yt")
    assert _denied(repo)["reason"] == "forbid:pii"


def test_a_non_commercial_licence_follows_the_data_into_models(
    repo: Repository, tokens: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with start_run("spam", repo=repo, datasets=["yt@v1"]) as run:
        run.log({"loss": 0.5}, step=1)
    commit_tensors(
        repo, "spam", {"w": np.zeros(4, np.float32)}, message="trained", provenance={"run": run.id}
    )
    commit_tensors(repo, "clean", {"w": np.zeros(4, np.float32)}, message="from elsewhere")
    control = AccessControl(repo)
    control.grant("user:analyst", "model/spam", role="user")
    control.grant("user:analyst", "model/clean", role="user")
    monkeypatch.setenv(TOKEN_ENV, tokens["analyst"])

    with purpose("commercial"):
        with pytest.raises(AccessDenied, match="forbid:licence"):
            export_dataset(repo, "yt", tmp_path / "out.csv")
        assert (_denied(repo)["action"], _denied(repo)["reason"]) == ("export", "forbid:licence")
        with pytest.raises(AccessDenied, match="forbid:licence"):  # the dataset, used
            evaluate(repo, "clean", "yt")
        assert str(_denied(repo)["resource"]).startswith("dataset/yt")
        with pytest.raises(AccessDenied, match="forbid:licence"):  # the model made from it
            evaluate(repo, "spam", "yt")
        denied = _denied(repo)
        assert (denied["action"], denied["reason"]) == ("use", "forbid:licence")
        assert str(denied["resource"]).startswith("model/spam")
    assert not (tmp_path / "out.csv").exists()
    with purpose("research"):
        assert export_dataset(repo, "yt", tmp_path / "out.csv") == 1956
    assert pacsv.read_csv(tmp_path / "out.csv").num_rows == 1956

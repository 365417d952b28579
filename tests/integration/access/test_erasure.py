"""Crypto-shredding end to end, on the shipped YouTube comments with ``author`` as the subject
id and personal data: a canary subject planted in them is, after ``fmforge data forget
--subject``, found by no byte search of the repository (ledger and its WAL, objects, views,
keys, caches) nor of an export; the chain and the checkpoint signed before still verify, and
every other subject's rows read back identical."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from fmforge.access.audit import Checkpointer, recorded_checkpoints, verifier_key, verify_history
from fmforge.access.control import AccessControl
from fmforge.access.demo import holders
from fmforge.access.policy import PolicySpec
from fmforge.data import add_dataset, export_dataset, read_table
from fmforge.data.subjects import tag_dataset
from fmforge.repository import Repository
from tests.clirunner import fm

DEMO = Path(__file__).parents[3] / "src" / "fmforge" / "demo_data"
CANARY = "Canary Subject 7f3a9c"  # the subject's id and personal data (author)


def comments(path: Path, rows: int = 300) -> Path:
    """The first ``rows`` shipped comments plus three by the canary subject, as JSONL."""
    lines = (DEMO / "youtube_spam_collection.jsonl").read_text().splitlines()[:rows]
    for n in range(3):
        lines.append(json.dumps({
            "video": "Psy", "comment_id": f"canary-{n}", "author": CANARY,
            "date": "2014-01-01T00:00:00", "text": f"canary text {n}", "label": 0, "split": "train",
        }))  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    return path


def files_holding(root: Path, needle: bytes) -> list[str]:
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and needle in p.read_bytes()
    )


def _others(table: pa.Table) -> list[dict[str, object]]:
    return sorted(
        (r for r in table.to_pylist() if not str(r["comment_id"]).startswith("canary-")),
        key=lambda r: str(r["comment_id"]),
    )


def test_a_forgotten_subject_is_in_no_byte_and_the_rest_is_intact(
    repo: Repository, tmp_path: Path
) -> None:
    control = AccessControl(repo)
    control.bootstrap()
    control.update_principal("user:tester@fmforge", {"pii_cleared": True})  # reads authors
    control.set_policy(PolicySpec(), "test")  # access control on, as `fmforge access init`
    tag_dataset(repo, "yt", licence="CC-BY-4.0", subject_id="author", pii=["author"])
    add_dataset(repo, "yt", comments(tmp_path / "yt.jsonl"))
    (tmp_path / "yt.jsonl").unlink()  # the source file is the user's, not the repository's
    before = read_table(repo, "yt")
    assert before.num_rows == 303
    assert sum(1 for a in before.column("author").to_pylist() if a == CANARY) == 3
    checkpoint = Checkpointer(repo).checkpoint()
    early = tmp_path / "before.csv"
    export_dataset(repo, "yt", early)
    assert CANARY.encode() in early.read_bytes()  # what was released before stays released
    early.unlink()
    assert holders(repo, CANARY) == []  # ciphertext only, from the start
    assert holders(repo, "canary text 1") != []  # (the search reads decoded chunks: the text
    # of the subject's comment is not personal data, and is there in clear)

    code, out = fm(repo.root, "data", "forget", "--subject", CANARY, "--reason", "GDPR art. 17")
    assert code == 0, out

    after = read_table(repo, "yt")
    export_dataset(repo, "yt", tmp_path / "after.csv")
    export_dataset(repo, "yt", tmp_path / "after.parquet")
    assert after.num_rows == 300
    assert _others(after) == _others(before)
    assert holders(repo, CANARY) == []  # every file, every object decoded
    # (the text of their comments, not personal data, stays in the stored chunks; no read
    # returns their rows: see `after`)
    for needle in (CANARY.encode(), CANARY.encode("utf-16-le"), CANARY.upper().encode()):
        assert files_holding(tmp_path, needle) == [], needle  # and the exports
    repo.verify()
    assert verify_history(repo, checkpoint).new.size > checkpoint.size
    assert checkpoint in recorded_checkpoints(repo, [verifier_key(repo)])
    (forgotten,) = repo.ledger.read_all(types=("SubjectForgotten",))
    assert forgotten.data["reason"] == "GDPR art. 17"
    assert CANARY not in json.dumps(forgotten.data)

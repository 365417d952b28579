"""Crypto-shredding on real files: after a subject's key is destroyed, no byte of the planted
canary is anywhere under the directory (ledger and its WAL, objects, views, keys), the chain
and the checkpoints still verify, and other subjects read back identical.

Phase 1 tests the primitives: sealed events go to a ledger file of their own (the integration
phase seals domain events inside ``Repository.record``), encrypted cells to the object store."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from fmforge.access.audit import Checkpointer, recorded_checkpoints, verifier_key, verify_history
from fmforge.access.control import AccessControl
from fmforge.errors import SubjectErased
from fmforge.ledger import NewEvent, open_event_store
from fmforge.repository import Repository

ALICE = "canary-alice-5e1f@example.org"
BOB = "bob-keeps-9c2d@example.org"


def _files_holding(root: Path, needle: bytes) -> list[str]:
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and needle in p.read_bytes()
    )


def test_forgetting_a_subject_leaves_no_plaintext_anywhere(
    repo: Repository, tmp_path: Path
) -> None:
    control = AccessControl(repo)
    keys = control.subject_keys()
    alice, bob = control.subject_key("alice"), control.subject_key("bob")
    sidecar = open_event_store(str(tmp_path / "sidecar.db"))
    cells = {}
    for subject, key_id, value in (("alice", alice, ALICE), ("bob", bob, BOB)):
        # Only the payload is sealed: the stream is named by the key id, never the subject.
        stream = f"people/{key_id}"
        event = NewEvent("ContactRecorded", {"email": value, "subject": subject})
        sidecar.append(stream, keys.seal_event(event, stream, key_id))
        cells[subject] = keys.encrypt_cell(key_id, value, f"people|email|{subject}")
    digest = repo.objects.put(orjson.dumps(cells))
    checkpoint = Checkpointer(repo).checkpoint()

    assert _files_holding(tmp_path, ALICE.encode()) == []  # ciphertext only, from the start
    control.forget_subject("alice", "erasure request #1")
    sidecar.close()
    control.close()

    assert _files_holding(tmp_path, ALICE.encode()) == []
    assert _files_holding(tmp_path, ALICE.encode("utf-16-le")) == []
    assert _files_holding(tmp_path, b"alice") == []  # not even the subject id: pseudonyms only
    sidecar = open_event_store(str(tmp_path / "sidecar.db"))
    sidecar.verify()
    repo.verify()
    assert verify_history(repo, checkpoint).new.size > checkpoint.size
    assert recorded_checkpoints(repo, [verifier_key(repo)])[0] == checkpoint

    again = AccessControl(repo).subject_keys()
    events = {e.stream: e for e in sidecar.read_all()}
    with pytest.raises(SubjectErased):
        again.open_event(events[f"people/{alice}"])
    assert again.open_event(events[f"people/{bob}"]) == {"email": BOB, "subject": "bob"}
    stored = orjson.loads(repo.objects.get(digest))
    with pytest.raises(SubjectErased):
        again.decrypt_cell(stored["alice"], "people|email|alice")
    assert again.decrypt_cell(stored["bob"], "people|email|bob") == BOB
    sidecar.close()
    again.close()

    (forgotten,) = [
        e for e in repo.ledger.read_stream("access/subjects") if e.type == "SubjectForgotten"
    ]
    assert forgotten.data["key_id"] == alice
    assert forgotten.data["reason"] == "erasure request #1"

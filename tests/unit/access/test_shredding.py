"""Crypto-shredding primitives: per-subject keys wrapped by the repository key, encrypted
cells and event payloads, and keys destroyed with nothing left to decrypt with."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from fmforge.access.shredding import CELL_PREFIX, RepositoryKey, SubjectKeys
from fmforge.errors import ConfigError, InvalidEvent, ProofFailed, SubjectErased
from fmforge.ledger import NewEvent

CANARY = "canary-7f3a9 alice@example.org"


@pytest.fixture
def keys(tmp_path: Path) -> Iterator[SubjectKeys]:
    master = RepositoryKey.open(tmp_path / "keys" / "repository.key")
    with SubjectKeys(tmp_path / "keys" / "subjects.db", master) as store:
        yield store


def test_the_repository_key_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "repository.key"
    first = RepositoryKey.open(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "keys").stat().st_mode & 0o777 == 0o700
    assert len(path.read_bytes()) == 32
    assert RepositoryKey.open(path).pseudonym("s") == first.pseudonym("s")
    os.chmod(path, 0o640)
    with pytest.raises(ConfigError, match="readable by others"):
        RepositoryKey.open(path)
    with pytest.raises(ConfigError, match="does not exist"):
        RepositoryKey.open(tmp_path / "absent.key", create=False)


def test_pseudonyms_are_stable_and_keyed(tmp_path: Path) -> None:
    a = RepositoryKey(b"a" * 32)
    assert a.pseudonym("alice") == a.pseudonym("alice") != a.pseudonym("bob")
    assert RepositoryKey(b"b" * 32).pseudonym("alice") != a.pseudonym("alice")
    assert "alice" not in a.pseudonym("alice")


def test_cells_round_trip_and_are_bound_to_their_address(keys: SubjectKeys) -> None:
    key_id, created = keys.create("alice")
    assert created
    assert keys.create("alice") == (key_id, False)
    cell = keys.encrypt_cell(key_id, CANARY, "youtube|author|row1")
    assert cell.startswith(CELL_PREFIX)
    assert CANARY not in cell
    assert keys.decrypt_cell(cell, "youtube|author|row1") == CANARY
    with pytest.raises(ProofFailed, match="moved from another cell"):
        keys.decrypt_cell(cell, "youtube|author|row2")
    assert keys.encrypt_cell(key_id, CANARY, "a") != keys.encrypt_cell(key_id, CANARY, "a")


def test_event_payloads_are_sealed_whole(keys: SubjectKeys) -> None:
    key_id, _ = keys.create("alice")
    event = NewEvent("Noted", {"email": CANARY, "n": 1})
    sealed = keys.seal_event(event, "notes/x", key_id)
    assert sealed.key_id == key_id
    assert sealed.event_id == event.event_id
    assert set(sealed.data) == {"sealed"}
    assert CANARY not in str(sealed.data)
    with pytest.raises(InvalidEvent, match="sealed already"):
        keys.seal_event(sealed, "notes/x", key_id)


def test_destroying_a_key_erases_and_leaves_no_wrapped_key_behind(keys: SubjectKeys) -> None:
    alice, _ = keys.create("alice")
    bob, _ = keys.create("bob")
    cell = keys.encrypt_cell(alice, CANARY, "x")
    other = keys.encrypt_cell(bob, "bob's", "x")
    (wrapped,) = keys.db.execute(
        "SELECT wrapped FROM subject_keys WHERE key_id = ?", (alice,)
    ).fetchone()
    assert keys.destroy(alice)
    assert not keys.destroy(alice)
    with pytest.raises(SubjectErased, match="destroyed"):
        keys.decrypt_cell(cell, "x")
    with pytest.raises(SubjectErased):
        keys.create("alice")  # no new key under the old id
    assert keys.decrypt_cell(other, "x") == "bob's"
    keys.close()
    data = b"".join(p.read_bytes() for p in keys.path.parent.iterdir() if p.is_file())
    assert bytes(wrapped) not in data
    assert not list(keys.path.parent.glob("*-journal")), "a rollback journal was left"


def test_a_new_process_reads_the_table_with_the_same_repository_key(tmp_path: Path) -> None:
    master = RepositoryKey.open(tmp_path / "repository.key")
    with SubjectKeys(tmp_path / "subjects.db", master) as first:
        key_id, _ = first.create("carol")
        cell = first.encrypt_cell(key_id, "v", "a")
    with SubjectKeys(
        tmp_path / "subjects.db", RepositoryKey.open(tmp_path / "repository.key")
    ) as again:
        assert again.decrypt_cell(cell, "a") == "v"
    wrong = SubjectKeys(tmp_path / "subjects.db", RepositoryKey(b"z" * 32))
    with wrong, pytest.raises(ConfigError, match="does not unwrap with this repository key"):
        wrong.decrypt_cell(cell, "a")
    assert sqlite3.connect(tmp_path / "subjects.db").execute("PRAGMA journal_mode").fetchone() == (
        "delete",
    )

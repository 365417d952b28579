"""API tokens: 256 random bits, only the hash kept, scoped, expiring, revocable."""

from __future__ import annotations

import base64
import hashlib

import pytest

from fmforge.access.tokens import (
    PREFIX,
    Scope,
    TokenIndex,
    TokenRecord,
    new_token,
    new_token_id,
    parse_scopes,
    token_hash,
)
from fmforge.errors import InvalidPolicy, Unauthenticated


def _record(token: str, **changes: object) -> TokenRecord:
    fields: dict[str, object] = {
        "token_id": new_token_id(),
        "principal": "user:alice",
        "sha256": token_hash(token),
        "scopes": (Scope("dataset/yt", frozenset({"read"})),),
        "expires": None,
    }
    fields.update(changes)
    return TokenRecord(**fields)  # type: ignore[arg-type]


class TestFormat:
    def test_256_random_bits_behind_a_prefix(self) -> None:
        tokens = {new_token() for _ in range(200)}
        assert len(tokens) == 200
        for token in tokens:
            assert token.startswith(PREFIX)
            raw = base64.urlsafe_b64decode(token[len(PREFIX) :] + "=")
            assert len(raw) == 32

    def test_only_the_sha256_is_kept(self) -> None:
        token = new_token()
        assert token_hash(token) == hashlib.sha256(token.encode()).hexdigest()
        assert token not in repr(_record(token))


class TestAuthenticate:
    def test_a_valid_token_gives_its_record(self) -> None:
        token = new_token()
        record = _record(token)
        assert TokenIndex([record]).authenticate(token) is record

    @pytest.mark.parametrize(
        ("given", "reason"),
        [
            (None, "unauthenticated"),
            ("", "unauthenticated"),
            ("fmf_short", "malformed"),
            ("Bearer " + "x" * 43, "malformed"),
            (PREFIX + "A" * 43, "unknown_token"),
        ],
    )
    def test_refusals_name_their_reason(self, given: str | None, reason: str) -> None:
        index = TokenIndex([_record(new_token())])
        with pytest.raises(Unauthenticated) as caught:
            index.authenticate(given)
        assert caught.value.reason == reason
        assert caught.value.http_status == 401

    def test_expired_and_revoked(self) -> None:
        late, gone = new_token(), new_token()
        index = TokenIndex([_record(late, expires=1000.0), _record(gone, revoked=True)])
        assert index.authenticate(late, now=999.0).principal == "user:alice"
        with pytest.raises(Unauthenticated, match="expired"):
            index.authenticate(late, now=1000.0)
        with pytest.raises(Unauthenticated, match="revoked"):
            index.authenticate(gone)


class TestScope:
    def test_patterns_and_actions_both_must_cover(self) -> None:
        record = _record(new_token())
        assert record.allows("read", "dataset/yt@3#text")
        assert not record.allows("export", "dataset/yt@3")
        assert not record.allows("read", "dataset/other@3")

    def test_every_action(self) -> None:
        record = _record(new_token(), scopes=(Scope("model/*", frozenset({"*"})),))
        assert record.allows("commit", "model/m/branch/main")
        assert not record.allows("read", "dataset/yt")

    def test_parsed_from_json_with_checks(self) -> None:
        assert parse_scopes([{"resource": "dataset/*", "actions": ["read"]}]) == (
            Scope("dataset/*", frozenset({"read"})),
        )
        with pytest.raises(InvalidPolicy, match="unknown action 'reed'"):
            parse_scopes([{"resource": "dataset/*", "actions": ["reed"]}])
        with pytest.raises(InvalidPolicy, match="columns need a version"):
            parse_scopes([{"resource": "dataset/x#a", "actions": ["read"]}])
        with pytest.raises(InvalidPolicy, match="invalid token scope"):
            parse_scopes([{"resource": "dataset/*", "actions": []}])

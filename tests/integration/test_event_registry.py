"""Every registered event type, fed random payloads through the one write path.

Valid payloads (drawn from each type's declared schema) are recorded and every projection
applies them without failing; invalid ones (a key missing, an unknown key, a value of the wrong
type, the wrong stream, a reserved stream through the public append) are refused and change
nothing. Afterwards ``verify`` passes and every read model equals a rebuild from the ledger.
"""

from __future__ import annotations

import random
import string
import types
from collections.abc import Callable
from pathlib import Path
from typing import (
    Annotated,
    Any,
    NotRequired,
    Required,
    Union,
    get_args,
    get_origin,
    get_type_hints,
)

import pytest
from annotated_types import Ge
from pydantic import StringConstraints
from typing_extensions import is_typeddict

from fmforge.errors import InvalidEvent
from fmforge.events import REGISTRY
from fmforge.ledger import EventType, NewEvent
from fmforge.repository import Repository

Gen = Callable[[random.Random], Any]
_HEX = "0123456789abcdef"


def _text(rng: random.Random, low: int = 0, high: int = 12) -> str:
    alphabet = string.ascii_letters + string.digits + " _-./[]ßé😀\"'"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(low, high)))


def _json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(7 if depth < 2 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.randint(-(2**63), 2**63 - 1)
    if kind == 3:
        return rng.uniform(-1e9, 1e9)
    if kind == 4:
        return _text(rng)
    if kind == 5:
        return [_json(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {_text(rng, 1, 6): _json(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def _from_pattern(pattern: str) -> Gen:
    known = {
        r"^[0-9a-f]{64}$": lambda r: "".join(r.choice(_HEX) for _ in range(64)),
        r"^[0-9a-f]{32}$": lambda r: "".join(r.choice(_HEX) for _ in range(32)),
        r"^[0-9a-f]{16}$": lambda r: "".join(r.choice(_HEX) for _ in range(16)),
    }
    if pattern in known:
        return known[pattern]
    choices = pattern.strip("^$()").split("|")  # the enumerations: ^(a|b|c)$
    return lambda r: r.choice(choices)


def required_keys(tp: Any) -> set[str]:
    """A TypedDict's required keys, read from its hints (``__required_keys__`` cannot see
    ``NotRequired`` in string annotations on Python 3.11)."""
    total = getattr(tp, "__total__", True)
    out = set()
    for key, hint in get_type_hints(tp, include_extras=True).items():
        origin = get_origin(hint)
        if origin is Required or (total and origin is not NotRequired):
            out.add(key)
    return out


def generator(tp: Any) -> Gen:
    """Random valid values of a declared payload type."""
    origin = get_origin(tp)
    if origin in (NotRequired, Required):
        return generator(get_args(tp)[0])
    if origin is Annotated:
        base, *extras = get_args(tp)
        for extra in extras:
            if isinstance(extra, StringConstraints):
                if extra.pattern:
                    return _from_pattern(str(extra.pattern))
                low, high = extra.min_length or 0, min(extra.max_length or 12, 12)
                return lambda r: _text(r, max(low, 1) if low else 0, high)
            if isinstance(extra, Ge):
                low = int(extra.ge)  # type: ignore[call-overload]
                return lambda r: r.randint(low, low + 10_000)
        return generator(base)
    if is_typeddict(tp):
        hints = get_type_hints(tp, include_extras=True)
        keys = required_keys(tp)
        required = {k: generator(v) for k, v in hints.items() if k in keys}
        optional = {k: generator(v) for k, v in hints.items() if k not in keys}

        def typed_dict(r: random.Random) -> dict[str, Any]:
            out = {k: g(r) for k, g in required.items()}
            out.update({k: g(r) for k, g in optional.items() if r.random() < 0.5})
            return out

        return typed_dict
    if origin in (Union, types.UnionType):
        options = [generator(a) for a in get_args(tp)]
        return lambda r: r.choice(options)(r)
    if origin is list:
        (item,) = get_args(tp)
        inner = generator(item)
        return lambda r: [inner(r) for _ in range(r.randint(0, 3))]
    if origin is dict:
        _, value = get_args(tp)
        inner = generator(value)
        return lambda r: {_text(r, 1, 8): inner(r) for _ in range(r.randint(0, 3))}
    simple: dict[Any, Gen] = {
        str: _text,
        int: lambda r: r.randint(-(2**63), 2**63 - 1),
        float: lambda r: r.uniform(-1e12, 1e12),
        bool: lambda r: r.random() < 0.5,
        type(None): lambda r: None,
        Any: _json,
    }
    return simple[tp]


MODELS = ["m0", "m1", "team/m2"]
DATASETS = ["d0", "d1"]
REFS = ["main", "exp", "runs/x-1", "v1.0", "last-good/a"]


def valid_event(rng: random.Random, event_type: EventType[Any]) -> tuple[str, NewEvent]:
    """A payload of ``event_type`` and the stream it belongs on."""
    data = generator(event_type.payload)(rng)
    domain, _ = REGISTRY.types[event_type.name]
    if domain.name == "model":
        data["model"] = rng.choice(MODELS)
        for key in ("branch", "tag"):
            if key in data:
                data[key] = rng.choice(REFS)
        stream = "model/" + data["model"]
    elif domain.name == "dataset":
        name = rng.choice(DATASETS)
        if "dataset" in data:
            data["dataset"] = name
        if "rule" in data:
            data["rule"] = {rng.choice(["dedup", "drop"]): {}}
        stream = "dataset/" + name
    elif domain.name == "tracking":
        if event_type.name == "ExperimentCreated":
            stream = "experiment/" + data["experiment_id"].replace("/", "_")
            data["experiment_id"] = stream.removeprefix("experiment/")
            if not data["experiment_id"].strip() or " " in data["experiment_id"]:
                data["experiment_id"] = "e1"
                stream = "experiment/e1"
        else:
            run = "r" + str(rng.randrange(5))
            if "run" in data:
                data["run"] = run
            stream = "run/" + run
    elif domain.name == "access":
        stream = _access_event(rng, event_type.name, data)
    elif domain.name == "training":
        key = "search" if "search" in data else "selection"
        stream = f"{key}/{data[key]}"
    elif domain.name == "serving":
        data["deployment"] = rng.choice(["prod", "team/canary"])
        stream = "deployment/" + data["deployment"]
    else:
        stream = "objects/pruned" if event_type.name == "ObjectsPruned" else "repository"
    return stream, event_type(data)


ACCESS_RESOURCES = ["dataset/d0", "dataset/d0@v1#text", "model/m0/branch/main", "run/r1", "audit"]


def _access_event(rng: random.Random, name: str, data: dict[str, Any]) -> str:
    """Fill the access payload's constrained fields (ids, principals, patterns, the policy)
    with valid values; return its stream."""
    import base64

    from fmforge.access import events as access
    from fmforge.access.policy import PolicySpec
    from fmforge.access.resources import parse_resource

    def hexes(n: int) -> str:
        return "".join(rng.choice(_HEX) for _ in range(n))

    users = name in ("TokenIssued", "PasswordSet")
    who = ["user:u1", "service:ci"] if users else ["user:u1", "group:g1"]
    fields: dict[str, Any] = {
        "principal": rng.choice(who),
        "attributes": {"pii_cleared": rng.random() < 0.5, "purposes": ["research"]},
        "group": "group:g1",
        "member": "user:u1",
        "token_id": "tok_" + hexes(16),
        "scopes": [{"resource": rng.choice(["dataset/*", "**"]), "actions": ["read"]}],
        "grant_id": "grant_" + hexes(16),
        "resource": rng.choice(ACCESS_RESOURCES),
        "actions": rng.choice([["read"], ["read", "use"]]),
        "policy": {},
        "digest": PolicySpec().digest(),
        "key_id": "subject:" + hexes(32),
    }
    if name == "CheckpointSigned":
        fields["key_id"] = hexes(8)
        data["root"] = base64.b64encode(rng.randbytes(32)).decode()
    if name in ("AccessGranted", "AccessDenied"):
        fields["token_id"] = rng.choice([None, "tok_" + hexes(16)])
    if name == "PasswordSet":
        salt, digest = (base64.b64encode(rng.randbytes(n)).decode().rstrip("=") for n in (16, 32))
        fields["hash"] = f"$argon2id$v=19$m=65536,t=3,p=4${salt}${digest}"
    data.update({k: v for k, v in fields.items() if k in data})
    streams = {
        "TokenIssued": access.TOKENS, "TokenRevoked": access.TOKENS,
        "GrantAdded": access.GRANTS, "GrantRevoked": access.GRANTS, "PolicySet": access.POLICY,
        "CheckpointSigned": access.CHECKPOINTS, "SubjectKeyCreated": access.SUBJECTS,
        "PasswordSet": access.PASSWORDS,
        "SubjectForgotten": access.SUBJECTS,
    }  # fmt: skip
    if name in ("AccessGranted", "AccessDenied"):
        return access.log_stream(parse_resource(data["resource"]).root)
    return streams.get(name, access.PRINCIPALS)


def invalid_event(rng: random.Random, event_type: EventType[Any]) -> tuple[str, NewEvent, str]:
    stream, event = valid_event(rng, event_type)
    data = dict(event.data)
    kind = rng.choice(["missing", "unknown", "type", "stream"])
    required = sorted(required_keys(event_type.payload))
    if kind == "missing" and required:
        del data[rng.choice(required)]
    elif kind == "unknown" and event_type.name != "RunEnvironment":
        data["not_a_field"] = 1
    elif kind == "type" and required:
        data[rng.choice(required)] = object.__new__(type("Odd", (), {}))  # never valid
    else:
        kind = "stream"
        stream = "notes/x" if not stream.startswith("notes/") else "model/m0"
    bad = NewEvent(event.type, data, schema_version=event.schema_version)
    return stream, bad, kind


@pytest.mark.slow
def test_random_events_of_every_type(tmp_path: Path) -> None:
    rng = random.Random(20261130)
    kinds = [t for _, t in REGISTRY.types.values()]
    with Repository.init(tmp_path) as repo:
        recorded = refused = 0
        for round_ in range(10_000 // 50):
            batch: dict[str, list[NewEvent]] = {}
            for _ in range(50):
                event_type = rng.choice(kinds)
                if rng.random() < 0.2:
                    stream, bad, why = invalid_event(rng, event_type)
                    before = repo.ledger.count()
                    with pytest.raises(InvalidEvent):
                        repo.record(stream, bad)
                    assert repo.ledger.count() == before, why
                    refused += 1
                    continue
                stream, event = valid_event(rng, event_type)
                batch.setdefault(stream, []).append(event)
            for stream, events in batch.items():
                repo.record(stream, events)
                recorded += len(events)
            if round_ % 40 == 0:
                # Reserved streams and domain types stay closed to the public append.
                stream, event = valid_event(rng, rng.choice(kinds))
                with pytest.raises(InvalidEvent, match=r"reserved|recorded only by"):
                    repo.ledger.append(stream, event)
                with pytest.raises(InvalidEvent, match="recorded only by"):
                    repo.ledger.append("notes/x", event)
            if round_ % 50 == 0:
                from fmforge.views import VIEWS

                for cls in VIEWS:
                    repo.view(cls)  # applied as they come, not only at the end
        assert recorded > 7_000
        assert refused > 1_500
        report = repo.verify()
        assert report.view_differences == ()
        assert report.views_checked >= 6
        assert report.events == recorded + 1
        # Batches merge work across events (runs' metric summaries): one event per batch
        # must give the very same tables.
        from fmforge.ledger import ProjectionRunner
        from fmforge.views import VIEWS

        single = ProjectionRunner(repo.ledger, tmp_path / "one-by-one.db", repo.objects)
        for cls in VIEWS:
            projection = single.projection(cls)
            single.run(projection, batch_size=1)
            for table in cls.tables:
                query = f"SELECT * FROM {table} ORDER BY 1, 2"
                assert single.db.execute(query).fetchall() == (
                    repo.views.db.execute(query).fetchall()
                ), table
        single.close()


@pytest.mark.parametrize(
    "event_type", [t for _, t in REGISTRY.types.values()], ids=lambda t: t.name
)
def test_each_type_accepts_its_schema_and_refuses_its_violations(
    event_type: EventType[Any], tmp_path: Path
) -> None:
    rng = random.Random(event_type.name)
    with Repository.init(tmp_path) as repo:
        for _ in range(20):
            stream, event = valid_event(rng, event_type)
            repo.record(stream, event)
        before = repo.ledger.count()
        for _ in range(20):
            stream, bad, why = invalid_event(rng, event_type)
            with pytest.raises(InvalidEvent) as caught:
                repo.record(stream, bad)
            assert len(str(caught.value).splitlines()) == 1, why
        assert repo.ledger.count() == before
        assert repo.verify().view_differences == ()

"""The audit over HTTP: who read what, what was denied, who could read what, and the newest
signed checkpoint (for clients that keep checkpoints and check the log extends them)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from fmforge.access import queries
from fmforge.access.views import AccessHistoryView
from fmforge.errors import InvalidRequest
from fmforge.server.state import State

router = APIRouter(prefix="/api/audit")


def _moment(text: str | None, name: str, default: float) -> float:
    if text is None:
        return default
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise InvalidRequest(f"query parameter {name!r} is not an ISO time: {text!r}") from None


@router.get("/who-read")
def who_read(
    resource: str, state: State, since: str | None = None, until: str | None = None
) -> dict[str, Any]:
    readers = queries.who_read(
        state.repo, resource, _moment(since, "since", 0.0), _moment(until, "until", float("inf"))
    )
    return {"resource": resource, "readers": [
        {"principal": r.principal, "reads": r.reads, "first": r.first, "last": r.last}
        for r in readers
    ]}  # fmt: skip


@router.get("/denied")
def denied(
    state: State,
    actor: str | None = None,
    since: str | None = None,
    until: str | None = None,
    limit: int = 100,
) -> dict[str, Any]:
    records = queries.denied(
        state.repo, actor, _moment(since, "since", 0.0), _moment(until, "until", float("inf")),
        max(1, min(limit, 10_000)),
    )  # fmt: skip
    return {"denied": [
        {"seq": r.seq, "time": r.time, "principal": r.principal, "action": r.action,
         "resource": r.resource, "reason": r.reason, "token_id": r.token_id}
        for r in records
    ]}  # fmt: skip


@router.get("/could-read")
def could_read(
    resource: str,
    state: State,
    at: str | None = None,
    action: str = "read",
    purpose: str | None = None,
) -> dict[str, Any]:
    moment = _moment(at, "at", 0.0) if at is not None else None
    decisions = queries.could_read(state.repo, resource, at=moment, action=action, purpose=purpose)
    return {"resource": resource, "principals": [
        {"principal": d.principal, "reason": d.reason, "masked": list(d.masked)}
        for d in decisions if d.allowed
    ]}  # fmt: skip


@router.get("/checkpoint")
def checkpoint(state: State) -> PlainTextResponse:
    """The newest signed checkpoint, as the signed note (C2SP ``tlog-checkpoint``)."""
    last = state.repo.view(AccessHistoryView).last_checkpoint()
    if last is None:
        raise InvalidRequest("no checkpoint was signed yet (`fmforge audit checkpoint`)")
    return PlainTextResponse(last.note)

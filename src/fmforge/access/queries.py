"""The audit questions, as entry points (``audit.read`` on ``audit``, decided and recorded
like any read): who read a resource in a window, what was denied, who could read it at a
moment. ``fmforge audit ...`` and the server's ``/api/audit/...`` ask these.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from fmforge.access import targets
from fmforge.access.authorizer import Decision
from fmforge.access.mediation import mediated
from fmforge.access.views import AccessLogView, AccessRecord, Reader

if TYPE_CHECKING:
    from fmforge.repository import Repository

_AUDIT = targets.fixed("audit")


@mediated("audit.read", _AUDIT)
def who_read(
    repo: Repository, resource: str, since: float = 0.0, until: float = float("inf")
) -> list[Reader]:
    """Every principal allowed to read ``resource`` (a root such as ``dataset/yt`` or a
    version) between ``since`` and ``until`` (epoch seconds), most reads first."""
    return repo.view(AccessLogView).who_read(resource, since, until)


@mediated("audit.read", _AUDIT)
def denied(
    repo: Repository,
    actor: str | None = None,
    since: float = 0.0,
    until: float = float("inf"),
    limit: int = 1000,
) -> list[AccessRecord]:
    """Denied requests, newest first, of one principal or of everyone."""
    return repo.view(AccessLogView).denied(actor, since, until, limit)


@mediated("audit.read", _AUDIT)
def could_read(
    repo: Repository,
    resource: str,
    *,
    at: float | None = None,
    action: str = "read",
    purpose: str | None = None,
) -> list[Decision]:
    """Every principal's decision on ``action`` on ``resource``, as the policy stood at the
    moment ``at`` (epoch seconds; default now): grants, rules and tokens replayed."""
    from fmforge.access.mediation import gate

    control = gate(repo).control
    seq = None
    if at is not None:
        moment = datetime.fromtimestamp(at, UTC)
        iso = moment.isoformat(timespec="microseconds").replace("+00:00", "Z")
        seq = repo.ledger.first_seq_at(iso) - 1
    return control.could(action, resource, at_seq=seq, purpose=purpose)

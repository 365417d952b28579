"""Complete mediation: the one function every public entry point of the library, and every
HTTP route, goes through before it touches the object store.

``@mediated(action, resource)`` marks an entry point: a call decides ``action`` on the
resource its arguments name (resolved: ``dataset/yt@v3``, ``model/m@<commit>``), and on any
other resource it needs (a merge's sources, finetune's base model and output), with the
principal and purpose of the moment, and records the decision (``AccessGranted`` /
``AccessDenied``, durable before the function runs: audit before release). An entry point
called inside another (a merge reading its sources, finetune committing its result) is
covered by the outer call's decision and records nothing more; one called by an HTTP route
(whose request the server recorded) decides again, a cached lookup, and records only a
denial. So each call, allowed or denied, yields exactly one access event.

**When.** Access control is off by default (a single user's embedded repository): nothing is
decided and nothing recorded, so a read appends nothing. It is on when the setting
``access.enabled`` says so, or a policy is in force (``fmforge access policy set``) that does
not say ``enabled: false``.

**Who.** Over HTTP, the principal the server authenticated (``calling_as``, set by
``fmforge.server.identity``). In the library and the CLI, with access control on, the
principal of the token in ``FMFORGE_TOKEN`` (a missing, unknown, expired or revoked token is
denied and recorded as such), else the configured user (``user:`` and the ``user.name``
setting), recorded as that. Locally this records who and prevents mistakes; whoever can read
``.fmforge/`` bypasses it (the threat model in docs/architecture.md).

**Why.** ``with purpose("commercial"):`` (the CLI's ``--purpose``) is the request's purpose,
which licences and consent are checked against.

**What is released.** An entry point that returns rows asks ``presenting()``: the outermost
call presents the data as its decision allows (``fmforge.access.cells``: personal-data
columns masked, encrypted cells decrypted, forgotten subjects' rows dropped); inside another
call the stored cells pass through as stored, so a merge or a cleaning writes back what it
read.
"""

from __future__ import annotations

import functools
import inspect
import os
import threading
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from fmforge.access.authorizer import Context, Decision
from fmforge.access.events import POLICY
from fmforge.access.facts import AccessFactsView
from fmforge.access.principals import ANONYMOUS
from fmforge.access.resources import parse_resource
from fmforge.access.sessions import Session
from fmforge.access.tokens import TokenRecord
from fmforge.errors import Unauthenticated

if TYPE_CHECKING:
    from fmforge.repository import Repository

TOKEN_ENV = "FMFORGE_TOKEN"
F = TypeVar("F", bound=Callable[..., Any])
Need = tuple[str, str]
"""(action, resource) a call needs."""
Resolver = Callable[["Repository", Mapping[str, Any]], "str | Sequence[Need]"]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a request comes from, as a server authenticated it."""

    principal: str
    token: TokenRecord | None = None
    via: str = "http"
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Call:
    """A mediated call in progress: its decision (None with access control off), whether it
    runs inside another entry point (``nested``), and whether its request was recorded."""

    decision: Decision | None
    nested: bool
    library: bool = True
    recorded: bool = True


_caller: ContextVar[Caller | None] = ContextVar("fmforge_caller", default=None)
_purpose: ContextVar[str | None] = ContextVar("fmforge_purpose", default=None)
_via: ContextVar[str] = ContextVar("fmforge_via", default="library")
_call: ContextVar[Call | None] = ContextVar("fmforge_call", default=None)


@contextmanager
def calling_as(caller: Caller) -> Iterator[None]:
    """Decide every call in this context (thread or task) for ``caller``."""
    token = _caller.set(caller)
    try:
        yield
    finally:
        _caller.reset(token)


@contextmanager
def purpose(name: str | None) -> Iterator[None]:
    """The purpose of every call in this context (``commercial``, ``research``, ...)."""
    token = _purpose.set(name or None)
    try:
        yield
    finally:
        _purpose.reset(token)


def bind_purpose(name: str | None) -> None:
    """The purpose of every call this thread makes from now on (a server's worker threads,
    set once as they start)."""
    _purpose.set(name or None)


def bind_via(name: str) -> None:
    """What every call of this thread comes through from now on (``cli``), for the record."""
    _via.set(name)


@contextmanager
def via(name: str) -> Iterator[None]:
    """What the calls in this context come through (``cli``), for the record."""
    token = _via.set(name)
    try:
        yield
    finally:
        _via.reset(token)


@contextmanager
def request_recorded(decision: Decision | None) -> Iterator[None]:
    """Run a request whose access event is recorded already (an HTTP route's): the entry
    points it calls decide but record only denials, and present data as outermost calls."""
    token = _call.set(Call(decision, nested=False, library=False, recorded=True))
    try:
        yield
    finally:
        _call.reset(token)


def current_caller() -> Caller | None:
    """Who the server authenticated for the request in progress, if anyone."""
    return _caller.get()


def current() -> Call | None:
    """The mediated call in progress, if any."""
    return _call.get()


def current_purpose() -> str | None:
    return _purpose.get()


# ---- one repository's gate ------------------------------------------------------------------


class Gate:
    """Access control as one repository's entry points meet it: whether it is on, who asks,
    the decision, its record."""

    def __init__(self, repo: Repository) -> None:
        from fmforge.access.control import AccessControl

        self.repo = repo
        self.control = AccessControl(repo)
        self._lock = threading.RLock()
        self._policy_version = -1
        self._policy_on = False
        self._head = -1
        self._facts_seq = 0

    def enabled(self) -> bool:
        """Whether access control is on (see the module docstring)."""
        if self.repo.settings["access.enabled"]:
            return True
        version = self.repo.ledger.stream_version(POLICY)
        if version == 0:
            return False
        if version != self._policy_version:
            with self._lock:
                self._policy_on = self.control.state().policy.enabled
                self._policy_version = version
        return self._policy_on

    def refresh(self) -> None:
        """Bring the compiled state and the facts up to what the ledger says now."""
        head = self.repo.ledger.head().seq
        if head == self._head:
            return
        with self._lock:
            self.control.authorizer()
            facts = self.repo.view(AccessFactsView).since(self._facts_seq)
            for fact in facts:
                self.control.set_facts(fact.resource, fact.attributes, fact.sources)
                self._facts_seq = max(self._facts_seq, fact.seq)
            self._head = head

    def configured_principal(self) -> str:
        user = str(self.repo.user)
        return user if user.split(":", 1)[0] in ("user", "service") else f"user:{user}"

    def who(self, primary: Need) -> tuple[str, TokenRecord | None, str, str | None]:
        """(principal, token, via, request id) of the call; a bad ``FMFORGE_TOKEN`` is a
        recorded denial of ``primary`` and ``Unauthenticated``."""
        caller = _caller.get()
        if caller is not None:
            return caller.principal, caller.token, caller.via, caller.request_id
        where = _via.get()
        token = os.environ.get(TOKEN_ENV)
        if token:
            try:
                record = self.control.authenticate(token)
            except Unauthenticated as exc:  # an expired or revoked token still names whose
                action, resource = primary
                known = self.control.token_record(token)
                who = known.principal if known else ANONYMOUS
                denial = Decision(False, who, action, resource, exc.reason, None, (), str(exc))
                self.control.record_decision(
                    denial, Context(_purpose.get()), known, None, where, ()
                )
                raise
            return record.principal, record, where, None
        return self.configured_principal(), None, where, None

    def decide(self, needs: Sequence[Need], *, record: bool) -> Decision:
        """Decide every need; record the first denial (always) or, with ``record``, the
        grant of the first need; raise ``AccessDenied`` on a denial."""
        principal, token, where, request_id = self.who(needs[0])
        context = Context(_purpose.get())
        granted: Decision | None = None
        for action, resource in needs:
            decision = self.control.decide(principal, action, resource, context, token=token)
            if not decision.allowed:
                self.control.record_decision(decision, context, token, request_id, where, ())
                decision.require()
            granted = granted or decision
        assert granted is not None
        if record:
            also = [f"{a} {r}" for a, r in needs[1:]]
            self.control.record_decision(granted, context, token, request_id, where, (), also=also)
        return granted

    def authorize_request(
        self,
        token: str | None,
        username: str | None,
        needs: Sequence[Need],
        *,
        request_id: str,
        via: str = "http",
        purpose: str | None = None,
        session: Session | None = None,
        csrf: bool = True,
        authenticated: str | None = None,
    ) -> tuple[Decision, TokenRecord | None]:
        """Authenticate a request's token (Basic's ``username`` must be its principal's), or
        its dashboard ``session``, and decide its needs: exactly one access event, granted or
        denied, recorded before it returns; ``Unauthenticated`` (401) or ``AccessDenied``
        (403) when refused. A session's change without its CSRF token (``csrf`` False) is
        denied (``csrf``). ``authenticated``: the route is any authenticated principal's, and
        the grant recorded is that action on ``repository``."""
        self.refresh()
        context = Context(purpose or _purpose.get())
        action, resource = needs[0]
        sid = session.session_id if session is not None else None
        record: TokenRecord | None = None
        try:
            if session is not None:
                principal = self._session_principal(session)
            else:
                record = self.control.authenticate(token)
                principal = record.principal
                if username is not None and username not in (principal, principal.split(":")[1]):
                    raise Unauthenticated(
                        "unknown_token", f"the token is not {username}'s (Basic user name)"
                    )
        except Unauthenticated as exc:
            known = self.control.token_record(token) if token else None
            who = known.principal if known else (session and session.principal) or ANONYMOUS
            denial = Decision(False, who, action, resource, exc.reason, None, (), str(exc))
            self.control.record_decision(denial, context, known, request_id, via, (), session=sid)
            raise
        if not csrf:
            detail = "a change made with the session cookie needs its X-CSRF-Token header"
            denial = Decision(False, principal, action, resource, "csrf", None, (), detail)
            self.control.record_decision(denial, context, None, request_id, via, (), session=sid)
            denial.require()
        if authenticated is not None:
            granted = Decision(True, principal, authenticated, "repository", "authenticated")
            self.control.record_decision(granted, context, record, request_id, via, (), session=sid)
            return granted, record
        found: Decision | None = None
        for need_action, need_resource in needs:
            decision = self.control.decide(
                principal, need_action, need_resource, context, token=record
            )
            if not decision.allowed:
                self.control.record_decision(
                    decision, context, record, request_id, via, (), session=sid
                )
                decision.require()
            found = found or decision
        assert found is not None
        also = [f"{a} {r}" for a, r in needs[1:]]
        self.control.record_decision(
            found, context, record, request_id, via, (), also=also, session=sid
        )
        return found, record

    def _session_principal(self, session: Session) -> str:
        """The principal of a signed session, while its password and the principal stand."""
        if not session.session_id:  # a cookie whose signature fails, or that has ended
            raise Unauthenticated("bad_session", "the session cookie is invalid or has ended")
        state = self.control.state()
        found = state.principals.get(session.principal)
        password = state.passwords.get(session.principal)
        if found is None or found.disabled:
            raise Unauthenticated("session_ended", f"{session.principal} is disabled")
        if password is None or password[1] != session.password_seq:
            raise Unauthenticated("session_ended", "the password changed since: log in again")
        if session.session_id in self.logged_out():
            raise Unauthenticated("session_ended", "the session was logged out")
        return session.principal

    def logged_out(self) -> set[str]:
        """The ids of sessions whose ``POST /logout`` is recorded (the ``EndedSessions``
        view of the ledger, so a logout holds across restarts and server processes)."""
        from fmforge.access.views import EndedSessions

        return self.repo.view(EndedSessions)

    def record_login(
        self, decision: Decision, *, request_id: str, session: str | None = None
    ) -> None:
        """Record a login attempt (granted or denied): the request's one access event."""
        self.control.record_decision(
            decision, Context(_purpose.get()), None, request_id, "http", (), session=session
        )


_gates: weakref.WeakKeyDictionary[Repository, Gate] = weakref.WeakKeyDictionary()
_gates_lock = threading.Lock()


def gate(repo: Repository) -> Gate:
    """The gate of ``repo`` (one per open repository)."""
    found = _gates.get(repo)
    if found is None:
        with _gates_lock:
            found = _gates.get(repo)
            if found is None:
                found = _gates[repo] = Gate(repo)
    return found


def enabled(repo: Repository) -> bool:
    return gate(repo).enabled()


def _needs(resolved: str | Sequence[Need], action: str) -> list[Need]:
    if isinstance(resolved, str):
        return [(action, parse_resource(resolved).text)]
    return [(a, parse_resource(r).text) for a, r in resolved]


@contextmanager
def resolving() -> Iterator[None]:
    """Naming what a call or a request touches (``resolve`` of ``NAME@REF``): entry points
    called for it are part of that call, and record nothing of their own."""
    token = _call.set(Call(None, nested=True))
    try:
        yield
    finally:
        _call.reset(token)


@contextmanager
def mediate(
    repo: Repository, action: str, resource: Callable[[], str | Sequence[Need]]
) -> Iterator[Call]:
    """Decide (and record) one call: ``resource()`` names what it touches (a resource, or
    (action, resource) needs, the first the one recorded). Runs the body as the call, its
    principal stamped on what it records."""
    parent = _call.get()
    nested = parent is not None and parent.library
    keeper = gate(repo)
    if nested or not keeper.enabled():  # inside another entry point: its decision covers it
        token = _call.set(Call(parent.decision if nested else None, nested=nested))  # type: ignore[union-attr]
        try:
            yield _call.get()  # type: ignore[misc]
        finally:
            _call.reset(token)
        return
    keeper.refresh()
    with resolving():
        needs = _needs(resource(), action)
    recorded = parent is not None and parent.recorded
    decision = keeper.decide(needs, record=not recorded)
    call = Call(decision, nested=nested)
    token = _call.set(call)
    try:
        if _caller.get() is None and decision.principal != keeper.configured_principal():
            from fmforge.repository import acting_as

            with acting_as(decision.principal):
                yield call
        else:
            yield call
    finally:
        _call.reset(token)


def mediated(action: str, resource: Resolver, *, repo: str = "repo") -> Callable[[F], F]:
    """Mark a public entry point: each call is decided and recorded (``mediate``) with the
    resource ``resource(repo, arguments)`` names. ``repo`` names the argument holding the
    repository (``self``: a method of an object with a ``repo``); when it is None (functions
    that open the repository here themselves), the repository found here is asked."""

    def wrap(fn: F) -> F:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            arguments = bound.arguments
            given = arguments["self"].repo if repo == "self" else arguments.get(repo)
            if given is None:
                from fmforge.repository import Repository

                with (
                    Repository.open() as opened,
                    mediate(opened, action, lambda: resource(opened, arguments)),
                ):
                    return fn(*args, **kwargs)
            with mediate(given, action, lambda: resource(given, arguments)):
                return fn(*args, **kwargs)

        inner.__fmforge_mediated__ = action  # type: ignore[attr-defined]
        return inner  # type: ignore[return-value]

    return wrap


def is_mediated(fn: Any) -> bool:
    """Whether ``fn`` (a function, or a class whose constructor is) is a mediated entry point."""
    target = fn.__init__ if inspect.isclass(fn) else fn
    return hasattr(target, "__fmforge_mediated__")


def new_request_id() -> str:
    return uuid.uuid4().hex

"""Typed events: each domain declares its event types once, and every append is checked here.

A domain (``fmforge/<domain>/events.py``) declares an ``EventType`` per fact it records: a
stable name, a schema version and a payload schema (a ``TypedDict``, validated strictly by
pydantic: no coercion, no unknown keys), and a ``Domain`` naming the stream prefixes it owns.
``EventRegistry`` holds every domain, listed explicitly in ``fmforge.events`` (no registration
by import side effect).

Two rules follow from it:

- **Reserved streams.** A domain's streams (``model/``, ``dataset/``, ``run/``, ...) and its
  event types are written only through the repository's write path (``Repository.record``),
  which validates each payload against its type's schema and stamps who did it. The ledger's
  public ``append`` (and ``fmforge events append``) records outside facts and refuses a
  reserved stream or a domain type with one line naming the command to use.
- **Validated payloads.** Only payloads that match their schema reach the ledger, so a
  projection never meets an event it cannot apply; when one fails anyway, it is a bug.

The pydantic validator of each type is built on first use, so reading commands never pay for
it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from fmforge.errors import InvalidEvent
from fmforge.ledger.events import NewEvent, new_event_id

if TYPE_CHECKING:
    from pydantic import TypeAdapter

P = TypeVar("P", bound=Mapping[str, Any])

DIGEST_PATTERN = r"^[0-9a-f]{64}$"
_STRICT = {"strict": True, "extra": "forbid"}
Check = Callable[[str, Mapping[str, Any]], "str | None"]


class EventType(Generic[P]):
    """One kind of fact: ``ModelCommitted = EventType("ModelCommitted", ModelCommittedData)``.

    Calling it builds the ``NewEvent`` to record: ``ModelCommitted({...}, refs=(digest,))``.
    ``check``: an extra rule over the stream and whole payload (a cross-field constraint),
    returning a problem or None.
    """

    def __init__(
        self,
        name: str,
        payload: type[P],
        *,
        schema_version: int = 1,
        check: Check | None = None,
    ) -> None:
        self.name = name
        self.payload = payload
        self.schema_version = schema_version
        self.check = check
        self._adapter: TypeAdapter[Any] | None = None
        self._many: TypeAdapter[Any] | None = None
        # The pydantic config of a TypedDict is an attribute of the class.
        payload.__pydantic_config__ = _STRICT  # type: ignore[attr-defined]

    def __call__(
        self,
        data: P,
        *,
        refs: Iterable[str] = (),
        event_id: str | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> NewEvent:
        return NewEvent(
            self.name,
            data,
            schema_version=self.schema_version,
            event_id=event_id or new_event_id(),
            refs=tuple(refs),
            meta=meta or {},
        )

    def validate(self, stream: str, data: Mapping[str, Any]) -> None:
        """Raise ``InvalidEvent`` naming the first field that does not match the schema."""
        adapter = self._adapter
        if adapter is None:
            from pydantic import TypeAdapter

            adapter = self._adapter = TypeAdapter(self.payload)
        from pydantic import ValidationError

        try:
            adapter.validate_python(data)
        except ValidationError as exc:
            raise InvalidEvent(f"{self.name}: {_first_problem(exc)}") from None
        if self.check is not None:
            problem = self.check(stream, data)
            if problem:
                raise InvalidEvent(f"{self.name}: {problem}")

    def validate_many(self, stream: str, payloads: list[Mapping[str, Any]]) -> None:
        """``validate`` for many payloads at once (one pydantic call for the list)."""
        many = self._many
        if many is None:
            from pydantic import TypeAdapter

            many = self._many = TypeAdapter(list[self.payload])  # type: ignore[name-defined]
        from pydantic import ValidationError

        try:
            many.validate_python(payloads)
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            index = error["loc"][0] if error["loc"] else 0
            self.validate(stream, payloads[int(index)])  # the one-line message for that event
            raise InvalidEvent(f"{self.name}: {_first_problem(exc)}") from None
        if self.check is not None:
            for data in payloads:
                problem = self.check(stream, data)
                if problem:
                    raise InvalidEvent(f"{self.name}: {problem}")

    def __repr__(self) -> str:
        return f"EventType({self.name!r}, v{self.schema_version})"


def _first_problem(exc: Any) -> str:
    error = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in error["loc"]) or "payload"
    message = str(error["msg"])
    if error["type"] == "extra_forbidden":
        message = "is not a field of this event"
    elif error["type"] == "missing":
        message = "is missing"
    return f"{where} {message}" if where != "payload" else f"payload: {message}"


@dataclass(frozen=True)
class Domain:
    """A domain's event types and the streams it owns.

    ``streams``: stream-name prefixes (``"model/"``) or whole names (``"repository"``) only
    this domain writes. ``writer``: the commands that record these events, for messages.
    """

    name: str
    streams: tuple[str, ...]
    types: tuple[EventType[Any], ...]
    writer: str
    check: Check | None = field(default=None)  # a rule every event of the domain obeys

    def owns(self, stream: str) -> bool:
        return any(stream.startswith(p) if p.endswith("/") else stream == p for p in self.streams)


_STREAM_SEGMENT = re.compile(r"[^\s/\\]+\Z")


def check_stream_name(stream: str) -> None:
    """Segments separated by ``/``, none empty, ``.`` or ``..``, no whitespace or backslash."""
    parts = stream.split("/")
    if any(p in ("", ".", "..") or not _STREAM_SEGMENT.match(p) for p in parts):
        raise InvalidEvent(
            f"invalid stream name {stream!r}: segments separated by '/', none empty, '.' or "
            "'..', without spaces or backslashes (e.g. 'notes/2026')"
        )


class EventRegistry:
    """Every domain's event types, by name, and the streams they own."""

    def __init__(self, domains: Sequence[Domain]) -> None:
        self.domains = tuple(domains)
        self.types: dict[str, tuple[Domain, EventType[Any]]] = {}
        for domain in self.domains:
            for event_type in domain.types:
                if event_type.name in self.types:
                    raise ValueError(f"event type {event_type.name} is declared twice")
                self.types[event_type.name] = (domain, event_type)

    def domain_of(self, stream: str) -> Domain | None:
        for domain in self.domains:
            if domain.owns(stream):
                return domain
        return None

    def current_version(self, event_type: str) -> int | None:
        found = self.types.get(event_type)
        return None if found is None else found[1].schema_version

    def check_outside(self, stream: str, event: NewEvent) -> None:
        """An outside fact (``events append``): refused on a reserved stream or as a domain
        type, naming the commands that record it."""
        domain = self.domain_of(stream)
        if domain is not None:
            raise InvalidEvent(
                f"stream {stream!r} is reserved for fmforge's {domain.name} domain: "
                f"it is written only by {domain.writer}"
            )
        found = self.types.get(event.type)
        if found is not None:
            raise InvalidEvent(
                f"{event.type} is an fmforge {found[0].name} event, recorded only by "
                f"{found[0].writer}; record outside facts under another type name"
            )
        check_stream_name(stream)

    def validate_all(self, stream: str, events: Sequence[NewEvent]) -> None:
        """``validate`` for every event of one append (the stream's domain found once, the
        payloads of each type validated in one call)."""
        domain = self.domain_of(stream)
        groups: dict[str, list[Mapping[str, Any]]] = {}
        for event in events:
            self._check_type(stream, event, domain)
            groups.setdefault(event.type, []).append(event.data)
        for type_name, payloads in groups.items():
            owner, event_type = self.types[type_name]
            if len(payloads) == 1:
                event_type.validate(stream, payloads[0])
            else:
                event_type.validate_many(stream, payloads)
            if owner.check is not None:
                for data in payloads:
                    problem = owner.check(stream, data)
                    if problem:
                        raise InvalidEvent(f"{type_name} on {stream!r}: {problem}")

    def validate(self, stream: str, event: NewEvent) -> None:
        """A domain event: its type is declared, by the domain owning ``stream``, at this
        schema version, and its payload matches the schema."""
        self.validate_all(stream, [event])

    def _check_type(self, stream: str, event: NewEvent, domain: Domain | None) -> None:
        found = self.types.get(event.type)
        if found is None:
            if domain is not None:
                raise InvalidEvent(
                    f"{event.type} is not an event type of the {domain.name} domain, which owns "
                    f"stream {stream!r}"
                )
            raise InvalidEvent(f"{event.type} is not a registered event type")
        owner, event_type = found
        if domain is not owner:
            raise InvalidEvent(
                f"{event.type} belongs on a stream of the {owner.name} domain "
                f"({', '.join(owner.streams)}), not {stream!r}"
            )
        if event.schema_version != event_type.schema_version:
            raise InvalidEvent(
                f"{event.type}: schema version {event.schema_version} is not the current "
                f"one ({event_type.schema_version})"
            )
        if not isinstance(event.data, dict):
            raise InvalidEvent(f"{event.type}: the payload must be a JSON object")

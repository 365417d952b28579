"""Upcasters: pure functions that lift an old event payload to the next schema version.

Stored events are never rewritten; readers see every event at its type's newest schema version.
An upcaster is registered for ``(type, from_version)`` and returns the payload of
``from_version + 1``. ``validate()`` runs when a store opens and refuses chains with gaps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fmforge.errors import UpcasterError

Payload = dict[str, Any]
Upcaster = Callable[[Payload], Payload]


class UpcasterRegistry:
    def __init__(self) -> None:
        self._upcasters: dict[tuple[str, int], Upcaster] = {}
        self._current: dict[str, int] = {}

    def register(self, event_type: str, from_version: int, upcaster: Upcaster) -> None:
        """Register ``upcaster`` lifting ``event_type`` payloads from ``from_version`` to +1."""
        if from_version < 1:
            raise UpcasterError(f"{event_type}: schema versions start at 1, got {from_version}")
        key = (event_type, from_version)
        if key in self._upcasters:
            raise UpcasterError(f"{event_type}: an upcaster from v{from_version} is registered")
        self._upcasters[key] = upcaster
        self._current[event_type] = max(self._current.get(event_type, 1), from_version + 1)

    def current_version(self, event_type: str) -> int:
        return self._current.get(event_type, 1)

    def validate(self) -> None:
        """Every type must have an unbroken chain of upcasters from v1 to its current version."""
        for event_type, current in self._current.items():
            missing = [v for v in range(1, current) if (event_type, v) not in self._upcasters]
            if missing:
                raise UpcasterError(
                    f"{event_type}: no upcaster from schema version(s) "
                    f"{', '.join(map(str, missing))} (current is v{current})"
                )

    def upcast(
        self, event_type: str, schema_version: int, data: Mapping[str, Any]
    ) -> tuple[int, Payload]:
        """Return ``(newest_version, payload)``; the input payload is not modified."""
        current = self._current.get(event_type)
        if current is None or schema_version >= current:
            return schema_version, data if isinstance(data, dict) else dict(data)
        payload = dict(data)
        version = schema_version
        while version < current:
            step = self._upcasters.get((event_type, version))
            if step is None:
                raise UpcasterError(f"{event_type}: no upcaster from schema version {version}")
            try:
                payload = step(dict(payload))
            except Exception as exc:
                raise UpcasterError(
                    f"{event_type}: upcaster from v{version} failed: {exc}"
                ) from exc
            version += 1
        return version, payload

    def __bool__(self) -> bool:
        return bool(self._upcasters)

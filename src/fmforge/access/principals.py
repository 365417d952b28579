"""Principals: who acts. ``user:NAME``, ``service:NAME`` (CI, serving replicas) and
``group:NAME``, each with attributes that policy conditions read (``pii_cleared``,
``purposes`` such as ``research`` or ``commercial``, ``org``, ...).

A new principal has no access: only grants give it some. ``anonymous`` is what a request
without credentials is, for the record; it can hold no grant.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fmforge.errors import InvalidPolicy

KINDS = ("user", "service", "group")
ANONYMOUS = "anonymous"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}\Z")
_ATTRIBUTE = re.compile(r"[a-z][a-z0-9_]{0,63}\Z")

AttributeValue = str | bool | int | list[str]


def check_principal(text: object, kinds: tuple[str, ...] = KINDS) -> str:
    """``text`` if it is ``KIND:NAME`` with a kind of ``kinds``; else ``InvalidPolicy``."""
    if not isinstance(text, str) or ":" not in text:
        raise InvalidPolicy(
            f"invalid principal {text!r}: KIND:NAME with KIND one of {', '.join(kinds)} "
            "(e.g. user:alice)"
        )
    kind, name = text.split(":", 1)
    if kind not in kinds:
        raise InvalidPolicy(
            f"invalid principal {text!r}: the kind must be one of {', '.join(kinds)}"
        )
    if not _NAME.match(name):
        raise InvalidPolicy(
            f"invalid principal {text!r}: the name is 1-128 letters, digits and '._@+-', "
            "starting with a letter or digit"
        )
    return text


def check_attributes(attributes: Mapping[str, Any]) -> dict[str, AttributeValue]:
    """Attributes as policy conditions read them: snake_case names; strings, booleans,
    integers or lists of strings."""
    out: dict[str, AttributeValue] = {}
    for key, value in attributes.items():
        if not isinstance(key, str) or not _ATTRIBUTE.match(key):
            raise InvalidPolicy(f"invalid attribute name {key!r}: snake_case, 1-64 characters")
        ok = isinstance(value, str | bool | int) or (
            isinstance(value, list) and all(isinstance(v, str) for v in value)
        )
        if not ok:
            raise InvalidPolicy(
                f"attribute {key!r}: {value!r} is not a string, boolean, integer or list of strings"
            )
        out[key] = value
    return out


@dataclass(frozen=True)
class Principal:
    """A principal as the ledger tells it."""

    name: str
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)
    groups: frozenset[str] = frozenset()
    disabled: bool = False

    @property
    def kind(self) -> str:
        return self.name.split(":", 1)[0]

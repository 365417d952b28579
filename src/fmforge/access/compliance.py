"""Compliance rules checked at the moment of access: named ``forbid`` rules over the facts
the ledger holds about a resource and what it was made from.

- ``pii`` (reason ``forbid:pii``): reading a column tagged ``pii`` needs ``read_pii`` on it, a
  principal that is ``pii_cleared``, and a purpose the data's consent covers
  (``consent_purposes``); otherwise the column is masked or the read denied, per policy.
- ``licence`` (``forbid:licence``): ``use`` or ``export`` for a purpose that the licence of the
  resource, or of anything it was made from (its lineage), excludes: a model trained from a
  non-commercial dataset refuses ``use`` for ``purpose=commercial`` as the dataset does.
- ``retention`` (``retention``): reads and use end at ``retention_until``.
- ``protected`` (``forbid:protected``): a commit to a branch marked ``protected`` needs
  ``bypass_protection``.
- ``unlearning`` (``forbid:unlearning``): ``use`` of what is derived from forgotten data
  (``needs_unlearning``) until it is retrained.

Lineage is an input: ``lineage_closure`` takes the edges (a model commit → the run that made
it → the dataset versions that run read) from whoever knows them (the integration phase reads
them from the models' provenance and the runs' datasets).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

NON_COMMERCIAL = re.compile(r"(?i)(^|-)NC(-|$)|non-?commercial")
"""Licence ids read as non-commercial: Creative Commons NC variants (CC-BY-NC-4.0,
CC-BY-NC-SA-4.0, CC-BY-NC-ND-4.0, ...) and names saying non-commercial."""

READS = frozenset({"read", "read_pii", "export", "use"})
LICENSED = frozenset({"use", "export"})


def excluded_purposes(licence: str, table: Mapping[str, Iterable[str]]) -> frozenset[str]:
    """The purposes ``licence`` excludes: the policy's table first, then the built-in rule
    that non-commercial licences exclude ``commercial``."""
    if licence in table:
        return frozenset(table[licence])
    return frozenset({"commercial"}) if NON_COMMERCIAL.search(licence) else frozenset()


def lineage_closure(resource: str, sources_of: Callable[[str], Iterable[str]]) -> list[str]:
    """Everything ``resource`` was made from, transitively, nearest first, each once (a cycle
    in bad lineage data ends the walk instead of looping)."""
    seen: set[str] = {resource}
    out: list[str] = []
    frontier = [resource]
    while frontier:
        following: list[str] = []
        for item in frontier:
            for source in sources_of(item):
                if source not in seen:
                    seen.add(source)
                    out.append(source)
                    following.append(source)
        frontier = following
    return out


def licence_violation(
    purpose: str | None,
    resources: Iterable[str],
    attributes_of: Callable[[str], Mapping[str, Any]],
    table: Mapping[str, Iterable[str]],
) -> tuple[str, str] | None:
    """The first of ``resources`` (the resource, then its lineage) whose licence excludes
    ``purpose``, with that licence; None when all allow it (or there is no purpose)."""
    if not purpose:
        return None
    for resource in resources:
        licence = attributes_of(resource).get("licence")
        if isinstance(licence, str) and purpose in excluded_purposes(licence, table):
            return resource, licence
    return None


def flagged(resources: Iterable[str], attributes_of: Callable[[str], Mapping[str, Any]]) -> str:
    """The first resource flagged ``needs_unlearning``, or ''."""
    for resource in resources:
        if attributes_of(resource).get("needs_unlearning"):
            return resource
    return ""


def pii_blocked(
    column: str,
    attributes: Mapping[str, Any],
    principal: Mapping[str, Any],
    purpose: str | None,
    may_read_pii: bool,
) -> str:
    """Why reading ``column`` is blocked by the pii rule ('' when it is not): the column is
    tagged and the principal lacks ``read_pii``, clearance, or a purpose the consent covers."""
    if column not in (attributes.get("pii_columns") or ()):
        return ""
    if not may_read_pii:
        return f"column {column!r} is personal data and no grant gives read_pii on it"
    if principal.get("pii_cleared") is not True:
        return f"column {column!r} is personal data and the principal is not pii_cleared"
    consent = attributes.get("consent_purposes")
    if consent is not None and purpose not in consent:
        return (
            f"column {column!r} is personal data whose consent covers "
            f"{', '.join(consent) or 'no purpose'}, not {purpose or 'an unstated purpose'}"
        )
    return ""

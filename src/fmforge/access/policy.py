"""The policy: actions, roles, rules with conditions, compliance switches and resource
attributes, as one frozen pydantic spec loadable from YAML.

The decision follows Cedar's semantics (``fmforge.access.authorizer``): **default deny**; a
request is allowed when some grant or ``permit`` rule matches it and **no** ``forbid`` rule
(user-written or one of the compliance rules) does; a matching ``forbid`` always wins.

A policy file::

    version: 1
    enabled: true           # access control on (the default once a policy is in force)
    compliance:
      pii: mask             # mask | deny | off: a pii column without clearance
      licence: true         # a licence excluding the purpose refuses use/export (+ lineage)
      retention: true       # reads end at retention_until
      protected_branches: true
      unlearning: deny      # deny | off: use of what is flagged needs_unlearning
    licences:               # licence -> purposes it excludes (CC-BY-NC-* built in)
      my-research-only: [commercial]
    resources:              # attributes of resources and their children, by pattern
      dataset/youtube:
        licence: CC-BY-NC-4.0
        consent_purposes: [research]
        pii_columns: [author]
    rules:
      - id: contractors-no-export
        effect: forbid
        principals: [group:contractors]
        actions: [export]
        resources: ["dataset/*"]
        when: [{attr: context.purpose, op: ne, value: research}]

A condition reads ``principal.X`` (attributes, and ``name``, ``kind``, ``groups``),
``resource.X`` (attributes, and ``kind``, ``name``, ``column``, ``text``) or ``context.X``
(``purpose`` and what the caller passes), compares it with ``value`` or with another attribute
named by ``ref``, using ``eq ne in not_in contains not_contains lt le gt ge exists missing``.
A rule applies when every ``when`` condition holds and no ``unless`` condition does. A missing
attribute makes a comparison false (and ``missing`` true).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from fmforge.access.principals import check_principal
from fmforge.access.resources import compile_patterns
from fmforge.errors import InvalidPolicy

DATA_ACTIONS = ("list", "read_meta", "read", "read_pii", "export", "write", "label", "clean",
                "forget")  # fmt: skip
MODEL_ACTIONS = ("use", "commit", "merge", "branch", "tag", "bypass_protection")
GOVERNANCE_ACTIONS = ("grant", "own", "audit.read", "policy.manage", "admin")
ACTIONS: tuple[str, ...] = DATA_ACTIONS + MODEL_ACTIONS + GOVERNANCE_ACTIONS
"""Every action a grant, rule or token scope may name."""

_VIEWER = ("list", "read_meta", "read")
_USER = (*_VIEWER, "use")
_EDITOR = (*_USER, "write", "label", "clean", "commit", "branch", "tag")
_MAINTAINER = (*_EDITOR, "merge", "export", "forget")
_OWNER = (*_MAINTAINER, "read_pii", "bypass_protection", "grant", "own")
ROLES: dict[str, tuple[str, ...]] = {
    "viewer": _VIEWER,
    "user": _USER,
    "editor": _EDITOR,
    "maintainer": _MAINTAINER,
    "owner": _OWNER,
    "auditor": ("list", "read_meta", "audit.read"),
    "admin": ACTIONS,
}
"""Roles bundle actions: viewer ⊂ user ⊂ editor ⊂ maintainer ⊂ owner; auditor and admin
beside them. A grant records the actions its role had when granted."""

Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
AttrRef = Annotated[
    str, StringConstraints(pattern=r"^(principal|resource|context)\.[a-z][a-z0-9_]{0,63}$")
]
Value = str | bool | int | float | list[str]
_SPEC = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


def _checked(check: Any, value: str) -> None:
    """Run a checker raising ``InvalidPolicy`` inside a pydantic validator (which reports only
    ``ValueError``s with their location)."""
    try:
        check(value)
    except InvalidPolicy as exc:
        raise ValueError(str(exc)) from None


class Condition(BaseModel):
    model_config = _SPEC

    attr: AttrRef
    op: Literal[
        "eq", "ne", "in", "not_in", "contains", "not_contains", "lt", "le", "gt", "ge",
        "exists", "missing",
    ]  # fmt: skip
    value: Value | None = None
    ref: AttrRef | None = None

    @model_validator(mode="after")
    def _one_operand(self) -> Condition:
        unary = self.op in ("exists", "missing")
        given = (self.value is not None) + (self.ref is not None)
        if unary and given:
            raise ValueError(f"op {self.op} takes neither value nor ref")
        if not unary and given != 1:
            raise ValueError(f"op {self.op} takes exactly one of value or ref")
        return self


class Rule(BaseModel):
    """A ``permit`` or ``forbid`` over principals, actions and resources, with conditions."""

    model_config = _SPEC

    id: Slug
    effect: Literal["permit", "forbid"]
    principals: tuple[str, ...] = ("*",)
    actions: tuple[str, ...] = Field(min_length=1)
    resources: tuple[str, ...] = ("**",)
    when: tuple[Condition, ...] = ()
    unless: tuple[Condition, ...] = ()
    description: str = ""

    @model_validator(mode="after")
    def _names(self) -> Rule:
        for principal in self.principals:
            if principal != "*":
                _checked(check_principal, principal)
        for action in self.actions:
            if action != "*" and action not in ACTIONS:
                raise ValueError(f"unknown action {action!r} (one of {', '.join(ACTIONS)})")
        for pattern in self.resources:
            _checked(compile_patterns, pattern)
        return self


class ResourceAttributes(BaseModel):
    """What a policy says about resources matching a pattern (and their children). The
    integration phase adds what the ledger says (a dataset's own column tags, a branch's
    protection) through ``Authorizer.set_facts``."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True, allow_inf_nan=False)

    licence: str | None = None
    consent_purposes: tuple[str, ...] | None = None
    pii_columns: tuple[str, ...] | None = None
    pii_mode: Literal["mask", "deny"] | None = None
    retention_until: datetime | None = None
    protected: bool | None = None
    needs_unlearning: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _dates(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("retention_until"), str):
            text = data["retention_until"].replace("Z", "+00:00")
            try:
                when = datetime.fromisoformat(text)
            except ValueError:
                raise ValueError("retention_until is not an ISO date or time") from None
            if when.tzinfo is None:
                raise ValueError("retention_until needs a time zone (e.g. 2030-01-01T00:00:00Z)")
            data = {**data, "retention_until": when}
        return data

    def values(self) -> dict[str, Any]:
        """The attributes set (None left out), extras included, dates as epoch seconds."""
        out = {k: v for k, v in self.model_dump().items() if v is not None}
        if self.retention_until is not None:
            out["retention_until"] = self.retention_until.timestamp()
        return out


class Compliance(BaseModel):
    model_config = _SPEC

    pii: Literal["mask", "deny", "off"] = "mask"
    licence: bool = True
    retention: bool = True
    protected_branches: bool = True
    unlearning: Literal["deny", "off"] = "deny"


class PolicySpec(BaseModel):
    """The whole policy in force (see the module docstring); ``PolicySet`` records it."""

    model_config = _SPEC

    version: Literal[1] = 1
    enabled: bool = True  # a policy in force turns access control on, unless it says false
    compliance: Compliance = Compliance()
    licences: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    resources: dict[str, ResourceAttributes] = Field(default_factory=dict)
    rules: tuple[Rule, ...] = ()
    roles: dict[Slug, tuple[str, ...]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> PolicySpec:
        for pattern in self.resources:
            _checked(compile_patterns, pattern)
        ids = [rule.id for rule in self.rules]
        duplicate = next((i for i in ids if ids.count(i) > 1), None)
        if duplicate:
            raise ValueError(f"rule id {duplicate!r} is used twice")
        for role, actions in self.roles.items():
            if role in ROLES:
                raise ValueError(f"role {role!r} is built in; choose another name")
            for action in actions:
                if action not in ACTIONS:
                    raise ValueError(f"role {role!r}: unknown action {action!r}")
        return self

    def role_actions(self, role: str) -> tuple[str, ...]:
        found = ROLES.get(role) or self.roles.get(role)
        if found is None:
            names = ", ".join([*ROLES, *self.roles])
            raise InvalidPolicy(f"unknown role {role!r} (one of {names})")
        return found

    def to_json(self) -> dict[str, Any]:
        return dict(self.model_dump(mode="json", exclude_defaults=True))

    def digest(self) -> str:
        return hashlib.sha256(orjson.dumps(self.to_json(), option=orjson.OPT_SORT_KEYS)).hexdigest()


def policy_from_json(data: Mapping[str, Any], name: str = "policy") -> PolicySpec:
    """A spec from its JSON form (a ``PolicySet`` payload); ``InvalidPolicy`` names the field."""
    try:
        return PolicySpec.model_validate(_tuples(data))
    except InvalidPolicy as exc:
        raise InvalidPolicy(f"{name}: {exc}") from None
    except ValidationError as exc:
        raise InvalidPolicy(f"{name}: {_problem(exc)[1]}") from None


MAX_POLICY_BYTES = 4 << 20
MAX_NODES = 200_000


def load_policy(source: Path | str, name: str = "<policy>") -> PolicySpec:
    """A spec from a YAML file (``Path``) or text; a problem is one line naming the file,
    line and column."""
    if isinstance(source, Path):
        name = str(source)
        try:
            with source.open("rb") as handle:
                raw = handle.read(MAX_POLICY_BYTES + 1)
        except OSError as exc:
            raise InvalidPolicy(f"{name}: {exc.strerror or exc}") from None
        if len(raw) > MAX_POLICY_BYTES:
            raise InvalidPolicy(f"{name}: larger than {MAX_POLICY_BYTES >> 20} MiB")
        text: bytes | str = raw
    else:
        text = source
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{mark.line + 1}:{mark.column + 1}:" if mark is not None else ""
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InvalidPolicy(f"{name}:{where} not valid YAML ({what})") from None
    if node is None:
        raise InvalidPolicy(f"{name}: empty; a policy is a mapping (version: 1, rules: ...)")
    _count(node, name)
    data = yaml.SafeLoader(text).get_single_data() if text else None
    if not isinstance(data, dict):
        raise InvalidPolicy(f"{name}: a policy is a mapping (version: 1, rules: ...)")
    try:
        return PolicySpec.model_validate(_tuples(data))
    except InvalidPolicy as exc:
        raise InvalidPolicy(f"{name}: {exc}") from None
    except ValidationError as exc:
        loc, message = _problem(exc)
        target = _locate(node, loc, key=message.endswith("is not a field here"))
        mark = target.start_mark
        raise InvalidPolicy(f"{name}:{mark.line + 1}:{mark.column + 1}: {message}") from None


def _tuples(value: Any) -> Any:
    """Lists as tuples (the spec's sequences are tuples; strict mode would refuse lists)."""
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def _problem(exc: ValidationError) -> tuple[tuple[Any, ...], str]:
    error = exc.errors(include_url=False)[0]
    loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and "[" in p))
    where = ".".join(str(p) for p in loc)
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "is not a field here"
    elif error["type"] == "missing":
        message = "is missing"
    return loc, f"{where} {message}" if where else message


def _locate(node: yaml.Node, loc: tuple[Any, ...], key: bool = False) -> yaml.Node:
    """The YAML node at a pydantic error location (as deep as the document goes); with
    ``key``, the last step's key rather than its value (a field that should not be there)."""
    for depth, part in enumerate(loc, 1):
        if isinstance(node, yaml.MappingNode):
            pair = next(((k, v) for k, v in node.value if k.value == str(part)), None)
            if pair is None:
                return node
            node = pair[0] if key and depth == len(loc) else pair[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return node
            node = node.value[part]
        else:
            return node
    return node


def _count(node: yaml.Node, name: str) -> None:
    """Refuse a document whose aliases expand to more than MAX_NODES nodes."""
    budget, stack = MAX_NODES, [node]
    while stack:
        current = stack.pop()
        budget -= 1
        if budget < 0:
            raise InvalidPolicy(f"{name}: more than {MAX_NODES:,} values (aliases expanded)")
        if isinstance(current, yaml.MappingNode):
            for key, value in current.value:
                stack += (key, value)
        elif isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)

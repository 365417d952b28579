"""The access domain's events, on streams under ``access/``.

- ``access/principals``: principals, their attributes and group memberships;
- ``access/tokens``: API tokens issued (their SHA-256 only) and revoked;
- ``access/grants``: grants of roles or actions on resource patterns, and their revocation;
- ``access/policy``: the policy (rules, compliance switches, resource attributes) in force;
- ``access/log/<resource root>``: one ``AccessGranted`` or ``AccessDenied`` per request
  (``access/log/dataset/youtube``), so the reads of one dataset are one stream;
- ``access/checkpoints``: signed checkpoints of the ledger's Merkle tree;
- ``access/subjects``: per-subject encryption keys created and destroyed (by pseudonym).

Grants, rules and tokens are events, so the policy in force at any seq can be rebuilt:
"who could read X at T" is answered, not only "who did".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any, NotRequired

from annotated_types import Ge
from pydantic import StringConstraints
from typing_extensions import TypedDict

from fmforge.ledger.registry import Domain, EventType

Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
TokenId = Annotated[str, StringConstraints(pattern=r"^tok_[0-9a-f]{16}$")]
GrantId = Annotated[str, StringConstraints(pattern=r"^grant_[0-9a-f]{16}$")]
KeyId = Annotated[str, StringConstraints(pattern=r"^subject:[0-9a-f]{32}$")]
Name = Annotated[str, StringConstraints(min_length=1, max_length=512)]
Text = Annotated[str, StringConstraints(max_length=4096)]
Count = Annotated[int, Ge(0)]
Attributes = dict[str, str | bool | int | list[str]]


class PrincipalCreatedData(TypedDict):
    principal: Name  # user:NAME, service:NAME or group:NAME
    attributes: Attributes


class PrincipalUpdatedData(TypedDict):
    principal: Name
    attributes: Attributes  # the whole new set
    disabled: bool


class GroupMemberAddedData(TypedDict):
    group: Name
    member: Name


class GroupMemberRemovedData(TypedDict):
    group: Name
    member: Name


class ScopeData(TypedDict):
    resource: Name  # a resource pattern
    actions: list[str]  # "*" for every action


class TokenIssuedData(TypedDict):
    token_id: TokenId
    principal: Name
    sha256: Sha256  # of the token; the token itself is never recorded
    scopes: list[ScopeData]
    expires: float | None  # seconds since the epoch
    note: Text


class TokenRevokedData(TypedDict):
    token_id: TokenId
    reason: Text


class GrantAddedData(TypedDict):
    grant_id: GrantId
    principal: Name
    resource: Name  # a resource pattern
    actions: list[str]  # the role's actions, spelled out, as they were when granted
    role: str | None


class GrantRevokedData(TypedDict):
    grant_id: GrantId
    reason: Text


class PolicySetData(TypedDict):
    policy: dict[str, Any]  # a PolicySpec, as JSON
    digest: Sha256  # of its canonical JSON
    source: Text  # the file it came from, if any


class AccessDecisionData(TypedDict):
    principal: Name  # who asked (``anonymous`` without credentials)
    action: str
    resource: Name  # fully resolved: version, commit and columns
    reason: str  # grant:ID / permit:RULE, or no_grant, forbid:pii, forbid:licence, ...
    rule: str | None  # the grant or rule that decided
    purpose: str | None
    token_id: TokenId | None
    request_id: str | None
    masked: list[str]  # columns released masked
    via: NotRequired[str]  # library | cli | http
    also: NotRequired[list[str]]  # "ACTION RESOURCE" of the other resources the request needed
    objects: NotRequired[list[str]]  # digests released (one event per request, not per chunk)


class CheckpointSignedData(TypedDict):
    origin: Name
    size: Count
    root: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+/]{43}=$")]  # base64
    key_id: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{8}$")]
    note: Annotated[str, StringConstraints(max_length=65536)]  # the signed note, as exported
    reason: Annotated[str, StringConstraints(pattern=r"^(events|interval|policy|manual)$")]


class SubjectKeyCreatedData(TypedDict):
    key_id: KeyId
    pseudonym: Sha256  # HMAC of the subject id under the repository key: never the id


class SubjectForgottenData(TypedDict):
    key_id: KeyId
    pseudonym: Sha256
    reason: Text
    flagged: NotRequired[list[Name]]  # resources derived from the subject's data: needs_unlearning


def _on(*streams: str) -> Callable[[str, Mapping[str, Any]], str | None]:
    def check(stream: str, data: Mapping[str, Any]) -> str | None:
        if stream in streams:
            return None
        return f"is recorded on {' or '.join(streams)}, not {stream!r}"

    return check


def _on_log(stream: str, data: Mapping[str, Any]) -> str | None:
    from fmforge.access.resources import parse_resource
    from fmforge.errors import InvalidPolicy

    try:
        root = parse_resource(data["resource"]).root
    except InvalidPolicy as exc:
        return str(exc)
    if stream != log_stream(root):
        return f"is recorded on {log_stream(root)!r}, not {stream!r}"
    return None


def _checked(
    check: Callable[[Mapping[str, Any]], object], *streams: str
) -> Callable[[str, Mapping[str, Any]], str | None]:
    """A type's rule: recorded on one of ``streams``, and ``check(data)`` (raising
    ``InvalidPolicy``) passes, so no projection ever meets a policy, pattern, principal or
    scope it cannot read."""
    on = _on(*streams)

    def rule(stream: str, data: Mapping[str, Any]) -> str | None:
        from fmforge.errors import InvalidPolicy

        problem = on(stream, data)
        if problem:
            return problem
        try:
            check(data)
        except InvalidPolicy as exc:
            return str(exc)
        return None

    return rule


def _principal_fields(*fields: str) -> Callable[[Mapping[str, Any]], object]:
    def check(data: Mapping[str, Any]) -> None:
        from fmforge.access.principals import KINDS, check_attributes, check_principal

        for name in fields:
            check_principal(data[name], ("group",) if name == "group" else KINDS)
        if "attributes" in data:
            check_attributes(data["attributes"])

    return check


def _grant(data: Mapping[str, Any]) -> None:
    from fmforge.access.policy import ACTIONS
    from fmforge.access.principals import check_principal
    from fmforge.access.resources import compile_patterns
    from fmforge.errors import InvalidPolicy

    check_principal(data["principal"])
    compile_patterns(data["resource"])
    unknown = [a for a in data["actions"] if a not in ACTIONS]
    if unknown or not data["actions"]:
        raise InvalidPolicy(f"actions {data['actions']!r}: known actions, at least one")


def _token(data: Mapping[str, Any]) -> None:
    from fmforge.access.principals import check_principal
    from fmforge.access.tokens import parse_scopes

    check_principal(data["principal"], ("user", "service"))
    parse_scopes(data["scopes"])


def _policy(data: Mapping[str, Any]) -> None:
    from fmforge.access.policy import policy_from_json
    from fmforge.errors import InvalidPolicy

    spec = policy_from_json(data["policy"])
    if spec.digest() != data["digest"]:
        raise InvalidPolicy("the digest is not the policy's")


def log_stream(root: str) -> str:
    """The stream of the access events of a resource root (``dataset/yt``)."""
    return f"access/log/{root}"


PRINCIPALS, TOKENS, GRANTS, POLICY = (
    "access/principals",
    "access/tokens",
    "access/grants",
    "access/policy",
)
CHECKPOINTS, SUBJECTS = "access/checkpoints", "access/subjects"

_PRINCIPAL = _checked(_principal_fields("principal"), PRINCIPALS)
_MEMBER = _checked(_principal_fields("group", "member"), PRINCIPALS)
PrincipalCreated = EventType("PrincipalCreated", PrincipalCreatedData, check=_PRINCIPAL)
PrincipalUpdated = EventType("PrincipalUpdated", PrincipalUpdatedData, check=_PRINCIPAL)
GroupMemberAdded = EventType("GroupMemberAdded", GroupMemberAddedData, check=_MEMBER)
GroupMemberRemoved = EventType("GroupMemberRemoved", GroupMemberRemovedData, check=_MEMBER)
TokenIssued = EventType("TokenIssued", TokenIssuedData, check=_checked(_token, TOKENS))
TokenRevoked = EventType("TokenRevoked", TokenRevokedData, check=_on(TOKENS))
GrantAdded = EventType("GrantAdded", GrantAddedData, check=_checked(_grant, GRANTS))
GrantRevoked = EventType("GrantRevoked", GrantRevokedData, check=_on(GRANTS))
PolicySet = EventType("PolicySet", PolicySetData, check=_checked(_policy, POLICY))
AccessGranted = EventType("AccessGranted", AccessDecisionData, check=_on_log)
AccessDenied = EventType("AccessDenied", AccessDecisionData, check=_on_log)
CheckpointSigned = EventType("CheckpointSigned", CheckpointSignedData, check=_on(CHECKPOINTS))
SubjectKeyCreated = EventType("SubjectKeyCreated", SubjectKeyCreatedData, check=_on(SUBJECTS))
SubjectForgotten = EventType("SubjectForgotten", SubjectForgottenData, check=_on(SUBJECTS))

DOMAIN = Domain(
    "access",
    streams=("access/",),
    types=(
        PrincipalCreated,
        PrincipalUpdated,
        GroupMemberAdded,
        GroupMemberRemoved,
        TokenIssued,
        TokenRevoked,
        GrantAdded,
        GrantRevoked,
        PolicySet,
        AccessGranted,
        AccessDenied,
        CheckpointSigned,
        SubjectKeyCreated,
        SubjectForgotten,
    ),
    writer="`fmforge access ...`, `fmforge audit checkpoint` and every authorized request",
)

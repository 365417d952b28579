"""``fmforge access``: principals, tokens, grants and the policy (each change an event)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import orjson
import typer

from fmforge.access.authorizer import Context
from fmforge.access.control import AccessControl
from fmforge.access.policy import load_policy
from fmforge.access.tokens import UNRESTRICTED, Scope
from fmforge.cli.context import FmforgeGroup, console, err_console, open_repository
from fmforge.errors import UsageError

app = typer.Typer(
    cls=FmforgeGroup, help="Principals, tokens, grants and the policy.", no_args_is_help=True
)
user_app = typer.Typer(cls=FmforgeGroup, help="Users, services and groups.", no_args_is_help=True)
token_app = typer.Typer(cls=FmforgeGroup, help="API tokens.", no_args_is_help=True)
policy_app = typer.Typer(cls=FmforgeGroup, help="The policy in force.", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")
app.add_typer(policy_app, name="policy")

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)\Z")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def principal_name(text: str) -> str:
    """``alice`` is ``user:alice``; ``service:ci`` and ``group:x`` are taken as given."""
    return text if ":" in text else f"user:{text}"


def duration(text: str) -> float:
    match = _DURATION.match(text.strip())
    if not match or float(match.group(1)) <= 0:
        raise UsageError(f"--expires-in {text!r}: a positive duration such as 3600, 90m, 12h, 30d")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _attributes(pairs: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise UsageError(f"--attr {pair!r}: KEY=VALUE (true/false for booleans, a,b for lists)")
        if value in ("true", "false"):
            out[key] = value == "true"
        elif "," in value:
            out[key] = [v for v in value.split(",") if v]
        else:
            out[key] = value
    return out


@app.command("init")
def init(
    ctx: typer.Context,
    admin: Annotated[
        str | None,
        typer.Option(help="The first admin (default: you, user:<user.name>)."),
    ] = None,
) -> None:
    """Turn access control on: the first admin (granted admin on everything) and their token,
    printed once, then the default policy in force. Only while no one is admin."""
    from fmforge.access.policy import PolicySpec

    with open_repository(ctx) as repo:
        control = AccessControl(repo)
        issued = control.bootstrap(principal_name(admin) if admin else None, token=True)
        assert issued is not None
        if not control.state().policy_digest:
            control.set_policy(PolicySpec(), "fmforge access init")
    console.print(issued.token)
    err_console.print(
        f"access control is on; {issued.principal} is admin. Its token {issued.token_id} is "
        "shown once: store it now (FMFORGE_TOKEN, or MLFLOW_TRACKING_TOKEN for MLflow clients)"
    )


@user_app.command("add")
def user_add(
    ctx: typer.Context,
    principal: Annotated[str, typer.Argument(help="NAME (a user), or user:N, service:N, group:N.")],
    attr: Annotated[
        list[str] | None, typer.Option("--attr", help="KEY=VALUE attribute (repeatable).")
    ] = None,
    pii_cleared: Annotated[
        bool, typer.Option("--pii-cleared", help="May read personal data (with read_pii).")
    ] = False,
    purpose: Annotated[
        list[str] | None, typer.Option("--purpose", help="A purpose it works for (repeatable).")
    ] = None,
) -> None:
    """Add a principal. It has no access until something is granted to it."""
    attributes = _attributes(attr or [])
    if pii_cleared:
        attributes["pii_cleared"] = True
    if purpose:
        attributes["purposes"] = purpose
    name = principal_name(principal)
    with open_repository(ctx) as repo:
        AccessControl(repo).add_principal(name, attributes)
    console.print(f"added {name} (no access yet: `fmforge access grant {name} RESOURCE --role R`)")


@user_app.command("ls")
def user_ls(ctx: typer.Context) -> None:
    """Every principal, one per line: name, groups, attributes (JSON), disabled or not."""
    with open_repository(ctx) as repo:
        state = AccessControl(repo).state()
    for name in sorted(state.principals):
        p = state.principals[name]
        groups = ",".join(sorted(p.groups)) or "-"
        attrs = orjson.dumps(dict(p.attributes), option=orjson.OPT_SORT_KEYS).decode()
        console.print(f"{name}  groups={groups}  {attrs}{'  disabled' if p.disabled else ''}")


@app.command("member")
def member(
    ctx: typer.Context,
    group: Annotated[str, typer.Argument(help="group:NAME")],
    principal: Annotated[str, typer.Argument(help="The member.")],
    remove: Annotated[bool, typer.Option("--remove", help="Take it out of the group.")] = False,
) -> None:
    """Put a principal in a group (or take it out): it gets the group's grants."""
    name = principal_name(principal)
    with open_repository(ctx) as repo:
        control = AccessControl(repo)
        if remove:
            control.remove_member(group, name)
        else:
            control.add_member(group, name)
    console.print(f"{name} {'left' if remove else 'joined'} {group}")


@token_app.command("issue")
def token_issue(
    ctx: typer.Context,
    principal: Annotated[str, typer.Argument(help="The user or service the token acts as.")],
    resource: Annotated[
        list[str] | None,
        typer.Option("--resource", help="Scope: a resource pattern (repeatable; default all)."),
    ] = None,
    action: Annotated[
        list[str] | None,
        typer.Option("--action", help="Scope: an action on those resources (default all)."),
    ] = None,
    expires_in: Annotated[
        str | None, typer.Option(help="Lifetime: 3600, 90m, 12h, 30d (default: none).")
    ] = None,
    note: Annotated[str, typer.Option(help="What the token is for.")] = "",
) -> None:
    """Issue an API token. It is printed once and stored only as its SHA-256."""
    actions = frozenset(action or ["*"])
    scopes = tuple(Scope(r, actions) for r in resource) if resource else UNRESTRICTED
    if not resource and action:
        scopes = (Scope("**", actions),)
    lifetime = duration(expires_in) if expires_in else None
    with open_repository(ctx) as repo:
        issued = AccessControl(repo).issue_token(
            principal_name(principal), scopes=scopes, expires_in=lifetime, note=note
        )
    console.print(issued.token)
    err_console.print(
        f"token {issued.token_id} for {issued.principal}: shown once, store it now "
        "(fmforge keeps only its SHA-256)"
    )


@token_app.command("revoke")
def token_revoke(
    ctx: typer.Context,
    token_id: Annotated[str, typer.Argument(help="tok_... (see `fmforge access token ls`).")],
    reason: Annotated[str, typer.Option(help="Why, for the record.")] = "",
) -> None:
    """Revoke a token: every request with it is refused (401) from now on."""
    with open_repository(ctx) as repo:
        AccessControl(repo).revoke_token(token_id, reason)
    console.print(f"revoked {token_id}")


@token_app.command("ls")
def token_ls(ctx: typer.Context) -> None:
    """Every token, one per line: id, principal, state, expiry, scope, note (never the
    token itself)."""
    from datetime import UTC, datetime

    with open_repository(ctx) as repo:
        tokens = AccessControl(repo).state().tokens
    for record in sorted(tokens.values(), key=lambda t: t.token_id):
        scope = "; ".join(f"{s.resource}: {','.join(sorted(s.actions))}" for s in record.scopes)
        expires = (
            datetime.fromtimestamp(record.expires, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            if record.expires is not None
            else "never"
        )
        state = "revoked" if record.revoked else "active"
        note = f"  note={record.note}" if record.note else ""
        console.print(
            f"{record.token_id}  {record.principal}  {state}  expires={expires}  "
            f"scope=[{scope}]{note}"
        )


@app.command("grant")
def grant(
    ctx: typer.Context,
    principal: Annotated[str, typer.Argument(help="Who: NAME, user:N, service:N, group:N.")],
    resource: Annotated[str, typer.Argument(help="A resource pattern, e.g. dataset/youtube.")],
    role: Annotated[
        str | None,
        typer.Option(
            help="viewer, user, editor, maintainer, owner, auditor, admin, or the policy's."
        ),
    ] = None,
    action: Annotated[
        list[str] | None, typer.Option("--action", help="An action (repeatable).")
    ] = None,
) -> None:
    """Grant a role or actions on a resource pattern and its children."""
    with open_repository(ctx) as repo:
        grant_id = AccessControl(repo).grant(
            principal_name(principal), resource, role=role, actions=action or ()
        )
    console.print(f"{grant_id}: {principal_name(principal)} on {resource}")


@app.command("revoke")
def revoke(
    ctx: typer.Context,
    grant_id: Annotated[str, typer.Argument(help="grant_... (see `fmforge access grants`).")],
    reason: Annotated[str, typer.Option(help="Why, for the record.")] = "",
) -> None:
    """Revoke a grant."""
    with open_repository(ctx) as repo:
        AccessControl(repo).revoke_grant(grant_id, reason)
    console.print(f"revoked {grant_id}")


@app.command("grants")
def grants(ctx: typer.Context) -> None:
    """Every grant in force, one per line: id, principal, resource pattern, role, actions."""
    with open_repository(ctx) as repo:
        state = AccessControl(repo).state()
    for g in sorted(state.grants.values(), key=lambda g: (g.principal, g.resource, g.grant_id)):
        role = f"role={g.role}  " if g.role else ""
        actions = ",".join(sorted(g.actions))
        console.print(f"{g.grant_id}  {g.principal}  {g.resource}  {role}actions={actions}")


@policy_app.command("set")
def policy_set(
    ctx: typer.Context, file: Annotated[Path, typer.Argument(help="A policy YAML file.")]
) -> None:
    """Put a policy file in force (rules, compliance switches, resource attributes)."""
    spec = load_policy(file)
    with open_repository(ctx) as repo:
        control = AccessControl(repo)
        before = control.state().policy_digest
        digest = control.set_policy(spec, str(file))
    same = " (unchanged: nothing recorded)" if digest == before else ""
    console.print(f"policy {digest[:12]} in force: {len(spec.rules)} rule(s){same}")


@policy_app.command("show")
def policy_show(ctx: typer.Context) -> None:
    """The policy in force, as YAML."""
    import yaml

    with open_repository(ctx) as repo:
        state = AccessControl(repo).state()
    console.print(yaml.safe_dump(state.policy.to_json(), sort_keys=False) or "{}\n", end="")


@app.command("check")
def check(
    ctx: typer.Context,
    principal: Annotated[str, typer.Argument(help="Who.")],
    action: Annotated[str, typer.Argument(help="read, use, export, commit, ...")],
    resource: Annotated[str, typer.Argument(help="e.g. dataset/youtube@3#author,text")],
    purpose: Annotated[str | None, typer.Option(help="The purpose of the request.")] = None,
) -> None:
    """What the policy decides for a request (nothing is recorded); exit 1 when denied."""
    with open_repository(ctx) as repo:
        decision = AccessControl(repo).decide(
            principal_name(principal), action, resource, Context(purpose)
        )
    verdict = "allowed" if decision.allowed else "denied"
    masked = f"; masked: {', '.join(decision.masked)}" if decision.masked else ""
    detail = f" ({decision.detail})" if decision.detail else ""
    console.print(f"{verdict}: {decision.reason}{masked}{detail}")
    if not decision.allowed:
        raise typer.Exit(1)

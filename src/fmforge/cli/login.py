"""``fmforge login URL`` / ``fmforge logout URL`` / ``fmforge whoami URL``: the API tokens this
machine keeps for fmforge servers (``fmforge.access.credentials``). A token is read from a
hidden prompt or standard input and never printed."""

from __future__ import annotations

from typing import Annotated

import typer

from fmforge.access import credentials
from fmforge.cli.access import read_secret
from fmforge.cli.context import console
from fmforge.errors import UsageError


def login(
    url: Annotated[str, typer.Argument(help="The server: http://HOST:PORT or https://HOST.")],
    token_stdin: Annotated[
        bool, typer.Option("--token-stdin", help="Read the token from standard input.")
    ] = False,
) -> None:
    """Check an API token against the server and store it (mode 0600) for that URL."""
    token = read_secret("token", from_stdin=token_stdin, confirm=False)
    identity, path = credentials.login(url, token)
    which = f" (token {identity.token_id})" if identity.token_id else ""
    console.print(
        f"logged in to {credentials.server_url(url)} as {identity.principal}{which}; "
        f"stored in {path}"
    )


def logout(
    url: Annotated[str, typer.Argument(help="The server whose token to forget.")],
) -> None:
    """Forget the token stored for a server (the server keeps it valid: revoke it there with
    `fmforge access token revoke`)."""
    path = credentials.logout(url)
    console.print(f"forgot the token for {credentials.server_url(url)} (in {path})")


def whoami(
    url: Annotated[str, typer.Argument(help="The server to ask.")],
) -> None:
    """Who the server takes this machine for: with FMFORGE_TOKEN if set, else the stored
    token."""
    token = credentials.token_for(url)
    if token is None:
        raise UsageError(f"no token for {credentials.server_url(url)}: `fmforge login URL` first")
    identity = credentials.whoami(url, token)
    console.print(identity.principal)

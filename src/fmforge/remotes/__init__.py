"""Remotes: push, pull and clone models to and from a directory or S3-compatible storage."""

from __future__ import annotations

from fmforge.remotes.sync import (
    Remote,
    TransferResult,
    add_remote,
    clone,
    list_remotes,
    pull,
    push,
    remove_remote,
)

__all__ = [
    "Remote",
    "TransferResult",
    "add_remote",
    "clone",
    "list_remotes",
    "pull",
    "push",
    "remove_remote",
]

"""Who may do what, and proof of what was done: principals and tokens, a Cedar-style policy
compiled to dictionary lookups, compliance rules at the moment of access, an access log,
signed checkpoints of the ledger's Merkle tree, and erasure by crypto-shredding.

The entry point is ``AccessControl(repo)``; ``Checkpointer(repo)`` signs checkpoints;
``fmforge access`` and ``fmforge audit`` are the command line over them.
"""

from __future__ import annotations

from fmforge.access.audit import (
    BackgroundCheckpointer,
    Checkpointer,
    LedgerTree,
    prove_inclusion,
    verify_history,
)
from fmforge.access.authorizer import Authorizer, Context, Decision
from fmforge.access.checkpoints import Checkpoint, DirectorySink, SigningKey, VerifierKey
from fmforge.access.control import AccessControl, IssuedToken
from fmforge.access.merkle import MerkleTree, verify_consistency, verify_inclusion
from fmforge.access.policy import ACTIONS, ROLES, PolicySpec, load_policy
from fmforge.access.resources import Pattern, format_resource, parse_resource
from fmforge.access.shredding import RepositoryKey, SubjectKeys
from fmforge.access.state import AccessState
from fmforge.access.tokens import Scope, TokenRecord
from fmforge.access.views import AccessLog, AccessLogView, AccessView

__all__ = [
    "ACTIONS",
    "ROLES",
    "AccessControl",
    "AccessLog",
    "AccessLogView",
    "AccessState",
    "AccessView",
    "Authorizer",
    "BackgroundCheckpointer",
    "Checkpoint",
    "Checkpointer",
    "Context",
    "Decision",
    "DirectorySink",
    "IssuedToken",
    "LedgerTree",
    "MerkleTree",
    "Pattern",
    "PolicySpec",
    "RepositoryKey",
    "Scope",
    "SigningKey",
    "SubjectKeys",
    "TokenRecord",
    "VerifierKey",
    "format_resource",
    "load_policy",
    "parse_resource",
    "prove_inclusion",
    "verify_consistency",
    "verify_history",
    "verify_inclusion",
]

"""Verifiable anchoring of a repository's ledger: its Merkle tree, signed checkpoints, and
inclusion and consistency proofs against them.

- ``LedgerTree`` keeps the RFC 6962 tree of the ledger's event hashes, cached in
  ``.fmforge/merkle/`` (a cache: checked against the ledger when opened, rebuilt when it does
  not fit) and caught up with the events recorded since.
- ``Checkpointer`` signs a checkpoint (``CheckpointSigned`` on ``access/checkpoints``) when one
  is due (every ``audit.checkpoint_every_events`` events or ``audit.checkpoint_every_s``
  seconds: ``maybe_checkpoint``, the hook a writer calls after appending) and after every
  access-control change (``after_policy_change``); before signing it checks that the ledger
  still extends the previous checkpoint, so a log never signs a forked history.
- ``prove_inclusion`` and ``verify_history`` answer ``fmforge audit prove`` and
  ``fmforge audit verify``: a client that kept an older checkpoint catches a history rewritten,
  truncated or forked behind it.
"""

from __future__ import annotations

import base64
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmforge.access import events as ev
from fmforge.access import targets
from fmforge.access.checkpoints import (
    Checkpoint,
    CheckpointSink,
    DirectorySink,
    SigningKey,
    VerifierKey,
    export_checkpoint,
    load_signing_key,
    write_secret,
)
from fmforge.access.mediation import mediated
from fmforge.access.merkle import MerkleTree, leaf_hash, verify_consistency, verify_inclusion
from fmforge.access.views import AccessHistoryView
from fmforge.errors import ConfigError, ProofFailed, UsageError
from fmforge.ledger import EventStore

if TYPE_CHECKING:
    from fmforge.repository import Repository

READ_CHUNK = 20_000


class LedgerTree:
    """The Merkle tree over a ledger's event hashes (leaf ``seq - 1``)."""

    def __init__(self, store: EventStore, cache: Path | None = None) -> None:
        self.store = store
        self.cache = cache
        self.tree = MerkleTree.load(cache) if cache is not None else MerkleTree()
        if self.tree.size and not self._fits():
            self.tree = MerkleTree()

    def _fits(self) -> bool:
        size = self.tree.size
        if size > self.store.head().seq:
            return False
        for seq in {1, size}:
            recorded = self.store.hash_at(seq)
            if recorded is None or leaf_hash(recorded) != self.tree.subtree(seq - 1, seq):
                return False
        return True

    def sync(self) -> MerkleTree:
        """Append the hashes of every event recorded since; returns the tree."""
        head = self.store.head().seq
        tree = self.tree
        while tree.size < head:
            upto = min(head, tree.size + READ_CHUNK)
            tree.extend(self.store.read_hashes(tree.size + 1, upto))
        return tree

    def rebuild(self) -> MerkleTree:
        """Forget the cache and build the tree from the ledger."""
        self.tree = MerkleTree()
        return self.sync()

    def save(self) -> None:
        if self.cache is not None:
            self.tree.save(self.cache)


def origin_of(repo: Repository) -> str:
    origin = str(repo.settings["audit.origin"])
    if origin:
        return origin
    first = repo.ledger.hash_at(1)
    if first is None:
        raise UsageError("the ledger is empty: nothing to checkpoint")
    return f"fmforge/{first.hex()[:16]}"


def signing_key_path(repo: Repository) -> Path:
    configured = str(repo.settings["audit.signing_key_file"])
    return Path(configured) if configured else repo.path / "keys" / "checkpoint.key"


def signing_key(repo: Repository, *, create: bool = False) -> SigningKey:
    """The repository's checkpoint signing key; with ``create``, made on first use (mode
    0600, its verifier key written beside it as ``.pub``)."""
    path = signing_key_path(repo)
    if not path.exists():
        if not create:
            raise ConfigError(
                f"no checkpoint signing key at {path} (`fmforge audit checkpoint` creates one)"
            )
        key = SigningKey.generate(origin_of(repo))
        write_secret(path, key.encode().encode() + b"\n")
        path.with_suffix(".pub").write_text(key.verifier.encode() + "\n")
        return key
    key = load_signing_key(path)
    if key.name != origin_of(repo):
        raise ConfigError(
            f"the signing key {path} signs as {key.name!r}, but this log's origin is "
            f"{origin_of(repo)!r} (setting audit.origin)"
        )
    return key


def verifier_key(repo: Repository) -> VerifierKey:
    """The repository's own verifier key (from its signing key)."""
    return signing_key(repo).verifier


def recorded_checkpoints(
    repo: Repository, verifiers: list[VerifierKey], min_size: int = 0
) -> list[Checkpoint]:
    """The ledger's ``CheckpointSigned`` covering at least ``min_size`` events, oldest first,
    each signature checked."""
    found = repo.view(AccessHistoryView).checkpoints(min_size)
    return [Checkpoint.open(c.note, verifiers) for c in found]


def _last_recorded(repo: Repository) -> tuple[Checkpoint, float] | None:
    last = repo.view(AccessHistoryView).last_checkpoint()
    if last is None:
        return None
    return Checkpoint(last.origin, last.size, last.root, last.note), last.time


class Checkpointer:
    """Signs checkpoints of one repository's ledger (see the module docstring)."""

    def __init__(
        self,
        repo: Repository,
        key: SigningKey | None = None,
        *,
        every_events: int | None = None,
        every_seconds: float | None = None,
        sinks: list[CheckpointSink] | None = None,
    ) -> None:
        self.repo = repo
        self.key = key or signing_key(repo, create=True)
        settings = repo.settings
        self.every_events = every_events or int(settings["audit.checkpoint_every_events"])
        self.every_seconds = every_seconds or float(settings["audit.checkpoint_every_s"])
        if sinks is None:
            export = str(settings["audit.export_dir"])
            sinks = [DirectorySink(Path(export))] if export else []
        self.sinks = sinks
        self.tree = LedgerTree(repo.ledger, repo.path / "merkle")
        self._last = _last_recorded(repo)

    def due(self, now: float | None = None) -> str | None:
        """Why a checkpoint is due now (``events`` or ``interval``), or None."""
        head = self.repo.ledger.head().seq
        if self._last is None:
            return "events" if head else None
        last, when = self._last
        pending = head - last.size - 1  # the CheckpointSigned event itself does not count
        if pending >= self.every_events:
            return "events"
        moment = time.time() if now is None else now
        if pending > 0 and moment - when >= self.every_seconds:
            return "interval"
        return None

    def maybe_checkpoint(self, now: float | None = None) -> Checkpoint | None:
        """The hook a writer calls after appending: signs one when due."""
        reason = self.due(now)
        return self.checkpoint(reason) if reason else None

    def after_policy_change(self) -> Checkpoint:
        """Always sign after grants, tokens, principals or the policy changed."""
        return self.checkpoint("policy")

    def checkpoint(self, reason: str = "manual") -> Checkpoint:
        """Sign the tree as it is now, after checking it extends the previous checkpoint;
        record it, export it to every sink, and save the tree's cache."""
        tree = self.tree.sync()
        previous = self._last[0] if self._last else None
        if previous is not None and not self._extends(previous):
            self.tree.rebuild()  # the cache may be stale: ask the ledger itself
            if not self._extends(previous):
                raise ProofFailed(
                    f"the ledger does not extend the last checkpoint (size {previous.size}): "
                    "its history was rewritten or truncated; refusing to sign a fork"
                )
            tree = self.tree.tree
        body = Checkpoint(self.key.name, tree.size, tree.root())
        signed = body.signed(self.key)
        self.repo.record(
            ev.CHECKPOINTS,
            ev.CheckpointSigned({
                "origin": signed.origin, "size": signed.size,
                "root": base64.b64encode(signed.root).decode(),
                "key_id": self.key.verifier.key_id.hex(), "note": signed.note, "reason": reason,
            }),
        )  # fmt: skip
        self._last = (signed, time.time())
        for sink in self.sinks:
            export_checkpoint(signed, sink)
        self.tree.save()
        return signed

    def _extends(self, previous: Checkpoint) -> bool:
        tree = self.tree.tree
        return previous.size <= tree.size and tree.root(previous.size) == previous.root


def _checkpoint_loop(
    root: str, every_events: int, every_seconds: float, poll_s: float, ready: Any, stop: Any
) -> None:
    """A background process's life: sign each checkpoint as it falls due; when stopped,
    sign what is due and end. It runs at the lowest priority (nice 19): a checkpoint may come a
    little later, the writers' appends should not wait for its hashing on a busy machine."""
    from fmforge.repository import Repository

    if hasattr(os, "nice"):
        os.nice(19)

    with Repository.open(root) as repo:
        checkpointer = Checkpointer(repo, every_events=every_events, every_seconds=every_seconds)
        ready.set()
        while True:
            stopping = stop.wait(poll_s)
            checkpointer.maybe_checkpoint()
            if stopping:
                return


class BackgroundCheckpointer:
    """A ``Checkpointer`` in a process of its own, polling the ledger: the Merkle tree's
    hashing (two SHA-256 per event) then runs beside the writers instead of in their way.
    Use as a context manager: entering waits until the process has opened the repository;
    leaving it signs what is due and stops the process."""

    def __init__(
        self,
        repo: Repository,
        *,
        every_events: int | None = None,
        every_seconds: float | None = None,
        poll_s: float = 0.2,
    ) -> None:
        import multiprocessing

        signing_key(repo, create=True)  # made here, so a missing key fails in the caller
        context = multiprocessing.get_context("spawn")
        self._ready, self._stop = context.Event(), context.Event()
        events = every_events or int(repo.settings["audit.checkpoint_every_events"])
        seconds = every_seconds or float(repo.settings["audit.checkpoint_every_s"])
        self._process = context.Process(
            target=_checkpoint_loop,
            args=(str(repo.root), events, seconds, poll_s, self._ready, self._stop),
            daemon=True,
        )

    def __enter__(self) -> BackgroundCheckpointer:
        self._process.start()
        while not self._ready.wait(0.1):
            if not self._process.is_alive():
                raise ConfigError("the background checkpointer could not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._process.join(timeout=30)


@dataclass(frozen=True)
class InclusionProof:
    """Event ``seq`` is leaf ``seq - 1`` of the tree a signed checkpoint vouches for."""

    seq: int
    event_hash: bytes
    proof: tuple[bytes, ...]
    checkpoint: Checkpoint

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "leaf_index": self.seq - 1,
            "tree_size": self.checkpoint.size,
            "event_hash": self.event_hash.hex(),
            "proof": [base64.b64encode(p).decode() for p in self.proof],
            "checkpoint": self.checkpoint.note,
        }


@mediated("audit.read", targets.fixed("audit"))
def prove_inclusion(
    repo: Repository, seq: int, checkpoint: Checkpoint | None = None
) -> InclusionProof:
    """The inclusion proof of event ``seq`` against ``checkpoint`` (default: the newest
    recorded checkpoint covering it), verified before it is returned."""
    recorded = repo.ledger.hash_at(seq) if seq >= 1 else None
    if recorded is None:
        raise UsageError(f"no event seq {seq} (the ledger has {repo.ledger.head().seq})")
    if checkpoint is None:
        covering = recorded_checkpoints(repo, [verifier_key(repo)], seq)
        if not covering:
            raise UsageError(
                f"no signed checkpoint covers seq {seq} yet (run `fmforge audit checkpoint`)"
            )
        checkpoint = covering[-1]
    if checkpoint.size < seq:
        raise UsageError(f"checkpoint size {checkpoint.size} does not cover seq {seq}")
    tree_of = LedgerTree(repo.ledger, repo.path / "merkle")
    tree = tree_of.sync()
    if checkpoint.size > tree.size:
        raise ProofFailed(
            f"the checkpoint covers {checkpoint.size} events; the ledger has {tree.size}"
        )
    proof = tuple(tree.inclusion_proof(seq - 1, checkpoint.size))
    verify_inclusion(seq - 1, checkpoint.size, leaf_hash(recorded), proof, checkpoint.root)
    tree_of.save()
    return InclusionProof(seq, recorded, proof, checkpoint)


@dataclass(frozen=True)
class HistoryReport:
    old: Checkpoint
    new: Checkpoint
    proof: tuple[bytes, ...]


@mediated("audit.read", targets.fixed("audit"))
def verify_history(
    repo: Repository, old: Checkpoint, new: Checkpoint | None = None
) -> HistoryReport:
    """Check that this repository's ledger is the history ``old`` (and ``new``) vouch for and
    that ``new`` (default: the ledger now) extends ``old``. The tree is rebuilt from the
    ledger, not read from the cache. ``ProofFailed`` names what does not hold: a fork, a
    rewrite or a truncation behind a checkpoint."""
    tree = LedgerTree(repo.ledger).rebuild()
    for checkpoint in (old, new):
        if checkpoint is None:
            continue
        if checkpoint.origin != old.origin:
            raise ProofFailed(f"checkpoints of two logs: {old.origin} and {checkpoint.origin}")
        if checkpoint.size > tree.size:
            raise ProofFailed(
                f"the ledger has {tree.size} events but a checkpoint covers {checkpoint.size}: "
                f"truncated after seq {tree.size}"
            )
        if tree.root(checkpoint.size) != checkpoint.root:
            raise ProofFailed(
                f"the ledger's first {checkpoint.size} events are not those the checkpoint of "
                "that size signed: the history was rewritten"
            )
    if new is None:
        new = Checkpoint(old.origin, tree.size, tree.root())
    if new.size < old.size:
        raise ProofFailed(f"--to (size {new.size}) is older than --from (size {old.size})")
    proof = tuple(tree.consistency_proof(old.size, new.size))
    verify_consistency(old.size, new.size, old.root, new.root, proof)
    return HistoryReport(old, new, proof)

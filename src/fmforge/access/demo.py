"""The access chapter of ``fmforge demo``: access control turned on, two users and a service
principal, 300 of the shipped YouTube comments and 3 by a subject of the demo's own as a
dataset whose ``author`` is personal data (tagged, stored encrypted per author) under a
non-commercial licence; a denied read, a masked read and a licence refusal (of the data and of
a model trained from it); ``audit who-read`` and ``denied``; a signed checkpoint and an
inclusion proof checked by the standalone script shipped in ``demo_data/verify_proof.py`` (no
fmforge imported); the demo's subject erased by crypto-shredding, after which no byte of
their name is anywhere and the ledger and that checkpoint still verify.

Each principal acts with its own token (``FMFORGE_TOKEN``), as a script of theirs would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fmforge.access.audit import Checkpointer, prove_inclusion, verifier_key, verify_history
from fmforge.access.control import AccessControl
from fmforge.access.mediation import TOKEN_ENV, purpose
from fmforge.access.policy import PolicySpec
from fmforge.access.queries import denied, who_read
from fmforge.data.subjects import forget_subject, tag_dataset
from fmforge.data.versions import add_dataset, read_table
from fmforge.errors import AccessDenied
from fmforge.models.tensorcommit import commit_tensors
from fmforge.repository import Repository
from fmforge.tracking.runs import start_run
from fmforge.training.evaluation import evaluate

DATASET = "people"
ROWS = 300
SUBJECT = "Dana Example"


def _shipped(name: str) -> Path:
    return Path(str(resources.files("fmforge").joinpath(f"demo_data/{name}")))


@contextmanager
def _as(token: str) -> Iterator[None]:
    """Calls made with ``token``, as a script run with ``FMFORGE_TOKEN=token`` makes them."""
    before = os.environ.get(TOKEN_ENV)
    os.environ[TOKEN_ENV] = token
    try:
        yield
    finally:
        if before is None:
            del os.environ[TOKEN_ENV]
        else:
            os.environ[TOKEN_ENV] = before


def principals(repo: Repository, facts: dict[str, Any]) -> list[str]:
    """Access control on; alice (an analyst), bob (cleared for personal data), service:ci."""
    control = AccessControl(repo)
    control.bootstrap()
    control.set_policy(PolicySpec(), "fmforge demo")
    control.add_principal("user:alice", {"purposes": ["research", "commercial"]})
    control.add_principal("user:bob", {"pii_cleared": True, "purposes": ["research"]})
    control.add_principal("service:ci")
    control.grant("user:alice", f"dataset/{DATASET}", role="maintainer")
    control.grant("user:alice", "model/spam-people", role="user")
    control.grant("user:bob", f"dataset/{DATASET}", role="owner")
    control.grant("service:ci", "model", role="user")
    facts["tokens"] = {
        name: control.issue_token(f"{kind}:{name}", expires_in=3600).token
        for kind, name in (("user", "alice"), ("user", "bob"), ("service", "ci"))
    }
    admins = ", ".join(control.admins())
    return [
        f"access control on: {admins} is admin (the first, made by `fmforge access init`)",
        "user:alice  maintainer of dataset/people (read, use, export; not read_pii)",
        "user:bob    owner of dataset/people, pii_cleared, consented purpose research",
        "service:ci  may use models, nothing else; each has a 256-bit token, stored hashed",
        "every change above is an event, so the policy at any moment can be rebuilt",
    ]


def tagged_dataset(repo: Repository, facts: dict[str, Any]) -> list[str]:
    """The comments, ``author`` personal data and the subject id, under CC BY-NC."""
    tag_dataset(
        repo, DATASET, licence="CC-BY-NC-4.0", pii=["author"], subject_id="author",
        consent=["research"],
    )  # fmt: skip
    lines = _shipped("youtube_spam_collection.jsonl").read_text().splitlines()[:ROWS]
    for n in range(3):  # a subject of the demo's own, who will ask to be forgotten
        lines.append(json.dumps({
            "video": "Psy", "comment_id": f"demo-{n}", "author": SUBJECT,
            "date": f"2014-01-0{n + 1}T12:00:00", "text": f"Dana's comment number {n}",
            "label": 0, "split": "train",
        }))  # fmt: skip
    source = repo.root / ".fmforge" / "tmp" / "people.jsonl"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_text("\n".join(lines) + "\n")
    try:
        version = add_dataset(repo, DATASET, source, message="300 comments and 3 of Dana's").version
    finally:
        source.unlink()
    facts["people"] = version.ref
    facts["author"] = SUBJECT
    authors = len({json.loads(line)["author"] for line in lines})
    plain = holders(repo, facts["author"])
    text = holders(repo, "Dana's comment number 0")
    return [
        f"{version.ref}: {version.rows} comments by {authors} authors; licence CC-BY-NC-4.0, "
        "author is personal data and the subject id",
        f"each author's cells encrypted under their own key: a byte search of every file and "
        f"decoded object finds {facts['author']!r} in {len(plain)} place(s) (its comment's "
        f"text, not personal data, in {len(text)})",
    ]


def holders(repo: Repository, text: str) -> list[str]:
    """Where ``text`` is, by a byte search of every file under ``.fmforge`` (the ledger and
    its WAL, views, keys, caches) and of every object decoded (decompressed; a Parquet chunk
    read back to its values, since its pages are compressed too)."""
    needle, found = text.encode(), []
    store = repo.root / ".fmforge"
    for path in sorted(p for p in store.rglob("*") if p.is_file()):
        if needle in path.read_bytes():
            found.append(str(path.relative_to(repo.root)))
    for info in repo.objects.iter_objects():
        content = repo.objects.get(info.digest)
        if content.startswith(b"PAR1"):
            table = pq.read_table(pa.BufferReader(content))
            content = json.dumps(table.to_pylist(), default=str, ensure_ascii=False).encode()
        if needle in content:
            found.append(f"object {info.digest[:12]}")
    return found


def reads(repo: Repository, facts: dict[str, Any]) -> list[str]:
    """A denied read, a masked read, a clear read."""
    tokens = facts["tokens"]
    lines = []
    with _as(tokens["ci"]):
        try:
            read_table(repo, DATASET)
        except AccessDenied as exc:
            lines.append(f"service:ci reads {DATASET}: denied ({exc.reason})")
    with _as(tokens["alice"]):
        masked = read_table(repo, DATASET)
    first = masked.slice(0, 1).to_pylist()[0]
    lines.append(f"user:alice reads it: author {first['author']!r}, text {first['text'][:40]!r}")
    with _as(tokens["bob"]), purpose("research"):
        clear = read_table(repo, DATASET)
    lines.append(f"user:bob, for research: author {clear.column('author')[0].as_py()!r}")
    return lines


def licence(repo: Repository, facts: dict[str, Any]) -> list[str]:
    """A non-commercial licence refuses commercial use of the data and of a model from it."""
    with start_run("people", repo=repo, datasets=[facts["people"]]) as run:
        run.log({"loss": 0.4}, step=1)
    commit_tensors(
        repo, "spam-people", {"w": np.zeros(4, np.float32)}, message="trained on people",
        provenance={"run": run.id},
    )  # fmt: skip
    lines = []
    with _as(facts["tokens"]["alice"]), purpose("commercial"):
        for what, call in (
            ("export people", lambda: _export(repo)),
            ("use spam-people", lambda: evaluate(repo, "spam-people", DATASET)),
        ):
            try:
                call()
            except AccessDenied as exc:
                lines.append(f"user:alice, commercial: {what}: refused ({exc.reason})")
    lines.append("(spam-people was trained in a run given people@v1: the licence follows it)")
    return lines


def _export(repo: Repository) -> None:
    from fmforge.data.tables import export_dataset

    out = repo.root / ".fmforge" / "tmp" / "people.csv"
    try:
        export_dataset(repo, DATASET, out)
    finally:
        out.unlink(missing_ok=True)


def audit(repo: Repository, facts: dict[str, Any]) -> list[str]:
    """Who read the dataset; what was denied; a checkpoint checked with no fmforge at all."""
    lines = [f"audit who-read dataset/{DATASET}:"]
    lines += [f"  {r.principal:12} {r.reads} read(s)" for r in who_read(repo, f"dataset/{DATASET}")]
    refused = denied(repo)
    lines.append(f"audit denied: {len(refused)}, e.g. " + ", ".join(
        f"{d.principal} {d.action} {d.resource} ({d.reason})" for d in refused[:2]
    ))  # fmt: skip
    checkpoint = Checkpointer(repo).checkpoint("manual")
    facts["checkpoint"] = checkpoint
    seq = repo.ledger.head().seq - 1
    scratch = repo.root / ".fmforge" / "tmp"
    proof, key = scratch / "proof.json", scratch / "verifier.key"
    proof.write_text(json.dumps(prove_inclusion(repo, seq, checkpoint).to_json()))
    key.write_text(verifier_key(repo).encode())
    try:
        checked = subprocess.run(
            [sys.executable, str(_shipped("verify_proof.py")), str(proof), str(key)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        proof.unlink()
        key.unlink()
    lines.append(f"checkpoint signed at size {checkpoint.size} (Ed25519, C2SP note)")
    lines.append(f"standalone verify_proof.py (no fmforge): {checked.stdout.strip()}")
    return lines


def erasure(repo: Repository, facts: dict[str, Any]) -> list[str]:
    """An author forgotten: key destroyed, rows gone, the chain and the checkpoint intact."""
    erased = forget_subject(repo, facts["author"], reason="erasure request")
    rows = read_table(repo, DATASET).num_rows
    plain = holders(repo, facts["author"])
    report = repo.verify()
    history = verify_history(repo, facts["checkpoint"])
    return [
        f"forgot {facts['author']!r} (pseudonym {erased.pseudonym[:12]}): key destroyed in "
        f"{erased.seconds * 1000:.0f} ms; {DATASET} now reads {rows} rows",
        f"places holding the name: {len(plain)}; flagged needs_unlearning: {len(erased.flagged)}",
        f"verify: {report.events} events, chain intact; the checkpoint of size "
        f"{facts['checkpoint'].size} still verifies, extended to {history.new.size}",
    ]

"""Signed checkpoints exported to S3 (moto's server, as the object store's contract tests
use): ``fmforge audit checkpoint --export s3://...`` and ``audit.export_dir``; the exported
note verifies with the repository's verifier key; a numbered checkpoint is never
overwritten with another (a forked ledger is refused, naming the object); with object lock,
numbered checkpoints are kept in compliance mode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import pytest
from typer.testing import CliRunner

from fmforge.access.audit import Checkpointer, signing_key
from fmforge.access.checkpoint_s3 import S3Sink
from fmforge.access.checkpoints import Checkpoint
from fmforge.access.control import AccessControl
from fmforge.cli.app import app
from fmforge.errors import ProofFailed
from fmforge.repository import Repository
from tests.hostile.harness import one_line


def _bucket(endpoint: str, name: str, *, locked: bool = False) -> Any:
    client = boto3.client("s3", endpoint_url=endpoint)
    client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=locked)
    return client


def fm(root: Path, *args: str) -> Any:
    result = CliRunner().invoke(app, ["--store", str(root), *args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def test_audit_checkpoint_exports_to_s3_and_the_note_verifies(
    repo: Repository, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = _bucket(s3_endpoint, "audit-export")
    monkeypatch.setenv("FMFORGE_S3_ENDPOINT_URL", s3_endpoint)
    AccessControl(repo).add_principal("user:alice")
    size = repo.ledger.head().seq  # the checkpoint covers the ledger before its own event
    done = fm(repo.root, "audit", "checkpoint", "--export", "s3://audit-export/team/a")
    assert done.exit_code == 0, done.output
    listed = client.list_objects_v2(Bucket="audit-export")["Contents"]
    names = sorted(o["Key"] for o in listed)
    assert names == [f"team/a/{size:020d}.checkpoint", "team/a/latest.checkpoint"]
    sink = S3Sink("s3://audit-export/team/a", endpoint_url=s3_endpoint)
    note = sink.get("latest.checkpoint").decode()
    assert sink.get(f"{size:020d}.checkpoint").decode() == note
    with Repository.open(repo.root) as opened:
        verifier = signing_key(opened).verifier
    assert Checkpoint.open(note, [verifier]).size == size


def test_the_export_setting_with_object_lock_keeps_numbered_checkpoints(
    repo: Repository, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = _bucket(s3_endpoint, "locked-audit", locked=True)
    monkeypatch.setenv("FMFORGE_S3_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("FMFORGE_AUDIT_EXPORT_DIR", "s3://locked-audit/log")
    monkeypatch.setenv("FMFORGE_AUDIT_EXPORT_RETAIN_DAYS", "1")
    AccessControl(repo).add_principal("user:alice")
    with Repository.open(repo.root) as opened:
        signed = Checkpointer(opened).checkpoint("manual")
    key = f"log/{signed.size:020d}.checkpoint"
    assert client.head_object(Bucket="locked-audit", Key=key)["ObjectLockMode"] == "COMPLIANCE"
    version = client.list_object_versions(Bucket="locked-audit", Prefix=key)["Versions"][0]
    with pytest.raises(client.exceptions.ClientError, match="AccessDenied"):
        client.delete_object(Bucket="locked-audit", Key=key, VersionId=version["VersionId"])
    latest = client.head_object(Bucket="locked-audit", Key="log/latest.checkpoint")
    assert "ObjectLockMode" not in latest  # the pointer moves on


def test_a_forked_ledger_does_not_overwrite_an_exported_checkpoint(
    repo: Repository, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = _bucket(s3_endpoint, "fork-check")
    monkeypatch.setenv("FMFORGE_S3_ENDPOINT_URL", s3_endpoint)
    AccessControl(repo).add_principal("user:alice")
    size = repo.ledger.head().seq
    key = f"{size:020d}.checkpoint"
    forged = b"fmforge/0000000000000000\n2\nAAAA\n\n- another tree\n"
    client.put_object(Bucket="fork-check", Key=key, Body=forged)
    done = fm(repo.root, "audit", "checkpoint", "--export", "s3://fork-check")
    assert done.exit_code == 1
    line = one_line(done.stderr)
    assert f"s3://fork-check/{key} holds another checkpoint of the same size" in line
    assert client.get_object(Bucket="fork-check", Key=key)["Body"].read() == forged
    sink = S3Sink("s3://fork-check", endpoint_url=s3_endpoint)
    with pytest.raises(ProofFailed):
        sink.put(key, b"yet another")
    sink.put(key, forged)  # the same bytes again: nothing to refuse


def test_a_missing_bucket_is_one_line(
    repo: Repository, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FMFORGE_S3_ENDPOINT_URL", s3_endpoint)
    done = fm(repo.root, "audit", "checkpoint", "--export", "s3://no-such-bucket/x")
    assert done.exit_code == 1
    assert "NoSuchBucket" in one_line(done.stderr)

"""Signed checkpoints exported to an S3 bucket (any S3-compatible endpoint, as the object
store reaches it: ``fmforge.objects.s3``), beside ``DirectorySink``.

``audit.export_dir`` (or ``fmforge audit checkpoint --export``) naming ``s3://BUCKET/PREFIX``
puts each checkpoint under ``PREFIX``: ``<size>.checkpoint`` and ``latest.checkpoint``, one
``PutObject`` each (atomic: a reader sees the old object or the new one whole). The endpoint
is the setting ``objects.s3_endpoint_url`` (empty for AWS); credentials come from the usual
AWS sources.

A numbered checkpoint is written once: it is put with ``If-None-Match: *``, and when the
object exists already with other bytes, the export fails (``ProofFailed``): a ledger that
signs a different tree of the same size has been rewritten or forked, and the exported
history keeps the first. With ``retain_days`` (and a bucket created with object lock), the
numbered checkpoints are put in compliance-mode retention: not even the bucket's owner can
delete or overwrite them before then.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from fmforge.errors import BackendUnavailable, ProofFailed

if TYPE_CHECKING:
    from fmforge.access.checkpoints import CheckpointSink
    from fmforge.settings import Settings
from fmforge.objects.s3 import parse_s3_url

LATEST = "latest.checkpoint"


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3Sink:
    """Checkpoints as objects under ``s3://BUCKET/PREFIX`` (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        endpoint_url: str | None = None,
        retain_days: int | None = None,
        client: Any = None,
    ) -> None:
        self.url = url
        self.bucket, self.prefix = parse_s3_url(url)
        self.endpoint_url = endpoint_url or None
        self.retain_days = retain_days
        self._client = client or boto3.client("s3", endpoint_url=self.endpoint_url)

    def _unavailable(self, exc: Exception) -> BackendUnavailable:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return BackendUnavailable(
            f"cannot export the checkpoint to {self.url}{where}: {str(exc).splitlines()[0]}"
        )

    def put(self, name: str, data: bytes) -> None:
        key = self.prefix + name
        extra: dict[str, Any] = {}
        if name != LATEST:
            extra["IfNoneMatch"] = "*"
            if self.retain_days:
                until = dt.datetime.now(dt.UTC) + dt.timedelta(days=self.retain_days)
                extra.update(ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until)
        try:
            self._client.put_object(
                Bucket=self.bucket, Key=key, Body=data, ContentType="text/plain", **extra
            )
        except ClientError as exc:
            if _code(exc) not in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise self._unavailable(exc) from None
            self._same(key, data)
        except BotoCoreError as exc:
            raise self._unavailable(exc) from None

    def _same(self, key: str, data: bytes) -> None:
        """A numbered checkpoint exported before: it must be these bytes."""
        try:
            stored = self._client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            raise self._unavailable(exc) from None
        if stored != data:
            raise ProofFailed(
                f"s3://{self.bucket}/{key} holds another checkpoint of the same size: the "
                "ledger was rewritten or forked since it was exported (kept as it was)"
            )

    def get(self, name: str) -> bytes:
        """An exported checkpoint's bytes (for checking them)."""
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self.prefix + name)
            body: bytes = response["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            raise self._unavailable(exc) from None
        return body


def sink_for(target: str, settings: Settings) -> CheckpointSink:
    """The sink a target names: ``s3://BUCKET/PREFIX`` (endpoint and retention from
    ``settings``) or a directory."""
    if target.startswith("s3://"):
        return S3Sink(
            target,
            endpoint_url=str(settings["objects.s3_endpoint_url"]) or None,
            retain_days=int(settings["audit.export_retain_days"]) or None,
        )
    from pathlib import Path

    from fmforge.access.checkpoints import DirectorySink

    return DirectorySink(Path(target))

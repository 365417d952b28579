"""Where a remote keeps what is pushed to it: objects plus the model streams' events.

Two kinds, chosen by URL:

- a directory: an fmforge repository (created on first use). Events go through its ledger, so
  the remote keeps a verified hash chain and an append is one transaction guarded by the
  stream version.
- ``s3://bucket/prefix``: objects under ``prefix/objects/``, and each event of stream S at
  version V as the object ``prefix/streams/S/<V>.json``, written with ``If-None-Match: *``:
  two pushes cannot both write version V, so the stream stays one linear history.

Events travel as records ``{event_id, type, data, refs, meta}``; their ids are kept, so sending
one twice is a no-op (what makes an interrupted push or pull safe to run again).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path

import boto3

from fmforge.errors import RemoteConflict, RemoteError, StreamVersionConflict
from fmforge.ledger import NewEvent
from fmforge.models.history import Record, event_record
from fmforge.objects import ObjectStore
from fmforge.repository import DIRNAME, Repository


def record_event(record: Record, refs: Iterable[str] | None = None) -> NewEvent:
    """The record as an event to append here; its first recording time travels along."""
    meta = record.get("meta", {})
    return NewEvent(
        record["type"],
        record["data"],
        event_id=record["event_id"],
        refs=tuple(sorted(refs if refs is not None else record.get("refs", ()))),
        meta={
            "origin_actor": meta.get("origin_actor") or meta.get("actor", ""),
            "origin_time": meta.get("origin_time") or meta.get("time", ""),
        },
    )


class RemoteBackend(ABC):
    url: str
    objects: ObjectStore

    @abstractmethod
    def read_stream(self, stream: str) -> list[Record]: ...

    @abstractmethod
    def append(self, stream: str, events: Sequence[NewEvent], expected_version: int) -> None:
        """Append after ``expected_version`` events, else ``RemoteConflict``."""

    @abstractmethod
    def model_streams(self) -> list[str]: ...

    def close(self) -> None:  # noqa: B027 - a backend holding nothing needs no close
        """Release connections."""


class RepositoryBackend(RemoteBackend):
    def __init__(self, path: Path, *, create: bool) -> None:
        self.url = str(path)
        if not (path / DIRNAME).is_dir():
            if not create:
                raise RemoteError(f"remote {path} is not an fmforge repository")
            path.mkdir(parents=True, exist_ok=True)
            Repository.init(path).close()
        self.repo = Repository.open(path)
        self.objects = self.repo.objects

    def read_stream(self, stream: str) -> list[Record]:
        return [event_record(e) for e in self.repo.ledger.read_stream(stream)]

    def append(self, stream: str, events: Sequence[NewEvent], expected_version: int) -> None:
        try:
            self.repo.record(stream, list(events), expected_version=expected_version)
        except StreamVersionConflict:
            raise RemoteConflict(
                f"{stream} changed at remote {self.url} during the transfer; run it again"
            ) from None

    def model_streams(self) -> list[str]:
        streams = {e.stream for e in self.repo.ledger.read_all(streams="model/")}
        return sorted(streams)

    def close(self) -> None:
        self.repo.close()


class S3Backend(RemoteBackend):
    def __init__(self, url: str, *, endpoint_url: str | None) -> None:
        from fmforge.objects.s3 import S3ObjectStore, parse_s3_url

        self.url = url
        self.bucket, self.prefix = parse_s3_url(url)
        objects = S3ObjectStore(
            f"s3://{self.bucket}/{self.prefix}objects", endpoint_url=endpoint_url
        )
        self.objects = objects
        self._client = boto3.client("s3", endpoint_url=endpoint_url)

    def _stream_prefix(self, stream: str) -> str:
        return f"{self.prefix}streams/{stream}/"

    def _keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        for page in self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        ):
            keys += [item["Key"] for item in page.get("Contents", [])]
        return sorted(keys)

    def read_stream(self, stream: str) -> list[Record]:
        records = []
        for version, key in enumerate(self._keys(self._stream_prefix(stream)), start=1):
            if not key.endswith(f"/{version:012d}.json"):
                raise RemoteError(f"remote {self.url}: stream {stream} has a gap at {version}")
            body = self._client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            records.append(json.loads(body))
        return records

    def append(self, stream: str, events: Sequence[NewEvent], expected_version: int) -> None:
        from botocore.exceptions import ClientError

        for offset, event in enumerate(events, start=1):
            record = {
                "event_id": event.event_id,
                "type": event.type,
                "data": dict(event.data),
                "refs": list(event.refs),
                "meta": dict(event.meta),
            }
            key = f"{self._stream_prefix(stream)}{expected_version + offset:012d}.json"
            try:
                self._client.put_object(
                    Bucket=self.bucket, Key=key, Body=json.dumps(record).encode(), IfNoneMatch="*"
                )
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412"):
                    raise RemoteConflict(
                        f"{stream} changed at remote {self.url} during the transfer; run it again"
                    ) from None
                raise

    def model_streams(self) -> list[str]:
        root = f"{self.prefix}streams/"
        return sorted({key[len(root) :].rsplit("/", 1)[0] for key in self._keys(root + "model/")})


def open_backend(
    url: str, *, endpoint_url: str | None = None, create: bool = False
) -> RemoteBackend:
    if url.startswith("s3://"):
        return S3Backend(url, endpoint_url=endpoint_url)
    if "://" in url and not url.startswith("file://"):
        raise RemoteError(f"unsupported remote URL {url!r}: use a directory or s3://BUCKET/PREFIX")
    return RepositoryBackend(Path(url.removeprefix("file://")).expanduser(), create=create)

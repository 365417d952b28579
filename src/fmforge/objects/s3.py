"""Object store on any S3-compatible endpoint (AWS S3, MinIO, Ceph, moto, ...).

Keys are ``<prefix><ab>/<cdef...>``. Large writes are staged in a local temporary file and sent
with a multipart upload, which becomes visible only when complete. Credentials come from the
usual AWS sources (environment, ~/.aws); the endpoint from ``objects.s3_endpoint_url``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError

from fmforge.errors import BackendUnavailable, ObjectNotFound
from fmforge.objects.store import HEADER, Compression, ObjectInfo, ObjectStore

_MISSING = {"404", "NoSuchKey", "NotFound"}


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> (``bucket``, ``some/prefix/``)."""
    rest = url.removeprefix("s3://")
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise BackendUnavailable(f"S3 URL {url!r} names no bucket (s3://BUCKET/PREFIX)")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


class S3ObjectStore(ObjectStore):
    _fsync_staging = False

    def __init__(
        self,
        url: str,
        *,
        endpoint_url: str | None = None,
        create_bucket: bool = False,
        compression: Compression = "auto",
        zstd_level: int = 3,
        chunk_size: int = 8 << 20,
        client: Any = None,
    ) -> None:
        super().__init__(compression=compression, zstd_level=zstd_level, chunk_size=chunk_size)
        self.url = url
        self.bucket, self.prefix = parse_s3_url(url)
        self.endpoint_url = endpoint_url
        self._client = client or boto3.client("s3", endpoint_url=endpoint_url)
        # Parts of the chunk size, two in flight: memory stays bounded by a few chunks.
        self._transfer = TransferConfig(
            multipart_threshold=2 * chunk_size,
            multipart_chunksize=max(chunk_size, 5 << 20),
            max_concurrency=2,
        )
        # Staged in a folder of fmforge's own, so gc removes only fmforge's leftovers there.
        user = os.getuid() if hasattr(os, "getuid") else "user"
        self._staging = Path(tempfile.gettempdir()) / f"fmforge-staging-{user}"
        self._staging.mkdir(mode=0o700, exist_ok=True)
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if create_bucket and _code(exc) in _MISSING | {"NoSuchBucket"}:
                self._client.create_bucket(Bucket=self.bucket)
            else:
                raise self._unavailable(exc) from None
        except BotoCoreError as exc:
            raise self._unavailable(exc) from None

    def _unavailable(self, exc: Exception) -> BackendUnavailable:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return BackendUnavailable(f"S3 bucket {self.bucket!r}{where} is not usable: {exc}")

    def _key(self, digest: str) -> str:
        return f"{self.prefix}{digest[:2]}/{digest[2:]}"

    def _call(self, method: str, digest: str | None = None, **kwargs: Any) -> Any:
        try:
            return getattr(self._client, method)(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            if digest is not None and _code(exc) in _MISSING:
                raise ObjectNotFound(digest) from None
            raise self._unavailable(exc) from None
        except BotoCoreError as exc:
            raise self._unavailable(exc) from None

    def _exists(self, digest: str) -> bool:
        try:
            self._call("head_object", digest, Key=self._key(digest))
        except ObjectNotFound:
            return False
        return True

    def _publish(self, digest: str, staged: Path) -> None:
        try:
            self._client.upload_file(
                str(staged), self.bucket, self._key(digest), Config=self._transfer
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._unavailable(exc) from None

    def _open_stored(self, digest: str) -> BinaryIO:
        response = self._call("get_object", digest, Key=self._key(digest))
        return cast(BinaryIO, _ClosingBody(response["Body"]))

    def _read_header(self, digest: str) -> bytes:
        response = self._call(
            "get_object", digest, Key=self._key(digest), Range=f"bytes=0-{HEADER.size - 1}"
        )
        return bytes(response["Body"].read())

    def _delete(self, digest: str) -> None:
        self._call("delete_object", digest, Key=self._key(digest))

    def _iter_stored(self) -> Iterator[ObjectInfo]:
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for item in page.get("Contents", []):
                    name = item["Key"][len(self.prefix) :].replace("/", "")
                    if len(name) == 64:
                        yield ObjectInfo(name, item["Size"], item["LastModified"].timestamp())
        except (ClientError, BotoCoreError) as exc:
            raise self._unavailable(exc) from None

    def _staging_dir(self) -> Path:
        return self._staging

    def close(self) -> None:
        self._client.close()


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class _ClosingBody:
    """botocore's StreamingBody as a minimal binary file (read + context manager)."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def read(self, size: int = -1) -> bytes:
        return bytes(self._body.read(None if size < 0 else size))

    def close(self) -> None:
        self._body.close()

    def __enter__(self) -> _ClosingBody:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

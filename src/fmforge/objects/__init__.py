"""Content-addressed object storage for tensors, tables and metric chunks."""

from __future__ import annotations

from fmforge.objects.hashing import check_digest, hash_bytes
from fmforge.objects.local import LocalObjectStore
from fmforge.objects.store import Compression, GcReport, ObjectInfo, ObjectStore


def open_object_store(
    url: str,
    *,
    endpoint_url: str | None = None,
    create: bool = False,
    compression: Compression = "auto",
    zstd_level: int = 3,
) -> ObjectStore:
    """``s3://bucket/prefix`` (with ``endpoint_url`` for non-AWS endpoints) or a directory."""
    if url.startswith("s3://"):
        from fmforge.objects.s3 import S3ObjectStore

        return S3ObjectStore(
            url,
            endpoint_url=endpoint_url or None,
            create_bucket=create,
            compression=compression,
            zstd_level=zstd_level,
        )
    from fmforge.errors import ConfigError

    if "://" in url and not url.startswith("file://"):
        raise ConfigError(f"unsupported object store URL {url!r}: use a directory or s3://BUCKET")
    return LocalObjectStore(
        url.removeprefix("file://"), compression=compression, zstd_level=zstd_level
    )


__all__ = [
    "Compression",
    "GcReport",
    "LocalObjectStore",
    "ObjectInfo",
    "ObjectStore",
    "check_digest",
    "hash_bytes",
    "open_object_store",
]

"""One contract for every object store backend: a local directory and a real S3 HTTP server."""

from __future__ import annotations

import io
import itertools
import os
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import blake3
import boto3
import pytest

from fmforge.errors import CorruptObject, InvalidDigest, ObjectNotFound
from fmforge.objects import LocalObjectStore, ObjectStore
from fmforge.objects.s3 import S3ObjectStore
from fmforge.objects.store import HEADER

_buckets = itertools.count()


def weights_like(n_bytes: int) -> bytes:
    """Float32 noise: what model weights look like to a compressor (nearly incompressible)."""
    import numpy as np

    rng = np.random.default_rng(0)
    return rng.standard_normal(n_bytes // 4, dtype=np.float32).tobytes()


class ObjectStoreContract:
    @pytest.fixture
    def store(self) -> Iterator[ObjectStore]:
        raise NotImplementedError

    def stored_bytes(self, store: ObjectStore, digest: str) -> bytes:
        raise NotImplementedError

    def overwrite(self, store: ObjectStore, digest: str, content: bytes) -> None:
        raise NotImplementedError

    def test_put_get_round_trip_is_bit_exact(self, store: ObjectStore) -> None:
        for payload in (b"", b"x", os.urandom(70_000), b"abc" * 100_000):
            digest = store.put(payload)
            assert digest == blake3.blake3(payload).hexdigest()
            assert store.get(digest) == payload
            assert store.size(digest) == len(payload)
            assert store.has(digest)

    def test_every_source_kind_gives_the_same_digest(
        self, store: ObjectStore, tmp_path: Path
    ) -> None:
        payload = os.urandom(3 * store.chunk_size + 123)
        path = tmp_path / "blob.bin"
        path.write_bytes(payload)
        digests = {
            store.put(payload),
            store.put(path),
            store.put(io.BytesIO(payload)),
            store.put(payload[i : i + 1000] for i in range(0, len(payload), 1000)),
        }
        assert digests == {blake3.blake3(payload).hexdigest()}
        assert store.get(digests.pop()) == payload

    def test_compressible_objects_are_stored_compressed(self, store: ObjectStore) -> None:
        text = b"the same sentence again and again. " * 10_000
        digest = store.put(text)
        assert len(self.stored_bytes(store, digest)) < len(text) // 10
        assert store.get(digest) == text
        streamed = store.put(iter([text[:100_000], text[100_000:]]))
        assert streamed == digest

    def test_incompressible_objects_are_stored_raw(self, store: ObjectStore) -> None:
        noise = os.urandom(1 << 20)
        digest = store.put(noise)
        assert len(self.stored_bytes(store, digest)) == len(noise) + HEADER.size

    def test_float_weights_compress_a_little_and_come_back_exact(self, store: ObjectStore) -> None:
        weights = weights_like(1 << 20)
        digest = store.put(weights)
        assert len(self.stored_bytes(store, digest)) < len(weights)
        assert store.get(digest) == weights

    def test_streaming_read_matches_and_verifies(self, store: ObjectStore) -> None:
        payload = os.urandom(2 * store.chunk_size + 7)
        digest = store.put(payload)
        with store.open(digest) as reader:
            parts = []
            while chunk := reader.read(100_000):
                parts.append(chunk)
        assert b"".join(parts) == payload

    def test_copy_to_writes_the_object(self, store: ObjectStore, tmp_path: Path) -> None:
        payload = b"model card\n" * 5000
        digest = store.put(payload)
        store.copy_to(digest, tmp_path / "out.bin")
        assert (tmp_path / "out.bin").read_bytes() == payload

    def test_missing_and_malformed_digests(self, store: ObjectStore) -> None:
        missing = blake3.blake3(b"never stored").hexdigest()
        assert not store.has(missing)
        with pytest.raises(ObjectNotFound) as caught:
            store.get(missing)
        assert caught.value.digest == missing
        with pytest.raises(ObjectNotFound):
            store.open(missing)
        for bad in ("../../etc/passwd", "A" * 64, "abc"):
            with pytest.raises(InvalidDigest):
                store.get(bad)

    @pytest.mark.parametrize("kind", ["flipped byte", "truncated", "bad header"])
    def test_corruption_is_detected_on_every_read_path(self, store: ObjectStore, kind: str) -> None:
        payload = os.urandom(50_000)
        digest = store.put(payload)
        stored = bytearray(self.stored_bytes(store, digest))
        if kind == "flipped byte":
            stored[HEADER.size + 1234] ^= 0x01
        elif kind == "truncated":
            del stored[-100:]
        else:
            stored[0:4] = b"JUNK"
        self.overwrite(store, digest, bytes(stored))
        with pytest.raises(CorruptObject) as caught:
            store.get(digest)
        assert caught.value.digest == digest
        with pytest.raises(CorruptObject):
            store.verify_object(digest)

    def test_corrupt_compressed_object_is_detected(self, store: ObjectStore) -> None:
        text = b"compressible " * 20_000
        digest = store.put(text)
        stored = bytearray(self.stored_bytes(store, digest))
        stored[len(stored) // 2] ^= 0xFF
        self.overwrite(store, digest, bytes(stored))
        with pytest.raises(CorruptObject):
            store.get(digest)
        with pytest.raises(CorruptObject):
            store.verify_object(digest)

    def test_delete_and_gc(self, store: ObjectStore) -> None:
        keep = store.put(b"referenced")
        orphan = store.put(b"orphan")
        young_report = store.gc({keep}, grace_period_s=3600)
        assert young_report.deleted == 0
        assert young_report.young == 1
        dry = store.gc({keep}, grace_period_s=0, dry_run=True, now=time.time() + 10)
        assert dry.deleted_digests == (orphan,)
        assert store.has(orphan)
        report = store.gc({keep}, grace_period_s=0, now=time.time() + 10)
        assert report.deleted_digests == (orphan,)
        assert report.kept == 1
        assert store.has(keep)
        assert not store.has(orphan)
        store.delete(keep)
        assert not store.has(keep)

    def test_put_new_tells_whether_it_stored_the_object(
        self, store: ObjectStore, tmp_path: Path
    ) -> None:
        small, large = b"tell me", os.urandom(3 * store.chunk_size)
        path = tmp_path / "large.bin"
        path.write_bytes(large)
        digest, created = store.put_new(small)
        assert created
        assert store.put_new(small) == (digest, False)
        digest, created = store.put_new(path)
        assert created
        assert store.put_new(iter([large[:10], large[10:]])) == (digest, False)
        assert store.put_new(large) == (digest, False)

    def test_gc_removes_the_staging_files_of_interrupted_writes(self, store: ObjectStore) -> None:
        """A writer killed mid-put leaves its staging file: gc removes it once older than the
        grace period (and reports it), sparing younger ones and everything else there."""
        staging = store._staging_dir()
        old, young = staging / "put-old.tmp", staging / "put-young.tmp"
        old.write_bytes(b"x" * 1000)
        young.write_bytes(b"y" * 10)
        other = staging / "not-ours.tmp"
        other.write_bytes(b"z")
        os.utime(old, (time.time() - 7200, time.time() - 7200))
        try:
            dry = store.gc(set(), grace_period_s=3600, dry_run=True)
            assert (dry.staged_removed, dry.staged_bytes, dry.staged_young) == (1, 1000, 1)
            assert old.exists()
            report = store.gc(set(), grace_period_s=3600)
            assert (report.staged_removed, report.staged_bytes, report.staged_young) == (1, 1000, 1)
            assert not old.exists()
            assert young.exists()
            assert other.exists()
        finally:
            for path in (old, young, other):
                path.unlink(missing_ok=True)

    @pytest.mark.slow
    def test_streaming_memory_stays_bounded(self, store: ObjectStore) -> None:
        chunk = store.chunk_size
        total = 48 * chunk  # 384 MiB with the default chunk size

        def produce() -> Iterator[bytearray]:
            block = bytearray(os.urandom(chunk))  # one buffer, rewritten: distinct chunks
            for i in range(total // chunk):
                block[:8] = i.to_bytes(8, "little")
                yield block

        tracemalloc.start()
        try:
            digest = store.put(produce())
            _, put_peak = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            with store.open(digest) as reader:
                read = 0
                while data := reader.read(chunk):
                    read += len(data)
            _, get_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert read == total
        # A few chunks (the caller's, ours, the HTTP client's), never the 48-chunk object.
        assert put_peak < 6 * chunk, f"put peaked at {put_peak / 2**20:.0f} MiB"
        assert get_peak < 6 * chunk, f"streaming read peaked at {get_peak / 2**20:.0f} MiB"


class TestLocalObjectStore(ObjectStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[ObjectStore]:
        return LocalObjectStore(tmp_path / "objects")

    def stored_bytes(self, store: ObjectStore, digest: str) -> bytes:
        assert isinstance(store, LocalObjectStore)
        return store.path_of(digest).read_bytes()

    def overwrite(self, store: ObjectStore, digest: str, content: bytes) -> None:
        assert isinstance(store, LocalObjectStore)
        store.path_of(digest).write_bytes(content)

    def test_layout_is_sharded_by_digest_prefix(self, store: ObjectStore) -> None:
        assert isinstance(store, LocalObjectStore)
        digest = store.put(b"hello")
        assert store.path_of(digest) == store.root / digest[:2] / digest[2:]
        assert [info.digest for info in store.iter_objects()] == [digest]

    @pytest.mark.slow
    def test_a_writer_killed_mid_put_leaves_no_visible_object(self, tmp_path: Path) -> None:
        import multiprocessing

        from tests.workers import put_then_crash

        root = tmp_path / "objects"
        process = multiprocessing.get_context("spawn").Process(
            target=put_then_crash, args=(str(root), 8)
        )
        process.start()
        process.join(60)
        assert process.exitcode == 9
        store = LocalObjectStore(root)
        assert list(store.iter_objects()) == []
        leftovers = list((root / "tmp").glob("put-*.tmp"))
        assert leftovers, "the crashed writer's staging file should be all that remains"
        store.gc(set(), grace_period_s=0, now=time.time() + 1)
        assert list((root / "tmp").glob("put-*.tmp")) == []


@pytest.mark.s3
class TestS3ObjectStore(ObjectStoreContract):
    @pytest.fixture
    def store(self, s3_endpoint: str) -> Iterator[ObjectStore]:
        url = f"s3://bucket-{next(_buckets)}/team/objects"
        store = S3ObjectStore(url, endpoint_url=s3_endpoint, create_bucket=True)
        yield store
        store.close()

    def _client(self, store: ObjectStore) -> object:
        assert isinstance(store, S3ObjectStore)
        return boto3.client("s3", endpoint_url=store.endpoint_url)

    def stored_bytes(self, store: ObjectStore, digest: str) -> bytes:
        assert isinstance(store, S3ObjectStore)
        client = self._client(store)
        body = client.get_object(Bucket=store.bucket, Key=store._key(digest))["Body"]  # type: ignore[attr-defined]
        return bytes(body.read())

    def overwrite(self, store: ObjectStore, digest: str, content: bytes) -> None:
        assert isinstance(store, S3ObjectStore)
        client = self._client(store)
        client.put_object(Bucket=store.bucket, Key=store._key(digest), Body=content)  # type: ignore[attr-defined]

    def test_keys_live_under_the_prefix(self, store: ObjectStore) -> None:
        assert isinstance(store, S3ObjectStore)
        digest = store.put(b"hello")
        client = self._client(store)
        keys = [
            item["Key"]
            for item in client.list_objects_v2(Bucket=store.bucket)["Contents"]  # type: ignore[attr-defined]
        ]
        assert keys == [f"team/objects/{digest[:2]}/{digest[2:]}"]

    def test_missing_bucket_is_a_clear_error(self, s3_endpoint: str) -> None:
        from fmforge.errors import BackendUnavailable

        with pytest.raises(BackendUnavailable, match="no-such-bucket"):
            S3ObjectStore("s3://no-such-bucket", endpoint_url=s3_endpoint)

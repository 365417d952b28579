"""The content-addressed object store: the contract and the logic every backend shares.

An object's address is blake3 of its raw bytes. What a backend stores is a 13-byte frame header
(magic, codec, raw size) followed by the body, zstd-compressed when that shrinks it. Every read
re-hashes the raw bytes and raises ``CorruptObject`` on a mismatch; streamed reads check at EOF.

Writes are staged in a temporary file (chunk by chunk, so memory stays bounded by the chunk size)
and only then made visible under their digest (rename, or an S3 upload that completes atomically).
"""

from __future__ import annotations

import io
import logging
import os
import secrets
import struct
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import IO, Any, BinaryIO, Literal

import zstandard

from fmforge.errors import ConfigError, CorruptObject
from fmforge.objects.hashing import check_digest, hash_bytes, new_hasher

logger = logging.getLogger(__name__)

MAGIC = b"FMO1"
HEADER = struct.Struct("<4sBQ")
CODEC_RAW = 0
CODEC_ZSTD = 1
DEFAULT_CHUNK = 8 << 20
_PROBE = 1 << 20
# Compress only when the probe shrinks by at least this much: float weights barely compress,
# and zstd on a GB of them would cost far more than the few bytes it saves.
_WORTH_IT = 0.97
_WRITEBACK_EVERY = 128 << 20

Source = (
    bytes | bytearray | memoryview | os.PathLike[str] | IO[bytes] | Iterable[bytes | memoryview]
)
Compression = Literal["auto", "off"]


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    digest: str
    stored_size: int
    mtime: float


@dataclass(frozen=True, slots=True)
class GcReport:
    kept: int
    deleted: int
    young: int
    bytes_freed: int
    deleted_digests: tuple[str, ...]
    staged_removed: int = 0  # staging files of interrupted writes removed (older than the grace)
    staged_bytes: int = 0
    staged_young: int = 0  # staging files spared: a writer may still be filling them


def frame_header(codec: int, raw_size: int) -> bytes:
    return HEADER.pack(MAGIC, codec, raw_size)


def parse_header(digest: str, header: bytes) -> tuple[int, int]:
    if len(header) < HEADER.size:
        raise CorruptObject(digest, "truncated header")
    magic, codec, size = HEADER.unpack(header[: HEADER.size])
    if magic != MAGIC or codec not in (CODEC_RAW, CODEC_ZSTD):
        raise CorruptObject(digest, "unrecognised header")
    return codec, size


class ObjectStore(ABC):
    """Content-addressed storage of immutable byte strings."""

    url: str
    # Whether staged temp files must be fsynced before being made visible (local rename).
    _fsync_staging = True

    def __init__(
        self,
        *,
        compression: Compression = "auto",
        zstd_level: int = 3,
        chunk_size: int = DEFAULT_CHUNK,
    ) -> None:
        if compression not in ("auto", "off"):
            raise ConfigError(f"objects.compression must be 'auto' or 'off', got {compression!r}")
        if not 1 <= zstd_level <= 22:
            raise ConfigError(f"objects.zstd_level must be 1..22, got {zstd_level}")
        self.compression = compression
        self.zstd_level = zstd_level
        self.chunk_size = chunk_size

    # ---- backend primitives -------------------------------------------------------------

    @abstractmethod
    def _exists(self, digest: str) -> bool: ...

    @abstractmethod
    def _publish(self, digest: str, staged: Path) -> None:
        """Make the staged framed file visible under ``digest`` (consumes ``staged``)."""

    @abstractmethod
    def _open_stored(self, digest: str) -> BinaryIO:
        """The stored frame, header first; ``ObjectNotFound`` if absent."""

    @abstractmethod
    def _read_header(self, digest: str) -> bytes: ...

    @abstractmethod
    def _delete(self, digest: str) -> None: ...

    @abstractmethod
    def _iter_stored(self) -> Iterator[ObjectInfo]: ...

    @abstractmethod
    def _staging_dir(self) -> Path: ...

    def close(self) -> None:  # noqa: B027 - backends with connections override it
        """Release connections; the default holds none."""

    # ---- writing ------------------------------------------------------------------------

    def put(self, source: Source, *, compress: bool = True) -> str:
        """Store bytes, a file (``pathlib.Path`` or binary file object) or an iterable of chunks.

        Returns the blake3 hex digest of the raw bytes. Storing existing content is a no-op.
        ``compress=False`` skips the compression probe, for payloads already compressed.
        """
        return self.put_new(source, compress=compress)[0]

    def put_new(self, source: Source, *, compress: bool = True) -> tuple[str, bool]:
        """``put``, also telling whether this call stored the object (False: it was there
        already), for callers that report the bytes they added."""
        if isinstance(source, bytes | bytearray | memoryview):
            view = memoryview(source).cast("B")
            if len(view) <= 8 * self.chunk_size:
                return self._put_small(view, compress)
            chunks: Iterable[bytes | memoryview] = (
                view[i : i + self.chunk_size] for i in range(0, len(view), self.chunk_size)
            )
            return self._put_chunks(chunks, compress)
        if isinstance(source, str):
            raise TypeError("put() takes bytes, a pathlib.Path, a binary file or byte chunks")
        if isinstance(source, os.PathLike):
            with open(source, "rb") as handle:
                return self._put_chunks(_read_chunks(handle, self.chunk_size), compress)
        if hasattr(source, "read"):
            reader = _read_chunks(source, self.chunk_size)  # type: ignore[arg-type]
            return self._put_chunks(reader, compress)
        return self._put_chunks(iter(source), compress)

    def _put_small(self, view: memoryview, compress: bool) -> tuple[str, bool]:
        digest = hash_bytes(view)
        if self._exists(digest):
            return digest, False
        codec, body = CODEC_RAW, view
        if compress and self._worth_compressing(view[:_PROBE]):
            compressed = zstandard.ZstdCompressor(level=self.zstd_level).compress(view)
            if len(compressed) < len(view):
                codec, body = CODEC_ZSTD, memoryview(compressed)
        staged = self._new_staged_file()
        try:
            with open(staged, "wb") as handle:
                handle.write(frame_header(codec, len(view)))
                handle.write(body)
                self._finish_staged(handle)
            self._publish(digest, staged)
        finally:
            staged.unlink(missing_ok=True)
        return digest, True

    def _put_chunks(self, chunks: Iterable[bytes | memoryview], compress: bool) -> tuple[str, bool]:
        iterator = iter(chunks)
        first = next(iterator, b"")
        worth = compress and self._worth_compressing(first[:_PROBE])
        codec = CODEC_ZSTD if worth else CODEC_RAW
        compressor = (
            zstandard.ZstdCompressor(level=self.zstd_level).compressobj()
            if codec == CODEC_ZSTD
            else None
        )
        hasher = new_hasher()
        size = 0
        staged = self._new_staged_file()
        try:
            with open(staged, "wb") as handle:
                handle.write(frame_header(codec, 0))
                written, flushed = HEADER.size, 0
                for chunk in chain((first,), iterator):
                    hasher.update(chunk)
                    size += len(chunk)
                    written += handle.write(compressor.compress(chunk) if compressor else chunk)
                    if self._fsync_staging and written - flushed >= _WRITEBACK_EVERY:
                        flushed = _start_writeback(handle, flushed, written)
                if compressor is not None:
                    handle.write(compressor.flush())
                handle.seek(0)
                handle.write(frame_header(codec, size))
                self._finish_staged(handle)
            digest = str(hasher.hexdigest())
            created = not self._exists(digest)
            if created:
                self._publish(digest, staged)
        finally:
            staged.unlink(missing_ok=True)
        return digest, created

    def _worth_compressing(self, probe: bytes | memoryview) -> bool:
        if self.compression == "off" or len(probe) < 64:
            return False
        compressed = zstandard.ZstdCompressor(level=self.zstd_level).compress(probe)
        return len(compressed) < _WORTH_IT * len(probe)

    def _new_staged_file(self) -> Path:
        fd, name = tempfile.mkstemp(prefix="put-", suffix=".tmp", dir=self._staging_dir())
        os.close(fd)
        return Path(name)

    def _finish_staged(self, handle: IO[bytes]) -> None:
        handle.flush()
        if self._fsync_staging:
            os.fsync(handle.fileno())

    # ---- reading ------------------------------------------------------------------------

    def has(self, digest: str) -> bool:
        return self._exists(check_digest(digest))

    def size(self, digest: str) -> int:
        """Size of the raw (uncompressed) object in bytes."""
        check_digest(digest)
        return parse_header(digest, self._read_header(digest))[1]

    def get(self, digest: str, *, verify: bool = True) -> bytes:
        """The whole object, verified against its digest.

        ``verify=False`` only for callers that check what they build from it against a hash of
        their own (a tensor's raw hash): a damaged object still fails there.
        """
        check_digest(digest)
        with self._open_stored(digest) as stored:
            codec, size = parse_header(digest, stored.read(HEADER.size))
            if codec == CODEC_RAW:
                data = stored.read()
            else:
                try:
                    data = zstandard.ZstdDecompressor().decompress(
                        stored.read(), max_output_size=size
                    )
                except zstandard.ZstdError as exc:
                    raise CorruptObject(digest, f"cannot decompress: {exc}") from None
        if len(data) != size:
            raise CorruptObject(digest, f"{len(data)} bytes stored, header says {size}")
        if verify and hash_bytes(data) != digest:
            raise CorruptObject(digest, "content does not hash to its digest")
        return data

    def open(self, digest: str) -> io.BufferedReader:
        """A streaming reader; memory stays bounded. Raises ``CorruptObject`` at EOF on mismatch."""
        check_digest(digest)
        stored = self._open_stored(digest)
        try:
            codec, size = parse_header(digest, stored.read(HEADER.size))
        except BaseException:
            stored.close()
            raise
        source: Any = stored
        if codec == CODEC_ZSTD:
            source = zstandard.ZstdDecompressor().stream_reader(stored, closefd=True)
        return io.BufferedReader(_VerifyingReader(digest, source, size), self.chunk_size)

    def verify_object(self, digest: str) -> None:
        """Read the object through and check its hash and size."""
        with self.open(digest) as reader:
            while reader.read(self.chunk_size):
                pass

    def copy_to(self, digest: str, path: str | os.PathLike[str]) -> None:
        """Write the object to ``path``, streaming; the file appears only once verified, with
        the default mode (0666 less the umask, as any new file)."""
        target = Path(path)
        name = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as out, self.open(digest) as reader:
                while chunk := reader.read(self.chunk_size):
                    out.write(chunk)
            os.replace(name, target)
        finally:
            name.unlink(missing_ok=True)

    def iter_objects(self) -> Iterator[ObjectInfo]:
        return self._iter_stored()

    # ---- maintenance --------------------------------------------------------------------

    def delete(self, digest: str) -> None:
        """Remove an object (for garbage collection only: events may still refer to it)."""
        self._delete(check_digest(digest))

    def gc(
        self,
        keep: Collection[str],
        *,
        grace_period_s: float,
        dry_run: bool = False,
        now: float | None = None,
    ) -> GcReport:
        """Delete objects not in ``keep``, sparing any younger than the grace period (a writer may
        have stored it and not yet recorded the event that refers to it), and the staging files
        that writers killed mid-put left, older than the grace period."""
        now = time.time() if now is None else now
        keep = set(keep)
        kept = young = freed = 0
        deleted: list[str] = []
        for info in self._iter_stored():
            if info.digest in keep:
                kept += 1
            elif now - info.mtime < grace_period_s:
                young += 1
            else:
                if not dry_run:
                    self._delete(info.digest)
                deleted.append(info.digest)
                freed += info.stored_size
        removed, removed_bytes, spared = self._gc_staging(now - grace_period_s, dry_run)
        return GcReport(
            kept, len(deleted), young, freed, tuple(deleted), removed, removed_bytes, spared
        )

    def _gc_staging(self, older_than: float, dry_run: bool) -> tuple[int, int, int]:
        """Remove the staging files (``put-*.tmp``) of writers killed mid-put, last written
        before ``older_than``: (files removed, their bytes, files spared as too young)."""
        removed = removed_bytes = spared = 0
        for staged in self._staging_dir().glob("put-*.tmp"):
            try:
                info = staged.stat()
                if info.st_mtime >= older_than:
                    spared += 1
                    continue
                if not dry_run:
                    staged.unlink()
            except FileNotFoundError:  # its writer finished meanwhile
                continue
            removed += 1
            removed_bytes += info.st_size
        return removed, removed_bytes, spared


def _start_writeback(handle: IO[bytes], start: int, end: int) -> int:
    """Ask the kernel to write ``start..end`` to disk now, without waiting.

    Otherwise a large object sits dirty in the page cache until the final fsync, and the disk
    idles while we hash; this overlaps the two. Returns the new flushed offset.
    """
    handle.flush()
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(handle.fileno(), start, end - start, os.POSIX_FADV_DONTNEED)
    return end


def _read_chunks(handle: IO[bytes], chunk_size: int) -> Iterator[bytes]:
    while chunk := handle.read(chunk_size):
        yield chunk


class _VerifyingReader(io.RawIOBase):
    """Hashes what passes through; at EOF checks size and digest."""

    def __init__(self, digest: str, source: Any, size: int) -> None:
        self._digest = digest
        self._source = source
        self._size = size
        self._seen = 0
        self._hasher = new_hasher(size)
        self._checked = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        try:
            if hasattr(self._source, "readinto"):  # files and zstd readers: no extra copy
                n = self._source.readinto(view)
            else:
                data = self._source.read(len(view))
                n = len(data)
                view[:n] = data
        except zstandard.ZstdError as exc:
            raise CorruptObject(self._digest, f"cannot decompress: {exc}") from None
        if n == 0:
            self._check()
            return 0
        self._seen += n
        if self._seen > self._size:
            raise CorruptObject(self._digest, f"more than {self._size} bytes stored")
        self._hasher.update(view[:n])
        return int(n)

    def _check(self) -> None:
        if self._checked:
            return
        self._checked = True
        if self._seen != self._size:
            raise CorruptObject(
                self._digest, f"{self._seen} bytes stored, header says {self._size}"
            )
        if self._hasher.hexdigest() != self._digest:
            raise CorruptObject(self._digest, "content does not hash to its digest")

    def close(self) -> None:
        if not self.closed:
            self._source.close()
        super().close()

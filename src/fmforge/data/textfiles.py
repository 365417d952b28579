"""Text files as UTF-8: the encoding detected or given, every byte decoded strictly, no NUL.

A CSV or JSON Lines file is read through ``DecodedStream``, a raw stream that hands the readers
UTF-8 bytes block by block (memory bounded by the block, not the file). The encoding is the one
given (``--encoding``), else the one its byte-order mark names (UTF-8, UTF-16 or UTF-32, either
byte order), else UTF-8. Bytes the encoding cannot decode are refused naming the line and the
character; so is a NUL character: no text fmforge stores holds NUL (it truncates strings in C
tools and PostgreSQL refuses it), and a file full of NULs is usually UTF-16 without a mark.
"""

from __future__ import annotations

import codecs
import io
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from fmforge.errors import InvalidDataSource, UsageError

BLOCK_BYTES = 1 << 20
_BOMS = (  # longest first: the UTF-32-LE mark starts with the UTF-16-LE one
    (codecs.BOM_UTF32_LE, "utf-32-le", "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32-be", "utf-32"),
    (codecs.BOM_UTF8, "utf-8", "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16-le", "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16-be", "utf-16"),
)
# What a byte that is not UTF-8 most likely means, for the hint.
_HINT = "pass --encoding (e.g. latin-1, cp1252 or utf-16) or convert the file to UTF-8"

# Words for where a problem is: (line, character in it, the line's text before it, whether the
# line starts a record, i.e. outside quotes; the file's first line, a CSV's header).
Locate = Callable[[int, int, str, bool, str], str]


def codec_name(encoding: str) -> str:
    """The canonical name of a codec a user gave; refused when Python has no such text codec."""
    try:
        info = codecs.lookup(encoding)
    except LookupError:
        raise UsageError(f"unknown encoding {encoding!r} (e.g. utf-8, latin-1, utf-16)") from None
    if not getattr(info, "_is_text_encoding", True):
        raise UsageError(f"{encoding!r} is not a text encoding")
    return info.name


def sniff(head: bytes, given: str | None) -> tuple[str, int, str]:
    """(codec to decode with, bytes of byte-order mark to skip, name to record) for a file
    starting with ``head``."""
    for mark, codec, recorded in _BOMS:
        if head.startswith(mark) and (
            given is None or codec_name(given) in (codec_name(recorded), codec_name(codec))
        ):
            return codec, len(mark), recorded
    if given is None:
        return "utf-8", 0, "utf-8"
    name = codec_name(given)
    return name, 0, name


def file_encoding(path: Path, given: str | None) -> str:
    """The encoding a text file is (or will be) read with, as recorded with the version."""
    with path.open("rb") as handle:
        return sniff(handle.read(4), given)[2]


class DecodedStream(io.RawIOBase):
    """The UTF-8 bytes of a text file in another (or the same) encoding, checked as read.

    ``locate(line, character, line_so_far, record_start)`` words where a problem is (a CSV
    names the column); ``record_start`` is whether the line starts outside quotes."""

    def __init__(
        self, path: Path, raw: BinaryIO, given: str | None, locate: Locate | None = None
    ) -> None:
        super().__init__()
        self.path, self.raw = path, raw
        self.codec, skip, self.encoding = sniff(raw.read(4), given)
        raw.seek(skip)
        self.decoder = codecs.getincrementaldecoder(self.codec)("strict")
        self.locate = locate or _plain
        self.line = 1  # lines before the pending output, + 1
        self.tail = ""  # text of the current line so far (its last BLOCK_BYTES)
        self.first_line = ""
        self.tail_length = 0  # characters of the current line so far (tail may hold fewer)
        self.quotes = 0  # '"' before the current line (odd: it starts inside a quoted field)
        self.tail_quotes = 0
        self.pending = b""
        self.offset = 0
        self.done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        """Fill ``buffer`` whole unless the file ends: Arrow's CSV reader takes a short read
        for a block, and a record must fit in one."""
        filled = 0
        while filled < len(buffer):
            if self.offset == len(self.pending):
                if self.done:
                    break
                block = self.raw.read(BLOCK_BYTES)
                self.done = not block
                self.pending, self.offset = self._decode(block).encode("utf-8"), 0
                continue
            size = min(len(buffer) - filled, len(self.pending) - self.offset)
            buffer[filled : filled + size] = memoryview(self.pending)[
                self.offset : self.offset + size
            ]
            self.offset += size
            filled += size
        return filled

    def _decode(self, block: bytes) -> str:
        try:
            text = self.decoder.decode(block, final=self.done)
        except UnicodeDecodeError as problem:
            before = bytes(problem.object[: problem.start])
            valid = before.decode(self.codec, "replace")
            bad = bytes(problem.object[problem.start : problem.end])
            where = self._where(valid, len(valid))
            shown = " ".join(f"0x{b:02x}" for b in bad[:4])
            if problem.reason == "unexpected end of data":
                what = f"the file ends inside a {self.encoding.upper()} character ({shown})"
            elif len(bad) > 1:
                what = f"bytes {shown} are not valid {self.encoding.upper()}"
            else:
                what = f"byte {shown} is not valid {self.encoding.upper()}"
            hint = _HINT if self.encoding in ("utf-8", "utf-8-sig") else "is --encoding right?"
            raise InvalidDataSource(f"{self.path}: {where}: {what}; {hint}") from None
        nul = text.find("\0")
        if nul >= 0:
            raise InvalidDataSource(
                f"{self.path}: {self._where(text, nul)}: a NUL character; text may not hold "
                "NUL (is this a binary file, or UTF-16 without a byte-order mark? then pass "
                "--encoding utf-16-le)"
            )
        self._advance(text)
        return text

    def _where(self, text: str, position: int) -> str:
        """Words for the place ``position`` of ``text`` (the text decoded after the pending)."""
        before = text[:position]
        newlines = before.count("\n")
        if newlines:
            start = before.rfind("\n") + 1
            quotes = self.quotes + self.tail_quotes + before.count('"', 0, start)
            line_text = before[start:]
            character = len(line_text) + 1
        else:
            quotes, line_text = self.quotes, self.tail + before
            character = self.tail_length + len(before) + 1
        whole = len(line_text) + 1 == character  # the line's text is all there
        line = self.line + newlines
        first = self.first_line if self.line > 1 else (self.tail + before).partition("\n")[0]
        return self.locate(line, character, line_text, whole and quotes % 2 == 0, first)

    def _advance(self, text: str) -> None:
        last = text.rfind("\n")
        if last < 0:
            self.tail_quotes += text.count('"')
            self.tail += text
            self.tail_length += len(text)
        else:
            if self.line == 1:
                self.first_line = (self.tail + text[:last]).partition("\n")[0][:BLOCK_BYTES]
            self.line += text.count("\n")
            self.quotes += self.tail_quotes + text.count('"', 0, last + 1)
            self.tail_quotes = text.count('"', last + 1)
            self.tail = text[last + 1 :]
            self.tail_length = len(self.tail)
        if len(self.tail) > BLOCK_BYTES:
            self.tail = self.tail[-BLOCK_BYTES:]


def _plain(line: int, character: int, _text: str, _start: bool, _first: str) -> str:
    return f"line {line}, character {character}"

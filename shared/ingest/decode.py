"""Object bytes -> raw NDJSON lines, streamed with bounded memory (DESIGN.md "ingest_file").

Why it looks like this:

* The encoding is sniffed from the first bytes, never from the name: GCS decompressive transcoding can hand a
  ``.gz`` over as plain text, and exporters concatenate gzip members.
* Segment files are ~1 GB uncompressed, so we never hold a file: input is read ``chunk_size`` at a time and inflate
  output is capped per call (``max_length``), so even a gzip bomb yields bounded chunks. A single line is bounded
  too: past ``max_line_bytes`` (``MAX_LINE_BYTES``, 16 MiB) only its head (``OVERSIZED_HEAD_BYTES``) is kept and the
  rest is skipped up to the next ``\n``; the line is yielded with ``oversized_bytes`` (its full length), and the
  loader rejects it as ``line_too_large`` with its line number. A 1 GB line that gzips to 1 MB therefore costs the
  cap, not the line. The cap sits above Pub/Sub's 10 MB message limit on purpose: any line a message could carry
  whole is still yielded whole, and ingest's existing oversized path (publish its head, marked oversized) handles it.
* Lines are split on ``b"\\n"`` only: ``str.splitlines`` also splits on U+2028/U+2029/U+0085, which occur raw inside
  JSON strings. The work is done per decompressed chunk with ``bytes.split`` (C speed); per-line Python work is
  avoided on the fast path :meth:`LineReader.iter_chunks_of_lines`, which batching consumes.
* A truncated or corrupt gzip is not an error: every complete line before the break is kept, the broken last line is
  yielded with ``partial=True`` (the loader rejects it as ``truncated_line``) and ``reader.truncated`` is set, so the
  caller can record it in the ledger. Nothing is silently dropped.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from itertools import chain, count
from typing import TYPE_CHECKING, BinaryIO, Literal, NamedTuple

from shared.errors import PermanentError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from shared.sources.format import Reader

__all__ = [
    "MAX_LINE_BYTES",
    "OVERSIZED_HEAD_BYTES",
    "FileRejected",
    "LineChunk",
    "LineReader",
    "RawLine",
    "open_lines",
]

GZIP_MAGIC = b"\x1f\x8b"
# One line's bound: above Pub/Sub's 10 MB message limit (see the module doc), far below the function's memory.
MAX_LINE_BYTES = 16 << 20
OVERSIZED_HEAD_BYTES = 100_000  # what is kept of a longer line: what a rejected row keeps of its payload
UTF8_BOM = b"\xef\xbb\xbf"
_WHITESPACE = b" \t\r\n\x0b\x0c"
_SALVAGE_STEP = 512  # input bytes per inflate call when recovering output up to a corrupt spot

Encoding = Literal["gzip", "plain", "empty"]

# Reason codes carried by FileRejected (machine-readable, recorded in the file ledger).
UNSUPPORTED_ENCODING = "unsupported_encoding"  # not gzip and not NDJSON text (zip, binary, other text)
UNSUPPORTED_CONTENT = "unsupported_content"  # a gzip whose content is not NDJSON

_KNOWN_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", "zip archive"),
    (b"PK\x05\x06", "empty zip archive"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstandard"),
    (b"PAR1", "parquet"),
    (b"Obj\x01", "avro"),
)


class FileRejected(PermanentError):
    """The object is not something we can read as NDJSON: record ``reason`` in the ledger and ack."""


class RawLine(NamedTuple):
    """One non-blank physical line. ``number`` is 1-based and counts blank lines, so it is stable for a file.
    ``oversized_bytes``: set for a line longer than the reader's cap, whose ``data`` is only its head."""

    number: int
    data: bytes
    partial: bool = False
    oversized_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class LineChunk:
    """The non-blank lines of one decompressed chunk, for consumers that want to avoid per-line objects.

    ``numbers`` is ``None`` when the lines are consecutive physical lines starting at ``first_number`` (the usual
    case); otherwise it holds each line's number (blank lines were skipped). ``partial`` marks the last line as the
    broken tail of a truncated file. ``oversized_bytes`` is set on a chunk of one line longer than the reader's cap:
    ``lines[0]`` is its head, ``oversized_bytes`` its full length.
    """

    first_number: int
    lines: list[bytes]
    numbers: list[int] | None = None
    partial: bool = False
    oversized_bytes: int | None = None

    def number_at(self, i: int) -> int:
        """Physical line number of ``lines[i]``."""
        if self.numbers is None:
            return self.first_number + (i if i >= 0 else len(self.lines) + i)
        return self.numbers[i]


def _describe(head: bytes) -> str:
    for magic, name in _KNOWN_MAGIC:
        if head.startswith(magic):
            return name
    return f"first bytes {head[:8]!r}"


class LineReader:
    """Iterator of :class:`RawLine` over a binary stream; see :func:`open_lines`.

    Consume it once, either by iterating (``RawLine`` objects) or with :meth:`iter_chunks_of_lines` (fast path).
    After exhaustion ``encoding``, ``truncated`` (and ``error``, why), ``bytes_in`` (bytes read from the stream),
    ``bytes_out`` (decoded bytes), ``lines`` (non-blank lines yielded, partial included) and ``members`` (gzip
    members seen) describe the file.
    """

    def __init__(self, stream: BinaryIO, chunk_size: int = 1 << 20, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        if chunk_size < 1 or max_line_bytes < 1:
            raise ValueError("chunk_size and max_line_bytes must be positive")
        self._stream = stream
        self._chunk_size = chunk_size
        self._max_line_bytes = max_line_bytes
        self._head_bytes = min(max_line_bytes, OVERSIZED_HEAD_BYTES)  # what is kept of a longer line
        self.encoding: Encoding = "empty"
        self.truncated = False
        self.error: str | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        self.lines = 0
        self.members = 0
        self._first_number = 1
        self._decoded: Iterator[bytes] = iter(())
        self._chunks: Iterator[LineChunk] | None = None
        self._raw: Iterator[RawLine] | None = None
        self._prime()

    # -- public --------------------------------------------------------------------------------------------------

    def iter_chunks_of_lines(self) -> Iterator[LineChunk]:
        """Yield the lines chunk by chunk (one list per decompressed chunk): the cheap way to consume a file."""
        if self._chunks is None:
            self._chunks = self._line_chunks()
        return self._chunks

    def __iter__(self) -> LineReader:
        return self

    def __next__(self) -> RawLine:
        if self._raw is None:
            self._raw = self._raw_lines()
        return next(self._raw)

    # -- sniffing --------------------------------------------------------------------------------------------------

    def _read(self, size: int) -> bytes:
        data = self._stream.read(size)
        if data:
            self.bytes_in += len(data)
        return data or b""

    def _prime(self) -> None:
        """Decide the encoding and check the content starts like NDJSON, before anything is yielded."""
        head = b""
        while len(head) < len(GZIP_MAGIC):
            data = self._read(self._chunk_size)
            if not data:
                break
            head += data
        if not head:
            return  # zero bytes: "empty", zero lines
        if head.startswith(GZIP_MAGIC):
            self.encoding = "gzip"
            decoded = self._inflate(head)
        else:
            self.encoding = "plain"
            decoded = self._plain(head)
        self._decoded = self._sniff_content(decoded, head)

    def _sniff_content(self, decoded: Iterator[bytes], raw_head: bytes) -> Iterator[bytes]:
        """Skip a UTF-8 BOM and leading blank lines (counting them), then check the content (``_check_content``)."""
        head = b""
        for data in decoded:
            head += data
            if len(head) >= len(UTF8_BOM):
                break
        if head.startswith(UTF8_BOM):
            head = head[len(UTF8_BOM) :]
        while not head.lstrip(_WHITESPACE):
            # All whitespace so far: only blank lines. Count them and keep just the unterminated remainder.
            self._first_number += head.count(b"\n")
            head = head[head.rfind(b"\n") + 1 :]
            data = next(decoded, b"")
            if not data:
                return iter(())  # nothing but whitespace (or an empty gzip): zero lines
            head += data
        self._check_content(head, raw_head)
        return chain((head,), decoded)

    def _check_content(self, head: bytes, raw_head: bytes) -> None:
        """NDJSON: the first non-blank byte is ``{``. ``head`` is the decoded start (BOM and blank lines skipped),
        ``raw_head`` the stored bytes; a subclass for another text format overrides only this."""
        first = head.lstrip(_WHITESPACE)[:1]
        if first != b"{":
            if self.encoding == "gzip":
                raise FileRejected(
                    UNSUPPORTED_CONTENT, f"gzip content is not NDJSON (first non-blank byte {first!r}, expected '{{')"
                )
            raise FileRejected(
                UNSUPPORTED_ENCODING,
                f"not gzip and not NDJSON text ({_describe(raw_head)}); expected gzip (1f 8b) or '{{'",
            )

    # -- decoders --------------------------------------------------------------------------------------------------

    def _plain(self, head: bytes) -> Iterator[bytes]:
        self.bytes_out += len(head)
        yield head
        while data := self._read(self._chunk_size):
            self.bytes_out += len(data)
            yield data

    def _truncate(self, why: str) -> None:
        self.truncated = True
        if self.error is None:
            self.error = why

    def _inflate(self, head: bytes) -> Iterator[bytes]:
        """Inflate every gzip member in turn; output is capped at ``chunk_size`` per step to bound memory."""
        out_max = self._chunk_size
        read_size = max(1, self._chunk_size // 4)
        d = zlib.decompressobj(wbits=31)
        self.members = 1
        buf = head
        while True:
            if not buf:
                buf = self._read(read_size)
                if not buf:
                    break
            saved = d.copy()  # cheap (~40 KB): lets us recover the output before a corrupt spot
            try:
                out = d.decompress(buf, out_max)
            except zlib.error as exc:
                yield from self._salvage(saved, buf)
                self._truncate(f"corrupt gzip data in member {self.members}: {exc}")
                return
            if out:
                self.bytes_out += len(out)
                yield out
            if not d.eof:
                buf = d.unconsumed_tail
                continue
            # End of a member: another one may follow (multi-member gzip), possibly after zero padding.
            buf = d.unused_data
            while not buf.lstrip(b"\x00"):
                buf = self._read(read_size)
                if not buf:
                    return  # clean end of the last member
            buf = buf.lstrip(b"\x00")
            d = zlib.decompressobj(wbits=31)
            self.members += 1
        # Input ended inside a member: drain what zlib still holds, then report the truncation.
        try:
            out = d.flush()
        except zlib.error as exc:  # pragma: no cover - flush of a consistent state does not fail in practice
            out = b""
            self._truncate(f"corrupt gzip data in member {self.members}: {exc}")
        if out:
            self.bytes_out += len(out)
            yield out
        if not d.eof:
            self._truncate(f"gzip stream ends inside member {self.members} (missing data or trailer)")

    def _salvage(self, d: zlib._Decompress, buf: bytes) -> Iterator[bytes]:
        """Re-feed ``buf`` in small steps from the last good state to keep the output that precedes the damage."""
        for i in range(0, len(buf), _SALVAGE_STEP):
            try:
                out = d.decompress(buf[i : i + _SALVAGE_STEP])
            except zlib.error:
                return
            if out:
                self.bytes_out += len(out)
                yield out
            if d.eof:
                return

    # -- splitting -------------------------------------------------------------------------------------------------

    def _line_chunks(self) -> Iterator[LineChunk]:
        cap = self._max_line_bytes
        number = self._first_number  # physical number of the next line to start
        tail: list[bytes] = []  # pieces of the current unterminated line (several only for a long line)
        tail_len = 0
        skipped = -1  # >= 0 while inside a line longer than the cap: its length so far (``head`` holds its start)
        head = b""
        for data in self._decoded:
            if skipped >= 0:  # skip the rest of an oversized line, up to its newline
                nl = data.find(b"\n")
                if nl < 0:
                    skipped += len(data)
                    continue
                yield self._oversized(number, head, skipped + nl)
                number += 1
                skipped, head = -1, b""
                data = data[nl + 1 :]
                if not data:
                    continue
            parts = data.split(b"\n")
            last = parts.pop()
            if not parts:  # no newline in this chunk: the line goes on
                if last:
                    tail.append(last)
                    tail_len += len(last)
                    if tail_len > cap:
                        head, skipped = _head(tail, self._head_bytes), tail_len
                        tail, tail_len = [], 0
                continue
            may_be_long = tail_len + len(data) > cap  # else no line in this chunk can pass the cap
            if tail:
                tail.append(parts[0])
                parts[0] = b"".join(tail)
                tail, tail_len = [], 0
            first = number
            number += len(parts)
            if may_be_long and max(map(len, parts)) > cap:
                yield from self._with_oversized(first, parts)  # rare: a line over the cap ends in this chunk
            else:
                if b"\r" in data or parts[0][-1:] == b"\r":
                    parts = [p[:-1] if p[-1:] == b"\r" else p for p in parts]
                if all(parts) and not any(map(bytes.isspace, parts)):
                    self.lines += len(parts)
                    yield LineChunk(first, parts)
                else:
                    yield from self._without_blanks(first, parts)
            if last:
                if len(last) > cap:
                    head, skipped = last[: self._head_bytes], len(last)
                else:
                    tail, tail_len = [last], len(last)
        if skipped >= 0:  # the file ends inside an oversized line
            yield self._oversized(number, head, skipped, partial=self.truncated)
        elif tail:
            line = b"".join(tail)
            if line[-1:] == b"\r":
                line = line[:-1]
            if line and not line.isspace():
                self.lines += 1
                yield LineChunk(number, [line], partial=self.truncated)

    def _without_blanks(self, first: int, parts: list[bytes]) -> Iterator[LineChunk]:
        """Rare slow path: blank lines are skipped but keep their numbers."""
        numbers = [first + i for i, p in enumerate(parts) if p and not p.isspace()]
        if numbers:
            self.lines += len(numbers)
            yield LineChunk(numbers[0], [parts[n - first] for n in numbers], numbers)

    def _with_oversized(self, first: int, parts: list[bytes]) -> Iterator[LineChunk]:
        """Complete lines of one chunk, some longer than the cap: each of those alone, as its head and length."""
        cap = self._max_line_bytes
        run: list[bytes] = []
        run_first = first
        for i, part in enumerate(parts):
            if len(part) > cap:
                if run:
                    yield from self._without_blanks(run_first, run)
                yield self._oversized(first + i, part[: self._head_bytes], len(part))
                run, run_first = [], first + i + 1
            else:
                run.append(part[:-1] if part[-1:] == b"\r" else part)
        if run:
            yield from self._without_blanks(run_first, run)

    def _oversized(self, number: int, head: bytes, size: int, partial: bool = False) -> LineChunk:
        self.lines += 1
        return LineChunk(number, [head], partial=partial, oversized_bytes=size)

    def _raw_lines(self) -> Iterator[RawLine]:
        for chunk in self.iter_chunks_of_lines():
            if chunk.oversized_bytes is not None:
                yield RawLine(chunk.first_number, chunk.lines[0], chunk.partial, chunk.oversized_bytes)
            elif chunk.partial:
                yield RawLine(chunk.first_number, chunk.lines[0], True)
            elif chunk.numbers is None:
                yield from map(RawLine, count(chunk.first_number), chunk.lines)
            else:
                yield from map(RawLine, chunk.numbers, chunk.lines)


class CsvLineReader(LineReader):
    """A :class:`LineReader` for CSV text: the same sniffing (gzip or plain, from the bytes), streaming and line
    numbers, but the content must look like text rather than start with ``{``: a known binary magic or a NUL byte in
    the first chunk rejects the file as ``unsupported_encoding``/``unsupported_content``."""

    def _check_content(self, head: bytes, raw_head: bytes) -> None:
        if b"\x00" in head or (
            self.encoding == "plain" and any(raw_head.startswith(magic) for magic, _ in _KNOWN_MAGIC)
        ):
            if self.encoding == "gzip":
                raise FileRejected(UNSUPPORTED_CONTENT, "gzip content is not CSV text (it holds NUL bytes)")
            raise FileRejected(UNSUPPORTED_ENCODING, f"not gzip and not CSV text ({_describe(raw_head)})")


def open_lines(stream: BinaryIO, chunk_size: int = 1 << 20, max_line_bytes: int = MAX_LINE_BYTES) -> LineReader:
    """Open a binary stream (e.g. ``blob.open("rb")``) as NDJSON lines.

    Raises :class:`FileRejected` right away if the first bytes are neither gzip nor NDJSON. ``chunk_size`` bounds
    both the reads and each decompressed chunk, ``max_line_bytes`` what one line may hold, hence memory.
    """
    return LineReader(stream, chunk_size, max_line_bytes)


# A format's ``reader`` (``shared.sources.format.Format.reader``) -> the class that checks and splits its files.
READERS: dict[str, type[LineReader]] = {"ndjson": LineReader, "csv": CsvLineReader}


def open_reader(
    reader: Reader, stream: BinaryIO, chunk_size: int = 1 << 20, max_line_bytes: int = MAX_LINE_BYTES
) -> LineReader:
    """``open_lines`` for a format's kind of text: NDJSON (first non-blank byte ``{``) or CSV (text, no NUL)."""
    return READERS[reader](stream, chunk_size, max_line_bytes)


def _head(pieces: list[bytes], size: int) -> bytes:
    """The first ``size`` bytes of a line held in pieces, without joining them all."""
    out = bytearray()
    for piece in pieces:
        out += piece[: size - len(out)]
        if len(out) >= size:
            break
    return bytes(out)

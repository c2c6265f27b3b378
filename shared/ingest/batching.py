"""Raw lines -> deterministic Pub/Sub batches (DESIGN.md "ingest_file", "Guarantees").

Why it looks like this:

* Reprocessing the same object generation must publish the *same* batches (at-least-once delivery, idempotent
  stages), so batches are cut greedily from the line sequence alone and ids are a hash of origin + index.
* Each batch keeps the physical line numbers it covers (``first_line``..``last_line`` plus the blank lines skipped
  inside), so the loader can name the exact line of every rejected record.
* The packing works on whole decompressed chunks: line lengths come from ``map(len, ...)`` and cut points from a
  prefix sum and ``bisect`` -- per-batch Python work instead of per-line work, to keep up with inflate.
* A line bigger than ``max_bytes`` is still published, alone and flagged ``oversized``, so the caller can reject it
  with a reason instead of dropping it; a line the decoder cut to its head (longer than its cap) too, with its full
  length in ``original_bytes``. A truncated file's broken last line is published marked ``partial_line``.
* The loader trusts none of these attributes: any publisher can set them. ``attribute_line_numbers`` checks that
  they describe exactly the payload's lines (``last - first + 1 - skipped == lines``) *before* building any list,
  and says ``None`` (number from 1) for anything malformed, inconsistent or huge; ``int_attribute`` reads one
  number or ``None``.
* CSV files (``format=csv``): the first line is the header row. :func:`split_csv_header` takes it off the line
  stream, and :func:`encode_batch` puts it in front of *every* batch's payload, so each message is a small CSV file
  the loader can read alone (no 1024-byte attribute limit on the header). ``first_line``/``last_line`` still number
  the data lines with their real line numbers in the file; the header is not a data line and is not counted.
"""

from __future__ import annotations

import hashlib
import re
from bisect import bisect_right
from dataclasses import dataclass, field
from itertools import accumulate, chain
from typing import TYPE_CHECKING

from shared.ingest.decode import MAX_LINE_BYTES, CsvLineReader, LineChunk, LineReader, RawLine

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping
    from typing import BinaryIO

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_LINES",
    "Batch",
    "CsvLineReader",
    "attribute_line_numbers",
    "batch_attributes",
    "batch_chunks",
    "batch_id",
    "batch_lines",
    "encode_batch",
    "int_attribute",
    "open_csv_lines",
    "split_csv_header",
]

# ~700-byte Segment lines -> ~700 KB messages: far below Pub/Sub's 10 MB message cap and small enough for one
# BigQuery insertAll request (10 MB) after mapping.
DEFAULT_MAX_LINES = 1000
DEFAULT_MAX_BYTES = 1_000_000
# Blank-line ranges listed in one batch's ``skipped_lines`` attribute; more start a new batch, which keeps the
# attribute far below Pub/Sub's 1024-byte value limit.
MAX_SKIPPED_RANGES = 32

_plus1 = (1).__add__


@dataclass(slots=True)
class Batch:
    """Consecutive non-blank lines of one object; ``payload_bytes == len(encode_batch(batch))``."""

    index: int
    first_line: int
    last_line: int
    lines: list[bytes]
    payload_bytes: int
    oversized: bool = False  # a single line larger than max_bytes: reject it (it is alone in this batch)
    original_bytes: int | None = None  # oversized by the decoder's cap: ``lines[0]`` is its head, this its length
    partial_line: int | None = None  # number of the truncated last line of a broken file, if in this batch
    skipped: list[tuple[int, int]] = field(default_factory=list)  # blank line ranges inside first..last

    @property
    def line_count(self) -> int:
        return len(self.lines)

    def line_numbers(self) -> list[int]:
        """Physical line number of each entry of ``lines``."""
        return _numbers(self.first_line, self.last_line, self.skipped)


def _numbers(first: int, last: int, skipped: Iterable[tuple[int, int]]) -> list[int]:
    out: list[int] = []
    start = first
    for lo, hi in skipped:
        out.extend(range(start, lo))
        start = hi + 1
    out.extend(range(start, last + 1))
    return out


class _Open:
    """The batch being filled."""

    __slots__ = ("first", "last", "lines", "nbytes", "skipped")

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.first = 0
        self.last = 0
        self.nbytes = 0
        self.skipped: list[tuple[int, int]] = []


def _segments(chunks: Iterable[LineChunk]) -> Iterator[tuple[int, list[bytes], bool, int | None]]:
    """Runs of consecutive line numbers: (first number, lines, last line is partial, oversized_bytes of a one-line
    run the decoder cut to its head)."""
    for c in chunks:
        nums = c.numbers
        if nums is None:
            yield c.first_number, c.lines, c.partial, c.oversized_bytes
            continue
        start = 0
        for i in range(1, len(nums)):
            if nums[i] != nums[i - 1] + 1:
                yield nums[start], c.lines[start:i], False, None
                start = i
        if start < len(nums):
            yield nums[start], c.lines[start:], c.partial, None


def batch_chunks(chunks: Iterable[LineChunk], max_lines: int, max_bytes: int) -> Iterator[Batch]:
    """Greedy batches over line chunks: each holds at most ``max_lines`` lines and ``max_bytes`` payload bytes."""
    if max_lines < 1 or max_bytes < 1:
        raise ValueError("max_lines and max_bytes must be positive")
    index = 0
    cur = _Open()
    partial_number = -1

    def close(b: _Open) -> Batch:
        nonlocal index
        batch = Batch(
            index=index,
            first_line=b.first,
            last_line=b.last,
            lines=b.lines,
            payload_bytes=b.nbytes,
            partial_line=partial_number if b.first <= partial_number <= b.last else None,
            skipped=b.skipped,
        )
        index += 1
        return batch

    for seg_first, seg_lines, seg_partial, seg_cut in _segments(chunks):
        n = len(seg_lines)
        if seg_partial:
            partial_number = seg_first + n - 1
        if seg_cut is not None:  # the decoder kept only this line's head: alone, flagged, with its real length
            if cur.lines:
                yield close(cur)
                cur = _Open()
            cur.lines, cur.first, cur.last, cur.nbytes = seg_lines[:1], seg_first, seg_first, len(seg_lines[0])
            batch = close(cur)
            batch.oversized, batch.original_bytes = True, seg_cut
            yield batch
            cur = _Open()
            continue
        # t[j] = bytes of seg_lines[:j] with one separator each, so lines a..b-1 cost t[b] - t[a] (- 1 if first)
        t = list(accumulate(map(_plus1, map(len, seg_lines)), initial=0))
        a = 0
        while a < n:
            num_a = seg_first + a
            if cur.lines:
                gap = num_a != cur.last + 1
                if gap and len(cur.skipped) >= MAX_SKIPPED_RANGES:
                    yield close(cur)
                    cur = _Open()
                    continue
                hi = min(n, a + max_lines - len(cur.lines))
                b = bisect_right(t, t[a] + max_bytes - cur.nbytes, a, hi + 1) - 1
                if b == a:  # the next line does not fit: this batch is full
                    yield close(cur)
                    cur = _Open()
                    continue
                if gap:
                    cur.skipped.append((cur.last + 1, num_a - 1))
                cur.lines += seg_lines[a:b]
                cur.nbytes += t[b] - t[a]
            else:
                hi = min(n, a + max_lines)
                b = bisect_right(t, t[a] + max_bytes + 1, a, hi + 1) - 1
                if b == a:  # one line above max_bytes: publish it alone, flagged
                    cur.lines, cur.first, cur.last, cur.nbytes = [seg_lines[a]], num_a, num_a, t[a + 1] - t[a] - 1
                    batch = close(cur)
                    batch.oversized = True
                    yield batch
                    cur = _Open()
                    a += 1
                    continue
                cur.lines = seg_lines[a:b]
                cur.first = num_a
                cur.nbytes = t[b] - t[a] - 1
            cur.last = seg_first + b - 1
            a = b
            if a < n or len(cur.lines) >= max_lines:  # stopped by a bound: full
                yield close(cur)
                cur = _Open()
    if cur.lines:
        yield close(cur)


def _chunks_from_lines(lines: Iterable[RawLine], size: int = 4096) -> Iterator[LineChunk]:
    data: list[bytes] = []
    nums: list[int] = []
    for line in lines:
        if line.partial or line.oversized_bytes is not None:
            if data:
                yield LineChunk(nums[0], data, nums)
                data, nums = [], []
            yield LineChunk(line.number, [line.data], partial=line.partial, oversized_bytes=line.oversized_bytes)
            continue
        data.append(line.data)
        nums.append(line.number)
        if len(data) >= size:
            yield LineChunk(nums[0], data, nums)
            data, nums = [], []
    if data:
        yield LineChunk(nums[0], data, nums)


def batch_lines(
    lines: Iterable[RawLine] | LineReader,
    max_lines: int = DEFAULT_MAX_LINES,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Iterator[Batch]:
    """Cut lines into batches; a :class:`LineReader` is consumed through its chunk fast path."""
    if isinstance(lines, LineReader):
        return batch_chunks(lines.iter_chunks_of_lines(), max_lines, max_bytes)
    return batch_chunks(_chunks_from_lines(lines), max_lines, max_bytes)


def batch_id(origin: str, index: int) -> str:
    """Deterministic id of batch ``index`` of ``origin`` (``gs://bucket/object#generation``): 32 hex chars."""
    return hashlib.sha256(f"{origin}\n{index}".encode()).hexdigest()[:32]


def encode_batch(batch: Batch, header: bytes | None = None) -> bytes:
    """The Pub/Sub payload: the raw lines joined by ``\\n`` (NDJSON, no trailing newline); a CSV file's ``header``
    row comes first."""
    if header is not None:
        return b"\n".join([header, *batch.lines])
    return b"\n".join(batch.lines)


# -- csv ------------------------------------------------------------------------------------------------------------


def open_csv_lines(stream: BinaryIO, chunk_size: int = 1 << 20, max_line_bytes: int = MAX_LINE_BYTES) -> CsvLineReader:
    """Like :func:`shared.ingest.decode.open_lines`, for a CSV file (header row first, then one record a line)."""
    return CsvLineReader(stream, chunk_size, max_line_bytes)


def split_csv_header(chunks: Iterable[LineChunk]) -> tuple[RawLine | None, Iterator[LineChunk]]:
    """The first non-blank line (a CSV file's header row) and the chunks of every line after it.

    ``None`` for a file without lines. The header is ``partial`` if the file ends (truncated) inside it.
    """
    it = iter(chunks)
    for chunk in it:
        if not chunk.lines:
            continue
        header = RawLine(
            chunk.number_at(0), chunk.lines[0], chunk.partial and len(chunk.lines) == 1, chunk.oversized_bytes
        )
        rest = chunk.lines[1:]
        if not rest:
            return header, it
        numbers = chunk.numbers[1:] if chunk.numbers is not None else None
        first = numbers[0] if numbers is not None else chunk.first_number + 1
        return header, chain((LineChunk(first, rest, numbers, chunk.partial),), it)
    return None, iter(())


def _ranges(skipped: Iterable[tuple[int, int]]) -> str:
    return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in skipped)


def batch_attributes(batch: Batch, *, tenant: str, origin: str, fmt: str = "segment") -> dict[str, str]:
    """Pub/Sub attributes of a batch; the loader needs them to name lines and to reject partial/oversized ones."""
    attrs = {
        "tenant": tenant,
        "format": fmt,
        "origin": origin,
        "batch_index": str(batch.index),
        "batch_id": batch_id(origin, batch.index),
        "first_line": str(batch.first_line),
        "last_line": str(batch.last_line),
        "line_count": str(len(batch.lines)),
    }
    if batch.skipped:
        attrs["skipped_lines"] = _ranges(batch.skipped)
    if batch.partial_line is not None:
        attrs["partial_line"] = str(batch.partial_line)
    if batch.oversized:
        attrs["oversized"] = "true"
    if batch.original_bytes is not None:
        attrs["original_bytes"] = str(batch.original_bytes)
    return attrs


_NUMBER_ATTRIBUTE = re.compile(r"[0-9]{1,15}")  # a line number or a size: far beyond any real file, never huge


def int_attribute(value: str | None) -> int | None:
    """A non-negative integer attribute as sent by any publisher, or ``None`` if absent or malformed (``x``, ``1e9``,
    ``-3``, a thousand digits): the caller falls back to what it can tell from the payload."""
    if value is None or not _NUMBER_ATTRIBUTE.fullmatch(value):
        return None
    return int(value)


def attribute_line_numbers(attrs: Mapping[str, str], count: int) -> list[int] | None:
    """Line number of each of the ``count`` payload lines, from :func:`batch_attributes` output (for the loader's
    rejections); ``None`` if the attributes are absent, malformed or do not describe exactly ``count`` lines.

    The range is checked before any list is built, so ``first_line=1, last_line=1000000000`` costs nothing."""
    first, last = int_attribute(attrs.get("first_line")), int_attribute(attrs.get("last_line"))
    if first is None or last is None or not 1 <= first <= last:
        return None
    declared = attrs.get("line_count")
    if declared is not None and int_attribute(declared) != count:
        return None
    skipped: list[tuple[int, int]] = []
    blank = 0
    previous = first  # each range lies strictly inside first..last, after the previous one
    for part in filter(None, attrs.get("skipped_lines", "").split(",")):
        lo_text, _, hi_text = part.partition("-")
        lo, hi = int_attribute(lo_text), int_attribute(hi_text or lo_text)
        if lo is None or hi is None or not previous < lo <= hi < last:
            return None
        skipped.append((lo, hi))
        blank += hi - lo + 1
        previous = hi + 1
    if last - first + 1 - blank != count:
        return None
    return _numbers(first, last, skipped)

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
* :func:`batch_message` makes a batch the typed raw-events message (``shared.raw_events``: the wire format and what
  the loader trusts of it, which is nothing it cannot check).
* A format with a header row (CSV; ``shared.sources.csv_export`` states the rule): :func:`split_header_row` takes it
  off the line stream, and every batch's message carries it in front of its lines, so each message is a small file
  the loader can read alone (no 1024-byte attribute limit on the header).
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from dataclasses import dataclass, field
from itertools import accumulate, chain
from typing import TYPE_CHECKING

from shared.ingest.decode import LineChunk, LineReader, RawLine
from shared.raw_events import LineSpan, RawEventsMessage

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_LINES",
    "Batch",
    "batch_chunks",
    "batch_id",
    "batch_lines",
    "batch_message",
    "split_header_row",
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
    """Consecutive non-blank lines of one object; ``payload_bytes`` is the bytes of its lines joined by newlines."""

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

    @property
    def span(self) -> LineSpan:
        """The physical line numbers of ``lines``."""
        return LineSpan(self.first_line, self.last_line, tuple(self.skipped))

    def line_numbers(self) -> list[int]:
        """Physical line number of each entry of ``lines``."""
        return self.span.numbers()


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


# -- header rows ----------------------------------------------------------------------------------------------------


def split_header_row(chunks: Iterable[LineChunk]) -> tuple[RawLine | None, Iterator[LineChunk]]:
    """The first non-blank line (the header row of a format that has one, CSV) and the chunks of every line after it.

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


def batch_message(
    batch: Batch,
    *,
    tenant: str,
    origin: str,
    fmt: str = "segment",
    header: bytes | None = None,
    source_id: str | None = None,
) -> RawEventsMessage:
    """The raw-events message of a batch: its lines (after a CSV file's ``header`` row), where they are in the file,
    and whether one is partial or oversized, so the loader can name and reject them."""
    return RawEventsMessage(
        payload=b"\n".join(batch.lines),
        format=fmt,
        header=header,
        origin=origin,
        tenant=tenant,
        span=batch.span,
        partial_line=batch.partial_line,
        oversized=batch.oversized,
        original_bytes=batch.original_bytes,
        batch_index=batch.index,
        batch_id=batch_id(origin, batch.index),
        source_id=source_id,
    )

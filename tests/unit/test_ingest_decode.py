"""shared.ingest.decode: sniffing, streaming inflate, line splitting, truncation, bounded memory."""

from __future__ import annotations

import gzip
import io
import json
import random
import tracemalloc
import zlib
from typing import TYPE_CHECKING

import pytest

from shared.errors import PermanentError
from shared.ingest.decode import (
    MAX_LINE_BYTES,
    OVERSIZED_HEAD_BYTES,
    FileRejected,
    LineReader,
    RawLine,
    open_lines,
)

if TYPE_CHECKING:
    from collections.abc import Iterator


def segment_line(i: int, rng: random.Random | None = None) -> bytes:
    rng = rng or random.Random(i)
    msg = {
        "type": rng.choice(["track", "identify", "page"]),
        "messageId": f"msg-{i}",
        "userId": f"user-{rng.randrange(10_000)}",
        "event": "Order Completed",
        "timestamp": "2024-05-01T12:00:00.123Z",
        "properties": {"total": rng.random() * 100, "note": "line\u2028sep\u2029para\u0085nel"},
        "context": {
            "ip": "10.0.0.1",
            "timezone": "Europe/Paris",
            "userAgent": "Mozilla/5.0 " + "x" * rng.randrange(50),
        },
    }
    return json.dumps(msg, ensure_ascii=False).encode()


def ndjson(n: int, start: int = 0) -> list[bytes]:
    return [segment_line(i) for i in range(start, start + n)]


def read_all(data: bytes, chunk_size: int = 1 << 20) -> tuple[LineReader, list[RawLine]]:
    reader = open_lines(io.BytesIO(data), chunk_size=chunk_size)
    return reader, list(reader)


class TrickleStream(io.RawIOBase):
    """A stream that returns at most ``step`` bytes per read, like a network socket."""

    def __init__(self, data: bytes, step: int) -> None:
        self._buf = io.BytesIO(data)
        self._step = step

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._buf.read(self._step if size < 0 else min(size, self._step))


class GeneratedStream(io.RawIOBase):
    """A file-like object backed by a generator of byte pieces: nothing is materialised up front."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces = pieces
        self._buf = b""

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while len(self._buf) < size:
            piece = next(self._pieces, None)
            if piece is None:
                break
            self._buf += piece
        out, self._buf = self._buf[:size], self._buf[size:]
        return out


# -- sniffing ----------------------------------------------------------------------------------------------------


def test_plain_ndjson_is_read_as_plain() -> None:
    # GIVEN plain NDJSON (e.g. a .gz served through decompressive transcoding)
    lines = ndjson(5)
    # WHEN it is read
    reader, got = read_all(b"\n".join(lines) + b"\n")
    # THEN every line comes back, numbered from 1, and the reader says "plain"
    assert [r.data for r in got] == lines
    assert [r.number for r in got] == [1, 2, 3, 4, 5]
    assert reader.encoding == "plain" and not reader.truncated and reader.lines == 5 and reader.members == 0


def test_gzip_is_sniffed_from_bytes_not_name() -> None:
    # GIVEN a gzip member (no name at all is involved)
    lines = ndjson(50)
    # WHEN it is read
    reader, got = read_all(gzip.compress(b"\n".join(lines) + b"\n"))
    # THEN it is inflated
    assert [r.data for r in got] == lines
    assert reader.encoding == "gzip" and reader.members == 1 and not reader.truncated


def test_zero_bytes_is_empty_not_an_error() -> None:
    # GIVEN a zero-byte object WHEN read THEN zero lines, encoding "empty"
    reader, got = read_all(b"")
    assert got == [] and reader.encoding == "empty" and reader.lines == 0 and not reader.truncated


def test_empty_gzip_is_zero_lines() -> None:
    # GIVEN a gzip of nothing WHEN read THEN zero lines, no error
    reader, got = read_all(gzip.compress(b""))
    assert got == [] and reader.encoding == "gzip" and reader.members == 1 and not reader.truncated


def test_whitespace_only_content_is_zero_lines() -> None:
    # GIVEN a gzip holding only blank lines WHEN read THEN zero lines, nothing rejected
    reader, got = read_all(gzip.compress(b"\n \r\n\t\n"))
    assert got == [] and not reader.truncated


@pytest.mark.parametrize(
    ("data", "hint"),
    [
        (b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + b"\x00" * 40, "zip"),  # Amplitude's .json.gz that is a zip
        (bytes(range(256)), "first bytes"),
        (b"hello world\n", "first bytes"),
        (b'["a", "b"]\n', "first bytes"),
        (b"\x1f", "first bytes"),  # one byte: not even a gzip magic
    ],
)
def test_non_ndjson_is_rejected_as_permanent(data: bytes, hint: str) -> None:
    # GIVEN bytes that are neither gzip nor NDJSON
    # WHEN the stream is opened
    with pytest.raises(FileRejected) as info:
        open_lines(io.BytesIO(data))
    # THEN it is a permanent error with a machine-readable reason (recorded, then acked)
    assert isinstance(info.value, PermanentError)
    assert info.value.reason == "unsupported_encoding"
    assert hint in info.value.message


def test_gzip_of_non_ndjson_is_rejected() -> None:
    # GIVEN a gzip whose content is CSV
    # WHEN opened THEN rejected with its own reason
    with pytest.raises(FileRejected) as info:
        open_lines(io.BytesIO(gzip.compress(b"a,b,c\n1,2,3\n")))
    assert info.value.reason == "unsupported_content"


# -- splitting ---------------------------------------------------------------------------------------------------


def test_splits_on_newline_only_keeping_unicode_separators_inside_strings() -> None:
    # GIVEN JSON strings holding raw U+2028, U+2029, U+0085 (str.splitlines would break these lines)
    lines = [json.dumps({"s": f"a\u2028b\u2029c\u0085d{i}"}, ensure_ascii=False).encode() for i in range(3)]
    # WHEN read
    _, got = read_all(gzip.compress(b"\n".join(lines)))
    # THEN each line is intact and still valid JSON
    assert [r.data for r in got] == lines
    assert all(json.loads(r.data)["s"].startswith("a\u2028b") for r in got)


def test_crlf_strips_one_carriage_return_and_blank_lines_keep_numbers() -> None:
    # GIVEN CRLF endings, blank and whitespace-only lines, and a line ending in two CRs
    data = b'{"a":1}\r\n\r\n   \n{"b":2}\r\r\n\n\t\r\n{"c":3}'
    # WHEN read
    reader, got = read_all(data)
    # THEN blank lines are skipped but counted, one trailing CR is stripped, an unterminated last line is kept
    assert got == [
        RawLine(1, b'{"a":1}'),
        RawLine(4, b'{"b":2}\r'),
        RawLine(7, b'{"c":3}'),
    ]
    assert reader.lines == 3


def test_bom_is_skipped_and_leading_blank_lines_are_counted() -> None:
    # GIVEN a UTF-8 BOM then blank lines then records, plain and gzipped
    data = b"\xef\xbb\xbf\n\n" + b'{"a":1}\n{"b":2}\n'
    for payload in (data, gzip.compress(data)):
        # WHEN read
        _, got = read_all(payload)
        # THEN the BOM is gone and numbers still count the blank lines
        assert got == [RawLine(3, b'{"a":1}'), RawLine(4, b'{"b":2}')]


def test_bom_directly_before_record() -> None:
    # GIVEN a BOM glued to the first record WHEN read THEN the record is clean
    _, got = read_all(b'\xef\xbb\xbf{"a":1}\n')
    assert got == [RawLine(1, b'{"a":1}')]


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, 64, 1000, 1 << 20])
def test_results_do_not_depend_on_chunk_size(chunk_size: int) -> None:
    # GIVEN a multi-member gzip with CRLF and blank lines spread across chunk boundaries
    rng = random.Random(7)
    text = b"".join(segment_line(i) + rng.choice([b"\n", b"\r\n", b"\n\n", b"\r\n \n"]) for i in range(300))
    data = gzip.compress(text[:10_000]) + gzip.compress(text[10_000:])
    expected = list(open_lines(io.BytesIO(data), chunk_size=1 << 20))
    # WHEN read with a tiny or huge chunk size
    reader, got = read_all(data, chunk_size=chunk_size)
    # THEN the lines and their numbers are identical
    assert got == expected
    assert len(got) == 300 and reader.members == 2


def test_short_reads_are_handled() -> None:
    # GIVEN a stream that returns one byte per read (slow socket)
    lines = ndjson(20)
    data = gzip.compress(b"\n".join(lines))
    # WHEN read THEN nothing is lost
    got = list(open_lines(TrickleStream(data, 1), chunk_size=4096))  # type: ignore[arg-type]
    assert [r.data for r in got] == lines


def test_fast_path_chunks_match_line_iteration() -> None:
    # GIVEN a file with blank lines
    data = gzip.compress(b'{"a":1}\n\n{"b":2}\n{"c":3}\n \n{"d":4}\n')
    # WHEN read through the chunk fast path
    chunks = list(open_lines(io.BytesIO(data), chunk_size=8).iter_chunks_of_lines())
    flat = [(c.number_at(i), line) for c in chunks for i, line in enumerate(c.lines)]
    # THEN numbers and lines are the same as per-line iteration
    assert flat == [(r.number, r.data) for r in open_lines(io.BytesIO(data))]


def test_counters_after_exhaustion() -> None:
    # GIVEN a 2-member gzip
    a, b = b'{"a":1}\n', b'{"b":2}\n\n'
    data = gzip.compress(a) + gzip.compress(b)
    # WHEN fully read
    reader, got = read_all(data)
    # THEN the counters describe it
    assert (reader.bytes_in, reader.bytes_out, reader.lines, reader.members) == (len(data), len(a + b), 2, 2)
    assert [r.number for r in got] == [1, 2]


# -- multi-member and truncation -----------------------------------------------------------------------------------


def test_multi_member_gzip_reads_every_member() -> None:
    # GIVEN 5 gzip members concatenated (appended exports), one of them empty
    parts = [ndjson(10, start=10 * k) for k in range(4)]
    data = b"".join(gzip.compress(b"\n".join(p) + b"\n") for p in parts[:2])
    data += gzip.compress(b"") + b"".join(gzip.compress(b"\n".join(p) + b"\n") for p in parts[2:])
    # WHEN read
    reader, got = read_all(data)
    # THEN all 40 lines come back in order, numbered across members
    assert [r.data for r in got] == [line for p in parts for line in p]
    assert [r.number for r in got] == list(range(1, 41))
    assert reader.members == 5 and not reader.truncated


def test_zero_padding_after_last_member_is_ignored() -> None:
    # GIVEN a gzip followed by zero padding (as gzip(1) tolerates)
    data = gzip.compress(b'{"a":1}\n') + b"\x00" * 100
    # WHEN read THEN one line and no truncation
    reader, got = read_all(data)
    assert [r.data for r in got] == [b'{"a":1}'] and not reader.truncated and reader.members == 1


def test_trailing_garbage_after_member_marks_truncated() -> None:
    # GIVEN a complete member followed by garbage
    reader, got = read_all(gzip.compress(b'{"a":1}\n') + b"garbage!")
    # THEN the complete line is kept and the file is flagged
    assert [r.data for r in got] == [b'{"a":1}'] and reader.truncated and reader.error


def test_missing_trailer_marks_truncated_and_keeps_lines() -> None:
    # GIVEN a gzip whose 8-byte trailer (CRC + size) was cut off
    lines = ndjson(30)
    data = gzip.compress(b"\n".join(lines) + b"\n")[:-8]
    # WHEN read
    reader, got = read_all(data)
    # THEN every line is there (all were newline-terminated) and the file is flagged truncated
    assert [r.data for r in got] == lines and not any(r.partial for r in got)
    assert reader.truncated and "ends inside member 1" in (reader.error or "")


def test_truncation_at_every_cut_keeps_complete_lines_and_marks_partial() -> None:
    # GIVEN a 2-member gzip cut at many byte offsets
    lines = ndjson(200)
    text = b"\n".join(lines) + b"\n"
    data = gzip.compress(text[: len(text) // 2], compresslevel=9) + gzip.compress(text[len(text) // 2 :])
    for cut in range(3, len(data) - 1, 97):
        # WHEN the truncated object is read (no exception)
        reader, got = read_all(data[:cut], chunk_size=4096)
        # THEN complete lines are an exact prefix, only the last may be partial, and it is flagged
        complete = [r for r in got if not r.partial]
        assert [r.data for r in complete] == lines[: len(complete)]
        assert [r.number for r in complete] == list(range(1, len(complete) + 1))
        assert all(not r.partial for r in got[:-1])
        if got and got[-1].partial:
            assert lines[len(complete)].startswith(got[-1].data) and got[-1].number == len(complete) + 1
        assert reader.truncated, cut


def test_corrupt_deflate_mid_stream_keeps_lines_before_the_damage() -> None:
    # GIVEN a large member whose deflate data is overwritten in the middle
    lines = ndjson(3000)
    data = bytearray(gzip.compress(b"\n".join(lines) + b"\n", compresslevel=6))
    mid = len(data) // 2
    data[mid : mid + 64] = b"\xff" * 64
    # WHEN read (in chunks far bigger than the damaged spot)
    reader, got = read_all(bytes(data), chunk_size=1 << 20)
    # THEN no exception, the file is flagged, and the lines before the damage are intact
    assert reader.truncated and reader.error and "corrupt" in reader.error
    good = 0
    while good < len(got) and got[good].data == lines[good]:
        good += 1
    assert good > len(lines) // 3  # salvage recovered output up to the damaged spot, not just whole chunks


def test_partial_line_on_truncation_is_marked() -> None:
    # GIVEN a truncated gzip whose last line has no newline
    data = gzip.compress(b'{"a":1}\n{"b":2}\n{"c":3')[:-8]
    # WHEN read
    reader, got = read_all(data)
    # THEN the broken line is yielded, marked partial
    assert got == [RawLine(1, b'{"a":1}'), RawLine(2, b'{"b":2}'), RawLine(3, b'{"c":3', True)]
    assert reader.truncated and reader.lines == 3


# -- memory ------------------------------------------------------------------------------------------------------


def _block(size: int) -> bytes:
    rng = random.Random(1)
    out, total, i = [], 0, 0
    while total < size:
        line = segment_line(i, rng)
        out.append(line)
        total += len(line) + 1
        i += 1
    return b"\n".join(out) + b"\n"


def test_memory_stays_bounded_on_a_200mb_multi_member_file() -> None:
    # GIVEN ~200 MB uncompressed, streamed from a generator as 200 gzip members (never materialised)
    block = _block(1 << 20)
    member = gzip.compress(block, compresslevel=1)
    repeats = 200
    stream = GeneratedStream(member for _ in range(repeats))
    # WHEN every line is read
    tracemalloc.start()
    try:
        reader = open_lines(stream)  # type: ignore[arg-type]
        n = 0
        for chunk in reader.iter_chunks_of_lines():
            n += len(chunk.lines)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # THEN all lines were seen and the peak allocation is a few chunks, not the file
    assert reader.bytes_out == len(block) * repeats and n == block.count(b"\n") * repeats
    assert peak < 64 << 20, f"peak {peak / 2**20:.1f} MiB"


def test_memory_stays_bounded_on_a_highly_compressible_single_member() -> None:
    # GIVEN one member that inflates ~1000:1 (a 1 MiB read would become ~1 GB without an output cap)
    line = b'{"type":"track","event":"x","pad":"' + b" " * 900 + b'"}\n'
    comp = zlib.compressobj(1, zlib.DEFLATED, 31)

    def pieces() -> Iterator[bytes]:
        block = line * 1000
        for _ in range(200):  # ~190 MB uncompressed
            yield comp.compress(block)
        yield comp.flush()

    # WHEN read
    tracemalloc.start()
    try:
        reader = open_lines(GeneratedStream(pieces()))  # type: ignore[arg-type]
        n = sum(len(c.lines) for c in reader.iter_chunks_of_lines())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # THEN memory is bounded by the output cap
    assert n == 200_000 and not reader.truncated
    assert peak < 64 << 20, f"peak {peak / 2**20:.1f} MiB"


def test_a_line_under_the_cap_is_held_whole_even_above_a_pubsub_message() -> None:
    # GIVEN a 12 MB line between normal lines: over Pub/Sub's 10 MB message limit, under the decoder's cap (16 MiB).
    # The cap is above the message limit on purpose: every line a message could carry whole still comes back whole,
    # and the ingest's existing oversized path (publish its head, marked oversized) deals with it as before.
    assert MAX_LINE_BYTES > 10_000_000
    huge = b'{"big":"' + b"x" * 12_000_000 + b'"}'
    data = gzip.compress(b'{"a":1}\n' + huge + b'\n{"b":2}\n')
    # WHEN read in small chunks THEN it comes back whole, with the right number
    _, got = read_all(data, chunk_size=1 << 16)
    assert [(r.number, len(r.data), r.oversized_bytes) for r in got] == [(1, 7, None), (2, len(huge), None), (3, 7, None)]


@pytest.mark.parametrize("chunk_size", [7, 64, 1000, 1 << 16])
def test_a_line_over_the_cap_keeps_its_head_and_its_neighbours(chunk_size: int) -> None:
    # GIVEN (with a small cap) a line of 5,000 bytes, one of exactly the cap, and lines around them, CRLF included
    long_line = b'{"big":"' + b"y" * 4990 + b'"}'
    at_cap = b'{"c":"' + b"z" * 992 + b'"}'
    text = b'{"a":1}\n' + long_line + b'\r\n\n' + at_cap + b"\n" + long_line + b'\n{"b":2}\n' + long_line
    # WHEN read with max_line_bytes=1000
    reader = open_lines(io.BytesIO(gzip.compress(text)), chunk_size=chunk_size, max_line_bytes=1000)
    got = list(reader)
    # THEN each long line is its head (OVERSIZED_HEAD_BYTES at most, here the cap) with its full size, numbered;
    # the line of exactly the cap is whole; the neighbours are intact, whatever the chunk size
    assert [(r.number, r.data, r.partial, r.oversized_bytes) for r in got] == [
        (1, b'{"a":1}', False, None),
        (2, long_line[:1000], False, len(long_line) + 1),  # its \r counted
        (4, at_cap, False, None),
        (5, long_line[:1000], False, len(long_line)),
        (6, b'{"b":2}', False, None),
        (7, long_line[:1000], False, len(long_line)),  # the last line, without a newline
    ]
    assert reader.lines == 6 and not reader.truncated
    # AND the chunk fast path says the same
    chunks = list(open_lines(io.BytesIO(gzip.compress(text)), chunk_size=chunk_size, max_line_bytes=1000)
                  .iter_chunks_of_lines())
    flat = [(c.number_at(i), line, c.oversized_bytes) for c in chunks for i, line in enumerate(c.lines)]
    assert flat == [(r.number, r.data, r.oversized_bytes) for r in got]
    assert all(len(c.lines) == 1 for c in chunks if c.oversized_bytes is not None)


def test_a_truncated_file_ending_inside_an_oversized_line_marks_it_partial() -> None:
    data = gzip.compress(b'{"a":1}\n{"big":"' + b"x" * 50_000)[:-8]
    reader = open_lines(io.BytesIO(data), chunk_size=4096, max_line_bytes=10_000)
    got = list(reader)
    assert [(r.number, len(r.data), r.partial, r.oversized_bytes) for r in got] == [
        (1, 7, False, None),
        (2, OVERSIZED_HEAD_BYTES if OVERSIZED_HEAD_BYTES < 10_000 else 10_000, True, 50_008),
    ]
    assert reader.truncated


def _one_gigabyte_line_gzipped(megabytes: int) -> bytes:
    """One line of ``megabytes`` MiB of ``x`` between two small lines, as gzip members (~1 KB per MiB): 1 GB gzips
    to about 1 MB. Built from one repeated member, so the test does not spend its time compressing."""
    member = gzip.compress(b"x" * (1 << 20), compresslevel=9)
    return gzip.compress(b'{"before":1}\n{"big":"') + member * megabytes + gzip.compress(b'"}\n{"after":2}\n')


def test_a_1_gb_line_from_a_1_mb_gzip_is_read_with_bounded_memory() -> None:
    # GIVEN a 1 GB line (it gzips to about 1 MB) between two normal lines, and the default cap
    compressed = _one_gigabyte_line_gzipped(1024)
    assert len(compressed) < 2 << 20
    # WHEN every line is read, peak traced memory measured
    tracemalloc.start()
    try:
        reader = open_lines(io.BytesIO(compressed))
        got = [(c.number_at(0), len(c.lines[0]), c.oversized_bytes) for c in reader.iter_chunks_of_lines()]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # THEN the huge line is its head and its size, its neighbours are whole, and memory stayed near the cap (16 MiB),
    # not the line (1 GiB)
    assert got == [(1, 12, None), (2, OVERSIZED_HEAD_BYTES, (1 << 30) + 10), (3, 11, None)]
    assert reader.bytes_out == (1 << 30) + 10 + 12 + 11 + 3
    assert peak < MAX_LINE_BYTES + (16 << 20), f"peak {peak / 2**20:.1f} MiB"

"""shared.ingest.batching: bounds, determinism, line numbers, partial and oversized lines, and the raw-events message
of a batch (the wire format itself is tests/unit/test_raw_events.py's)."""

from __future__ import annotations

import gzip
import io
import json
import random

import pytest

from shared.ingest.batching import (
    MAX_SKIPPED_RANGES,
    Batch,
    batch_chunks,
    batch_id,
    batch_lines,
    batch_message,
    split_header_row,
)
from shared.ingest.decode import FileRejected, RawLine, open_lines, open_reader
from shared.raw_events import RawEventsMessage, attribute_line_numbers

ORIGIN = "gs://acme-raw/segment-logs/src1/1714521600000/part-0001.gz#1714560000123456"


def encoded(batch: Batch, tenant: str = "t", origin: str = ORIGIN) -> tuple[bytes, dict[str, str]]:
    """(data, attributes) ingest publishes for ``batch`` of a Segment file."""
    return batch_message(batch, tenant=tenant, origin=origin).encode()


def reference_batches(lines: list[RawLine], max_lines: int, max_bytes: int) -> list[tuple[int, int, list[bytes], bool]]:
    """Obvious per-line greedy packing (no skipped-range cap: tests keep gaps few)."""
    out: list[tuple[int, int, list[bytes], bool]] = []
    cur: list[RawLine] = []
    size = -1
    for line in lines:
        n = len(line.data)
        if n > max_bytes:
            if cur:
                out.append((cur[0].number, cur[-1].number, [r.data for r in cur], False))
                cur, size = [], -1
            out.append((line.number, line.number, [line.data], True))
            continue
        if cur and (len(cur) >= max_lines or size + 1 + n > max_bytes):
            out.append((cur[0].number, cur[-1].number, [r.data for r in cur], False))
            cur, size = [], -1
        cur.append(line)
        size += 1 + n
    if cur:
        out.append((cur[0].number, cur[-1].number, [r.data for r in cur], False))
    return out


def random_lines(n: int, seed: int, max_len: int = 300) -> list[RawLine]:
    rng = random.Random(seed)
    number, out = 0, []
    for _ in range(n):
        number += 1 if rng.random() > 0.05 else rng.randrange(2, 5)  # a few blank lines in between
        out.append(RawLine(number, b"{" + b"x" * rng.randrange(0, max_len) + b"}"))
    return out


def check_invariants(batches: list[Batch], lines: list[RawLine], max_lines: int, max_bytes: int) -> None:
    assert [b.index for b in batches] == list(range(len(batches)))
    assert [line for b in batches for line in b.lines] == [r.data for r in lines]
    assert [n for b in batches for n in b.line_numbers()] == [r.number for r in lines]
    for b in batches:
        assert b.payload_bytes == len(encoded(b)[0])
        assert len(b.lines) <= max_lines
        if b.oversized:
            assert len(b.lines) == 1 and b.payload_bytes > max_bytes
        else:
            assert b.payload_bytes <= max_bytes


@pytest.mark.parametrize(("max_lines", "max_bytes"), [(1, 10_000), (7, 10_000), (1000, 1500), (50, 302), (3, 120)])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_batches_respect_both_bounds_and_match_greedy_reference(seed: int, max_lines: int, max_bytes: int) -> None:
    # GIVEN random-length lines (some longer than max_bytes) with a few blank-line gaps
    lines = random_lines(2000, seed)
    # WHEN batched
    batches = list(batch_lines(lines, max_lines, max_bytes))
    # THEN no bound is exceeded, nothing is lost or reordered, and the cut points are the greedy ones
    check_invariants(batches, lines, max_lines, max_bytes)
    assert [(b.first_line, b.last_line, b.lines, b.oversized) for b in batches] == reference_batches(
        lines, max_lines, max_bytes
    )


@pytest.mark.parametrize(("max_lines", "max_bytes"), [(1, 10_000), (7, 10_000), (1000, 1500), (50, 302), (3, 120)])
@pytest.mark.parametrize("chunk_size", [300, 4096, 1 << 16])
def test_reader_fast_path_matches_greedy_reference(chunk_size: int, max_lines: int, max_bytes: int) -> None:
    # GIVEN a gzip of random-length lines (some above max_bytes), with stretches holding CRLF and blank lines
    rng = random.Random(max_lines * max_bytes + chunk_size)
    ends = [b"\n"] * 40 + [b"\r\n", b"\n\n"]
    text = b"".join(
        b"{" + b"x" * rng.randrange(0, 300) + b"}" + (rng.choice(ends) if i % 2000 > 1500 else b"\n")
        for i in range(6000)
    )
    data = gzip.compress(text)
    chunks = list(open_lines(io.BytesIO(data), chunk_size=chunk_size).iter_chunks_of_lines())
    assert any(c.numbers is None for c in chunks) and any(c.numbers is not None for c in chunks)  # both paths run
    lines = list(open_lines(io.BytesIO(data)))
    # WHEN batched straight from the reader (chunk fast path)
    batches = list(batch_lines(open_lines(io.BytesIO(data), chunk_size=chunk_size), max_lines, max_bytes))
    # THEN the result is the obvious greedy packing of the same lines
    check_invariants(batches, lines, max_lines, max_bytes)
    assert [(b.first_line, b.last_line, b.lines, b.oversized) for b in batches] == reference_batches(
        lines, max_lines, max_bytes
    )


def test_oversized_line_goes_alone_and_is_flagged() -> None:
    # GIVEN a line bigger than max_bytes between small ones
    lines = [RawLine(1, b"{1}"), RawLine(2, b"{" + b"x" * 500 + b"}"), RawLine(3, b"{3}")]
    # WHEN batched with max_bytes=100
    batches = list(batch_lines(lines, max_lines=10, max_bytes=100))
    # THEN it is alone in its batch, flagged, and so are its attributes
    assert [(b.lines, b.oversized) for b in batches] == [([b"{1}"], False), ([lines[1].data], True), ([b"{3}"], False)]
    assert encoded(batches[1])[1]["oversized"] == "true"
    assert "oversized" not in encoded(batches[0])[1]


def test_line_exactly_max_bytes_fits() -> None:
    # GIVEN lines of exactly max_bytes WHEN batched THEN each fits alone and none is oversized
    lines = [RawLine(i, b"{" + b"x" * 98 + b"}") for i in (1, 2)]
    batches = list(batch_lines(lines, max_lines=10, max_bytes=100))
    assert [(len(b.lines), b.oversized) for b in batches] == [(1, False), (1, False)]


@pytest.mark.parametrize("chunk_size", [16, 1000, 1 << 20])
def test_batches_are_deterministic_and_independent_of_read_chunks(chunk_size: int) -> None:
    # GIVEN the same object generation processed twice, with different read chunk sizes
    text = b"".join(json.dumps({"i": i, "pad": "y" * (i % 97)}).encode() + b"\n" for i in range(3000))
    data = gzip.compress(text)
    base = [
        encoded(b)
        for b in batch_lines(open_lines(io.BytesIO(data)), max_lines=100, max_bytes=5000)
    ]
    # WHEN batched again
    again = [
        encoded(b)
        for b in batch_lines(open_lines(io.BytesIO(data), chunk_size=chunk_size), max_lines=100, max_bytes=5000)
    ]
    # THEN payloads and attributes (batch ids included) are identical
    assert again == base
    assert len({a["batch_id"] for _, a in base}) == len(base)


def test_reader_fast_path_equals_rawline_path() -> None:
    # GIVEN a file with CRLF and blank lines
    text = b"".join(b'{"i":%d}' % i + (b"\r\n\n" if i % 13 == 0 else b"\n") for i in range(5000))
    data = gzip.compress(text)
    # WHEN batched from the reader (chunk fast path) and from a plain RawLine iterable
    fast = list(batch_lines(open_lines(io.BytesIO(data), chunk_size=4096), 300, 4000))
    slow = list(batch_lines(list(open_lines(io.BytesIO(data))), 300, 4000))
    # THEN the batches are the same
    assert fast == slow


def test_blank_lines_are_reported_so_the_loader_can_number_lines() -> None:
    # GIVEN blank lines inside what becomes one batch
    data = b'{"a":1}\n\n\n{"b":2}\n \n{"c":3}\n'
    # WHEN batched
    [batch] = batch_lines(open_lines(io.BytesIO(data)), 100, 10_000)
    _, attrs = encoded(batch, tenant="acme")
    # THEN the attributes list the skipped ranges and give back each line's physical number
    assert (attrs["first_line"], attrs["last_line"], attrs["line_count"]) == ("1", "6", "3")
    assert attrs["skipped_lines"] == "2-3,5"
    assert attribute_line_numbers(attrs, 3) == [1, 4, 6] == batch.line_numbers()


def test_a_line_the_decoder_cut_goes_alone_flagged_with_its_real_size() -> None:
    # GIVEN a file with a line over the decoder's cap (small here) between normal lines
    text = b'{"a":1}\n{"b":2}\n{"big":"' + b"x" * 5000 + b'"}\n{"c":3}\n'
    reader = open_lines(io.BytesIO(gzip.compress(text)), chunk_size=256, max_line_bytes=1000)
    # WHEN batched with room for all of it
    batches = list(batch_lines(reader, max_lines=100, max_bytes=1 << 20))
    # THEN the cut line is alone in its batch, flagged oversized, its head only, its size in original_bytes
    assert [(b.first_line, b.last_line, b.oversized, b.original_bytes) for b in batches] == [
        (1, 2, False, None), (3, 3, True, 5010), (4, 4, False, None)
    ]
    data, attrs = encoded(batches[1])
    assert (attrs["oversized"], attrs["original_bytes"], attrs["line_count"]) == ("true", "5010", "1")
    assert len(data) == 1000
    # AND the RawLine path batches it the same way
    again = list(batch_lines(list(open_lines(io.BytesIO(gzip.compress(text)), max_line_bytes=1000)), 100, 1 << 20))
    assert again == batches


def test_many_gaps_split_the_batch_to_keep_attributes_small() -> None:
    # GIVEN every other line blank
    data = b"".join(b'{"i":%d}\n\n' % i for i in range(500))
    # WHEN batched with generous bounds
    batches = list(batch_lines(open_lines(io.BytesIO(data), chunk_size=64), 1000, 1 << 20))
    # THEN each batch lists at most MAX_SKIPPED_RANGES gaps and the attribute stays far below 1024 bytes
    assert all(len(b.skipped) <= MAX_SKIPPED_RANGES for b in batches)
    assert all(len(encoded(b, origin="o")[1].get("skipped_lines", "")) < 1024 for b in batches)
    assert [n for b in batches for n in b.line_numbers()] == list(range(1, 1000, 2))


def test_partial_line_of_truncated_file_is_published_and_marked() -> None:
    # GIVEN a truncated gzip whose last line is broken
    data = gzip.compress(b'{"a":1}\n{"b":2}\n{"c":3')[:-8]
    reader = open_lines(io.BytesIO(data))
    # WHEN batched
    batches = list(batch_lines(reader, 2, 1000))
    # THEN the broken line is published, and only its batch names it
    assert reader.truncated
    assert [b.lines for b in batches] == [[b'{"a":1}', b'{"b":2}'], [b'{"c":3']]
    attrs = [encoded(b)[1] for b in batches]
    assert "partial_line" not in attrs[0] and attrs[1]["partial_line"] == "3"


def test_attributes_have_every_key_as_strings() -> None:
    # GIVEN a batch WHEN its attributes are built THEN all documented keys are present, all strings
    [batch] = batch_lines([RawLine(1, b'{"a":1}'), RawLine(2, b'{"b":2}')], 10, 100)
    data, attrs = batch_message(batch, tenant="acme", origin=ORIGIN, fmt="segment", source_id="src1").encode()
    assert attrs == {
        "tenant": "acme",
        "format": "segment",
        "origin": ORIGIN,
        "batch_index": "0",
        "batch_id": batch_id(ORIGIN, 0),
        "first_line": "1",
        "last_line": "2",
        "line_count": "2",
        "source_id": "src1",
    }
    assert data == b'{"a":1}\n{"b":2}'
    # AND the loader reads the same message back
    assert RawEventsMessage.decode(data, attrs) == batch_message(
        batch, tenant="acme", origin=ORIGIN, fmt="segment", source_id="src1"
    )


def test_batch_id_is_stable_hex_and_distinct() -> None:
    # GIVEN origins and indexes WHEN ids are computed THEN they are 32 hex chars, stable, and differ per input
    a = batch_id(ORIGIN, 0)
    assert a == batch_id(ORIGIN, 0) and len(a) == 32 and int(a, 16) >= 0
    assert len({a, batch_id(ORIGIN, 1), batch_id(ORIGIN + "0", 0), batch_id(ORIGIN.replace("#", "#9"), 0)}) == 4


def test_no_lines_no_batches_and_bounds_are_validated() -> None:
    # GIVEN nothing WHEN batched THEN no batch; bad bounds are a programming error
    assert list(batch_lines([], 10, 10)) == []
    with pytest.raises(ValueError):
        list(batch_lines([RawLine(1, b"{}")], 0, 10))


# -- csv ------------------------------------------------------------------------------------------------------------
CSV_HEADER = b"contact_id,event_name,timestamp"
CSV_ROWS = [b"u%d,Viewed,2024-05-14T09:21:03Z" % i for i in range(7)]


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("chunk_size", [7, 64, 1 << 20])
def test_csv_header_goes_in_front_of_every_batch_and_lines_keep_their_numbers(compress: bool, chunk_size: int) -> None:
    # GIVEN a CSV file (BOM, CRLF, a blank line before the header and one among the rows), plain or gzipped
    text = b"\xef\xbb\xbf\r\n" + CSV_HEADER + b"\r\n" + b"\r\n".join(CSV_ROWS[:3]) + b"\r\n\r\n"
    text += b"\r\n".join(CSV_ROWS[3:]) + b"\r\n"
    reader = open_reader("csv", io.BytesIO(gzip.compress(text) if compress else text), chunk_size=chunk_size)
    # WHEN the header is taken off and the rest is batched
    header, rest = split_header_row(reader.iter_chunks_of_lines())
    batches = list(batch_chunks(rest, 3, 10_000))
    # THEN the header is line 2, without BOM or CR, and not in any batch
    assert header == RawLine(2, CSV_HEADER)
    assert [line for b in batches for line in b.lines] == CSV_ROWS
    # AND the data lines keep their real numbers in the file (line 6 is blank)
    assert [n for b in batches for n in b.line_numbers()] == [3, 4, 5, 7, 8, 9, 10]
    # AND every payload is a small CSV file: the header, then the batch's lines
    for b in batches:
        data, _ = batch_message(b, tenant="t", origin=ORIGIN, fmt="csv", header=header.data).encode()
        assert data.split(b"\n") == [CSV_HEADER, *b.lines]
    # AND the reader counted the header too: the ingest's ledger subtracts it
    assert reader.lines == len(CSV_ROWS) + 1


def test_csv_header_only_and_empty_files() -> None:
    header, rest = split_header_row(open_reader("csv", io.BytesIO(CSV_HEADER + b"\n")).iter_chunks_of_lines())
    assert header == RawLine(1, CSV_HEADER) and list(rest) == []
    header, rest = split_header_row(open_reader("csv", io.BytesIO(b"")).iter_chunks_of_lines())
    assert header is None and list(rest) == []


def test_csv_header_of_a_truncated_file_is_partial() -> None:
    reader = open_reader("csv", io.BytesIO(gzip.compress(CSV_HEADER)[:-8]))
    header, _ = split_header_row(reader.iter_chunks_of_lines())
    assert header is not None and header.partial


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"PK\x03\x04 zipped csv", "unsupported_encoding"),
        (b"contact_id\x00,event_name", "unsupported_encoding"),
        (gzip.compress(b"\x00\x01\x02binary", mtime=0), "unsupported_content"),
    ],
    ids=["zip", "nul-byte", "gzip-binary"],  # stable ids: xdist workers must collect identical names
)
def test_csv_reader_rejects_binary_content(data: bytes, reason: str) -> None:
    with pytest.raises(FileRejected) as info:
        open_reader("csv", io.BytesIO(data))
    assert info.value.reason == reason

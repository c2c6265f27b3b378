"""Properties of the loader's and decoder's untrusted-input paths (review findings 1, 5, 18, 25), with hypothesis:

* ``shared.ingest.decode``: any bytes split into lines, gzipped (in one or several members) or not, read with any chunk
  size and line cap, come back as exactly the lines written, numbered as written (blank lines skipped but counted),
  a line over the cap as its head with its full length; the only exception is ``FileRejected``.
* ``shared.load.parse.LineParser``: for every format, any bytes and any JSON value (shaped like the format's records
  or not) give exactly one row or one rejected row, and nothing raises.
* ``attribute_line_numbers``/``int_attribute``: any attributes give ``None`` or exactly ``count`` increasing line
  numbers, without raising or building a list larger than the payload (``last_line`` up to 10**15 and beyond).
* ``parse_message``: a direct publish of exactly ``MAX_LINES_PER_MESSAGE`` lines ending with a newline loads.
"""

from __future__ import annotations

import base64
import io
import json
import tracemalloc
import zlib
from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from shared.envelopes import PubSubMessage
from shared.ingest.decode import OVERSIZED_HEAD_BYTES, FileRejected, open_lines
from shared.load.parse import LineParser
from shared.load.pipeline import MAX_LINES_PER_MESSAGE, parse_message
from shared.raw_events import attribute_line_numbers, int_attribute
from shared.sources.common import RejectReason
from shared.sources.registry import BUILT_IN
from shared.warehouse.rows import EventRow, Lineage, RejectedRow, UserPropertiesRow

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
WHITESPACE = b" \t\r\n\x0b\x0c"
BOM = b"\xef\xbb\xbf"


# -- decode ---------------------------------------------------------------------------------------------------------

# (a whitespace-only line longer than the cap is yielded as an oversized head, or skipped as blank when it leads the
# file: the decoder sees only a long line's head; so blank lines here stay short)
line_bytes = st.binary(max_size=60).map(lambda b: b.replace(b"\n", b"")).filter(lambda b: len(b) <= 4 or not b.isspace())
lines_strategy = st.lists(
    st.one_of(
        line_bytes,
        line_bytes.map(lambda b: b"{" + b),  # looks like a record
        st.sampled_from([b"", b" ", b"\r", b" \t\r", b"\x0b", b"{}\r", BOM + b"{}", b"{" + b"x" * 300]),
    ),
    max_size=40,
)


def expected_lines(data: bytes, cap: int) -> list[tuple[int, bytes, int | None]] | None:
    """What a reader must yield for ``data`` (decoded bytes): (number, data, oversized_bytes) per non-blank line, or
    ``None`` if the file must be rejected (its first non-blank byte is not ``{``)."""
    if data.startswith(BOM):
        data = data[len(BOM):]
    if data.lstrip(WHITESPACE)[:1] not in (b"", b"{"):
        return None
    out: list[tuple[int, bytes, int | None]] = []
    leading = True  # blank lines before the first record are skipped whatever their length
    parts = data.split(b"\n")
    if parts and parts[-1] == b"":
        parts.pop()  # the final newline ends the last line
    for number, part in enumerate(parts, start=1):
        if leading and not part.strip(WHITESPACE):
            continue
        leading = False
        if len(part) > cap:
            out.append((number, part[: min(cap, OVERSIZED_HEAD_BYTES)], len(part)))
            continue
        line = part[:-1] if part.endswith(b"\r") else part
        if line and not line.isspace():
            out.append((number, line, None))
    return out


def gzip_members(data: bytes, cuts: list[int]) -> bytes:
    """``data`` as concatenated gzip members, cut at ``cuts`` (what exporters that append files produce)."""
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    return b"".join(zlib.compress(data[a:b], 6, wbits=31) for a, b in pairwise(bounds))


@FAST
@given(
    lines=lines_strategy,
    trailing_newline=st.booleans(),
    compress=st.booleans(),
    cuts=st.lists(st.integers(min_value=0), max_size=3),
    chunk_size=st.integers(min_value=1, max_value=64),
    cap=st.sampled_from([8, 50, 200, 16 << 20]),
    chunked_api=st.booleans(),
)
def test_decoded_lines_are_the_lines_written(
    lines: list[bytes], trailing_newline: bool, compress: bool, cuts: list[int], chunk_size: int, cap: int,
    chunked_api: bool,
) -> None:
    # GIVEN any lines, joined by \n (with or without a final one), stored plain or gzipped in several members
    data = b"\n".join(lines) + (b"\n" if trailing_newline and lines else b"")
    stored = gzip_members(data, cuts) if compress else data
    assume(compress or not stored.startswith(b"\x1f\x8b"))  # plain text that happens to start like gzip
    expected = expected_lines(data, cap)
    # WHEN it is read with any chunk size and line cap
    try:
        reader = open_lines(io.BytesIO(stored), chunk_size=chunk_size, max_line_bytes=cap)
        if chunked_api:
            got = [
                (chunk.number_at(i), line, chunk.oversized_bytes)
                for chunk in reader.iter_chunks_of_lines()
                for i, line in enumerate(chunk.lines)
            ]
        else:
            got = [(raw.number, raw.data, raw.oversized_bytes) for raw in reader]
    except FileRejected:
        # THEN the only refusal is of a file whose first record does not start with '{'
        assert expected is None, (stored, chunk_size, cap)
        event("rejected file")
        return
    # THEN it yields exactly the non-blank lines written, numbered as written, a longer line as its head and length
    assert expected is not None and got == expected, (stored, chunk_size, cap)
    assert not reader.truncated and reader.lines == len(expected)
    event("has an oversized line" if any(o for _, _, o in got) else "no oversized line")


# -- parse ----------------------------------------------------------------------------------------------------------

NOW = datetime(2024, 5, 14, 12, 0, tzinfo=UTC)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),  # unbounded: beyond int64 and float64 too
    st.floats(),  # NaN and infinities serialize as non-JSON words
    st.text(max_size=20),
    st.sampled_from(["jane@example.com", "+14155552671", "", " ", "\u2028", "\ud800", "1e400", "10" + "0" * 400]),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
times = st.one_of(
    st.sampled_from([
        "0001-01-01T00:00:00+01:00", "9999-12-31T23:00:00-05:00", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z",
        "2024-05-14T09:00:00Z", "2024-05-14 09:00:00.000000", "2024-13-45T99:99:00Z", "2999-01-01T00:00:00Z", "",
    ]),
    st.datetimes(timezones=st.sampled_from([UTC, None])).map(lambda d: d.isoformat()),
    st.integers(), st.floats(), st.just(10**400), st.just(-(10**400)),
)
ids = st.one_of(st.text(max_size=12), st.none(), st.integers(), st.just(" "))


def shaped(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """A dict with any subset of a format's fields, each holding a plausible value or any JSON value."""
    return st.fixed_dictionaries({}, optional={k: st.one_of(v, json_values) for k, v in fields.items()})


SHAPES: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "segment": shaped({
        "type": st.sampled_from(["track", "identify", "page", "screen", "group", "alias", "other"]),
        "event": ids, "userId": ids, "anonymousId": ids, "messageId": ids, "previousId": ids, "groupId": ids,
        "timestamp": times, "originalTimestamp": times, "receivedAt": times, "sentAt": times,
        "properties": json_values, "traits": json_values, "name": ids, "category": ids,
        "context": st.fixed_dictionaries({}, optional={
            "timezone": ids, "traits": json_values, "device": json_values, "location": json_values, "ip": ids,
        }),
    }),
    "native": shaped({
        "kind": st.sampled_from(["event", "user_properties", "other"]), "contact_id": ids, "event_name": ids,
        "timestamp": times, "updated_at": times, "event_instance_id": ids, "timezone": ids,
        "metadata": json_values, "properties": json_values, "country": ids, "push_token": ids,
        "phone_number": ids, "email_address": ids,
    }),
    "mixpanel": shaped({
        "event": ids,
        "properties": st.fixed_dictionaries({}, optional={
            "time": times, "distinct_id": ids, "$user_id": ids, "$insert_id": ids, "mp_processing_time_ms": times,
            "$timezone": ids, "extra": json_values,
        }),
    }),
    "amplitude": shaped({
        "event_type": st.sampled_from(["opened", "$identify", ""]), "user_id": ids, "device_id": ids,
        "event_time": times, "client_event_time": times, "server_received_time": times,
        "server_upload_time": times, "$insert_id": ids, "uuid": ids, "event_properties": json_values,
        "user_properties": json_values, "country": ids, "session_id": times,
    }),
}
# Records that pass validation, so the mapping code runs: required fields present and well typed, times aware with
# any offset on any date (year 1 and 9999 included), numbers of any size, properties of any JSON.
names = st.text(min_size=1, max_size=12).filter(lambda t: not t.isspace())
aware = st.builds(
    lambda d, minutes: d.replace(tzinfo=timezone(timedelta(minutes=minutes))).isoformat(),
    st.datetimes(), st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59),
)
props = st.dictionaries(st.text(max_size=8), json_values, max_size=5)
epochs = st.one_of(st.integers(), st.floats(), st.integers(min_value=10**8, max_value=2 * 10**12))
VALID: dict[str, st.SearchStrategy[Any]] = {
    "segment": st.fixed_dictionaries(
        {"type": st.sampled_from(["track", "identify", "page", "screen", "group", "alias"]), "userId": names,
         "event": names, "groupId": names, "previousId": names, "timestamp": aware},
        optional={"messageId": names, "receivedAt": aware, "properties": props, "traits": props,
                  "context": st.fixed_dictionaries({}, optional={"timezone": names, "traits": props, "device": props,
                                                                 "location": props, "page": props})},
    ),
    "native": st.one_of(
        st.fixed_dictionaries({"contact_id": names, "event_name": names, "timestamp": aware},
                              optional={"metadata": props, "event_instance_id": names, "timezone": names}),
        st.fixed_dictionaries({"kind": st.just("user_properties"), "contact_id": names},
                              optional={"updated_at": aware, "properties": props, "country": names,
                                        "push_token": names, "email_address": names, "phone_number": names}),
    ),
    "mixpanel": st.fixed_dictionaries({"event": names, "properties": st.fixed_dictionaries(
        {"time": epochs, "distinct_id": names},
        optional={"$insert_id": names, "mp_processing_time_ms": epochs, "extra": json_values, "$timezone": names},
    )}),
    "amplitude": st.fixed_dictionaries(
        {"event_type": st.one_of(names, st.just("$identify")), "user_id": names,
         "event_time": st.one_of(aware, st.datetimes().map(lambda d: d.strftime("%Y-%m-%d %H:%M:%S.%f")))},
        optional={"event_properties": props, "user_properties": props, "$insert_id": names,
                  "server_received_time": aware},
    ),
    "csv": st.tuples(names, names, aware, st.one_of(names, st.integers(), st.floats())).map(list),
}
CSV_HEADERS = [
    b"contact_id,event_name,timestamp,plan",
    b"contact_id,event_name,timestamp,event_instance_id,timezone,plan",
    b"contact_id,country,timezone,push_token,phone_number,email_address,updated_at",
    b"contact_id,contact_id",
    b"\xef\xbb\xbfcontact_id,event_name,timestamp",
]


def csv_cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\r') else text


def csv_line(values: list[Any]) -> bytes:
    return ",".join(csv_cell(v) for v in values).replace("\n", " ").encode("utf-8", "surrogatepass")


def deep(n: int) -> bytes:
    return b'{"contact_id": "u", "event_name": "e", "timestamp": "2024-05-14T09:00:00Z", "metadata": {"x": ' + (
        b"[" * n + b"]" * n + b"}}"
    )


def record_bytes(fmt: str) -> st.SearchStrategy[bytes]:
    """Lines for ``fmt``: any bytes, any JSON value, a record shaped like the format's, deep nesting, a BOM."""
    if fmt == "csv":
        shaped_line = st.one_of(st.lists(st.one_of(times, ids, json_values), max_size=8), VALID[fmt]).map(csv_line)
    else:
        shaped_line = st.one_of(SHAPES[fmt], VALID[fmt], VALID[fmt]).map(
            lambda v: json.dumps(v).encode("utf-8", "surrogatepass")
        )
    any_json = json_values.map(lambda v: json.dumps(v).encode("utf-8", "surrogatepass"))
    return st.one_of(
        st.binary(max_size=200),
        any_json,
        shaped_line,
        shaped_line.map(lambda b: BOM + b),
        st.integers(min_value=900, max_value=6000).map(deep),
    )


@pytest.mark.parametrize("fmt", [f.name for f in BUILT_IN])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), number=st.integers(min_value=1, max_value=10**12))
def test_every_line_of_every_format_is_one_row_or_one_rejection(fmt: str, data: st.DataObject, number: int) -> None:
    # GIVEN any line for the format (and, for CSV, one of several headers, good and bad)
    raw = data.draw(record_bytes(fmt), label="raw")
    csv_header = data.draw(st.sampled_from(CSV_HEADERS), label="csv_header") if fmt == "csv" else None
    parser = LineParser(fmt, now=NOW, csv_header=csv_header)
    lineage = Lineage(fmt, "gs://b/o#1", number, NOW)
    # WHEN it is parsed alone, and in a batch (the loader's hot path)
    one = parser.parse(raw, lineage)
    batch = parser.parse_batch([(number, raw)], Lineage(fmt, "gs://b/o#1", None, NOW))
    # THEN neither raised, and each gave exactly one row or one rejected row, at that line
    assert isinstance(one, EventRow | UserPropertiesRow | RejectedRow)
    assert len(batch.rows) + len(batch.rejected) == 1
    event(getattr(one, "reason_code", type(one).__name__))
    outs: list[Any] = [*batch.rows, *batch.rejected]
    [out] = outs
    assert type(out).__name__ == type(one).__name__ and out.lineage.line_number == number
    if isinstance(one, RejectedRow):
        reason = one.reason_code
        assert reason in set(RejectReason) and out.reason_code == reason
        # (and no line needed the catch-all: internal_error would be a bug or a value no rule foresaw)
        assert reason != RejectReason.INTERNAL_ERROR, (one.message, raw)
        assert len(one.payload.encode("utf-8", "surrogatepass")) <= 4 * 100_000


# -- attributes -----------------------------------------------------------------------------------------------------

numberish = st.one_of(
    st.integers(min_value=-5, max_value=10**15).map(str),
    st.integers(min_value=10**15, max_value=10**400).map(str),
    st.sampled_from(["", "x", "1e9", "-3", "0", "01", " 7", "7 ", "١٢", "+4", "3.0", "9" * 1000]),
    st.text(max_size=12),
)
ranges = st.lists(
    st.one_of(numberish, st.tuples(numberish, numberish).map("-".join)), max_size=5
).map(",".join)


@st.composite
def described_lines(draw: st.DrawFn) -> tuple[dict[str, str], int, list[int] | None]:
    """Attributes of a batch as ingest writes them (with their true numbers), or those mutated by any publisher."""
    first = draw(st.integers(min_value=1, max_value=10**15 - 121))  # up to 30 lines and 90 blank ones: 15 digits
    numbers: list[int] = []
    skipped: list[str] = []
    n = first
    for _ in range(draw(st.integers(min_value=1, max_value=30))):
        gap = draw(st.integers(min_value=0, max_value=3)) if numbers else 0
        if gap:
            skipped.append(str(n) if gap == 1 else f"{n}-{n + gap - 1}")
            n += gap
        numbers.append(n)
        n += 1
    attrs = {"first_line": str(first), "last_line": str(numbers[-1]), "line_count": str(len(numbers))}
    if skipped:
        attrs["skipped_lines"] = ",".join(skipped)
    mutated = draw(st.dictionaries(
        st.sampled_from(["first_line", "last_line", "line_count", "skipped_lines", "partial_line"]),
        st.one_of(numberish, ranges), max_size=3,
    ))
    mode = draw(st.sampled_from(["as written", "mutated", "any publisher's"]))
    if mode == "as written":
        mutated = {}
    elif mode == "mutated":
        attrs.update(mutated)
    else:
        attrs = dict(mutated)  # nothing of the truth left
    count = len(numbers) if draw(st.booleans()) else draw(st.integers(min_value=0, max_value=40))
    truth = numbers if not mutated and count == len(numbers) and "first_line" in attrs else None
    return attrs, count, truth


@FAST
@given(case=described_lines())
def test_attribute_line_numbers_are_none_or_exactly_count_increasing_numbers(
    case: tuple[dict[str, str], int, list[int] | None],
) -> None:
    attrs, count, truth = case
    # WHEN the numbers are read from any attributes, with the memory it allocates traced
    tracemalloc.start()
    try:
        numbers = attribute_line_numbers(attrs, count)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # THEN nothing raised and no list bigger than the payload's was built (last_line may say 10**15)
    assert peak < 64 * 1024 + 100 * count, peak
    # AND the answer is None or exactly `count` strictly increasing positive numbers within first..last
    event("numbers" if numbers is not None else "None")
    if numbers is not None:
        assert len(numbers) == count
        assert all(1 <= a < b for a, b in pairwise(numbers))
        assert not numbers or (numbers[0], numbers[-1]) == (int(attrs["first_line"]), int(attrs["last_line"]))
    # AND attributes exactly as ingest writes them give the true numbers
    if truth is not None:
        assert numbers == truth


@settings(max_examples=500, deadline=None)
@given(value=st.one_of(st.none(), numberish, st.text()))
def test_int_attribute_is_none_or_the_small_number_written(value: str | None) -> None:
    got = int_attribute(value)
    if got is not None:
        assert value is not None and value.isascii() and value.isdigit() and len(value) <= 15
        assert got == int(value) and 0 <= got < 10**15


# -- a direct publish of exactly MAX_LINES_PER_MESSAGE lines ----------------------------------------------------------


def publish_of(payload: bytes) -> PubSubMessage:
    return PubSubMessage.model_validate(
        {"data": base64.b64encode(payload).decode(), "messageId": "m-1", "publishTime": "2024-05-14T09:00:05Z",
         "attributes": {}}
    )


EVENT = b'{"contact_id": "u1", "event_name": "opened", "timestamp": "2024-05-14T09:00:00Z"}'


@pytest.mark.parametrize(
    ("lines", "ending", "loads"),
    [
        (MAX_LINES_PER_MESSAGE, b"", True),
        (MAX_LINES_PER_MESSAGE, b"\n", True),  # NDJSON as writers write it: the final newline ends the last line
        (MAX_LINES_PER_MESSAGE, b"\r\n", True),
        (MAX_LINES_PER_MESSAGE + 1, b"", False),
        (MAX_LINES_PER_MESSAGE + 1, b"\n", False),
        (MAX_LINES_PER_MESSAGE, b"\n\n", False),  # a blank line is a physical line: 10,001
    ],
)
def test_the_line_cap_counts_lines_not_newlines(lines: int, ending: bytes, loads: bool) -> None:
    sep = b"\r\n" if ending == b"\r\n" else b"\n"
    parsed = parse_message(publish_of(sep.join([EVENT] * lines) + ending), "raw-events.acme")
    if loads:
        assert len(parsed.rows) == lines and not parsed.rejected
        assert parsed.rows[-1].lineage.line_number == lines
    else:
        [bad] = parsed.rejected
        assert not parsed.rows and bad.reason_code == RejectReason.TOO_MANY_LINES
        assert bad.message.startswith(f"{MAX_LINES_PER_MESSAGE + 1} lines in one message")

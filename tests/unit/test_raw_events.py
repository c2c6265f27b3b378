"""shared.raw_events: the raw-events message, its wire format and what the loader trusts of any publisher's attributes.

* encode -> decode is the identity for every valid message (hypothesis), and decode never raises on any data and any
  attributes; the one unusable message (data that is not base64) is a typed ``UnusableMessage``.
* The wire format is the one earlier versions published (golden attributes below): messages in flight and in
  dead-letter topics still load.
* Line-number attributes are checked before any list is built (reliability findings 5b, 18).
"""

from __future__ import annotations

import base64
import tracemalloc
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.envelopes import PubSubMessage
from shared.raw_events import (
    MAX_NUMBER,
    LineSpan,
    RawEventsMessage,
    UnusableMessage,
    attribute_line_numbers,
    header_framed,
    int_attribute,
    origin_bucket,
)
from shared.replay import replay_message

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ORIGIN = "gs://acme-raw/segment-logs/src1/1714521600000/part-0001.gz#1714560000123456"
KEYS = [
    "tenant", "format", "origin", "batch_index", "batch_id", "first_line", "last_line", "line_count", "skipped_lines",
    "partial_line", "oversized", "original_bytes", "source_id", "replayed_from", "dead_letter_id",
]


# -- valid messages round-trip ----------------------------------------------------------------------------------------

numbers = st.integers(min_value=0, max_value=MAX_NUMBER)


@st.composite
def spans(draw: st.DrawFn) -> LineSpan:
    first = draw(st.integers(min_value=1, max_value=MAX_NUMBER - 200))
    skipped: list[tuple[int, int]] = []
    n = first
    for _ in range(draw(st.integers(min_value=0, max_value=6))):
        lo = n + draw(st.integers(min_value=1, max_value=20))  # at least one line before each blank range
        hi = lo + draw(st.integers(min_value=0, max_value=5))
        skipped.append((lo, hi))
        n = hi + 1
    last = n + draw(st.integers(min_value=0, max_value=20))  # after the last blank range, at least one line
    return LineSpan(first, last, tuple(skipped))


texts = st.text(max_size=30)


@st.composite
def messages(draw: st.DrawFn) -> RawEventsMessage:
    fmt = draw(st.one_of(st.sampled_from(["native", "segment", "mixpanel", "amplitude", "csv"]), texts))
    header = None
    if header_framed(fmt):
        header = draw(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"").rstrip(b"\r")))
    return RawEventsMessage(
        payload=draw(st.binary(max_size=200)),
        format=fmt,
        header=header,
        origin=draw(st.one_of(st.none(), st.just(ORIGIN), st.text(min_size=1, max_size=30))),
        tenant=draw(st.one_of(st.none(), texts)),
        span=draw(st.one_of(st.none(), spans())),
        partial_line=draw(st.one_of(st.none(), numbers)),
        oversized=draw(st.booleans()),
        original_bytes=draw(st.one_of(st.none(), numbers)),
        batch_index=draw(st.one_of(st.none(), numbers)),
        batch_id=draw(st.one_of(st.none(), texts)),
        source_id=draw(st.one_of(st.none(), texts)),
        replayed_from=draw(st.one_of(st.none(), texts)),
        dead_letter_id=draw(st.one_of(st.none(), texts)),
    )


@FAST
@given(message=messages())
def test_encode_then_decode_gives_the_message_back(message: RawEventsMessage) -> None:
    data, attributes = message.encode()
    assert all(isinstance(v, str) for v in attributes.values())
    assert RawEventsMessage.decode(data, attributes) == message
    # AND through a Pub/Sub delivery (base64 data), as the loader receives it
    delivered = PubSubMessage.model_validate(
        {"data": base64.b64encode(data).decode(), "attributes": attributes, "messageId": "1"}
    )
    assert RawEventsMessage.from_pubsub(delivered) == message
    assert message.size == len(data)


# -- any publisher's message decodes ----------------------------------------------------------------------------------

numberish = st.one_of(
    st.integers(min_value=0, max_value=10**6).map(str),
    st.integers(min_value=10**14, max_value=10**400).map(str),
    st.sampled_from(["", "x", "1e9", "-3", "0", "01", " 7", "7 ", "١٢", "+4", "3.0", "true", "9" * 1000]),
    st.text(max_size=12),
)
ranges = st.lists(st.one_of(numberish, st.tuples(numberish, numberish).map("-".join)), max_size=5).map(",".join)
any_attributes = st.dictionaries(
    st.one_of(st.sampled_from(KEYS), st.text(max_size=10)), st.one_of(numberish, ranges, texts), max_size=10
)


@FAST
@given(data=st.binary(max_size=300), attributes=any_attributes, count=st.integers(min_value=0, max_value=50))
def test_decode_never_raises_and_keeps_only_what_is_well_formed(
    data: bytes, attributes: dict[str, str], count: int
) -> None:
    # WHEN any data with any attributes is decoded
    message = RawEventsMessage.decode(data, attributes)
    # THEN it is a valid message: encoding it and decoding again changes nothing
    assert RawEventsMessage.decode(*message.encode()) == message
    # AND what it kept is what the publisher said, where well formed
    assert message.format == attributes.get("format", "native")
    assert message.tenant == attributes.get("tenant")  # the claim as sent: the topic decides (load pipeline)
    assert message.origin == (attributes.get("origin") or None)
    assert message.oversized == (attributes.get("oversized") == "true")
    assert message.partial_line == int_attribute(attributes.get("partial_line"))
    # AND the payload lines are numbered: exactly `count` increasing numbers, the declared ones only if they fit
    numbers = message.line_numbers(count)
    assert len(numbers) == count and all(1 <= a < b for a, b in pairwise(numbers))
    if message.span is None or message.span.count != count:
        assert numbers == list(range(1, count + 1))


def test_data_that_is_not_base64_is_a_typed_error_naming_the_message() -> None:
    with pytest.raises(UnusableMessage, match="message m-9: its data is not base64"):
        RawEventsMessage.from_pubsub(PubSubMessage.model_validate({"data": "abc", "messageId": "m-9"}))


def test_a_csv_message_is_a_small_csv_file_and_any_other_has_no_header() -> None:
    csv = RawEventsMessage.decode(b"a,b\r\n1,2\n3,4", {"format": "csv"})
    assert (csv.header, csv.payload) == (b"a,b", b"1,2\n3,4")
    assert RawEventsMessage.decode(b"", {"format": "csv"}).header == b""
    ndjson = RawEventsMessage.decode(b'{"a":1}\n{"b":2}', {})
    assert (ndjson.format, ndjson.header, ndjson.payload) == ("native", None, b'{"a":1}\n{"b":2}')
    # AND a producer cannot build a message the loader would read otherwise
    for bad in ({"format": "csv"}, {"format": "segment", "header": b"h"}, {"format": "csv", "header": b"a\nb"},
                {"origin": ""}, {"partial_line": -1}, {"batch_index": MAX_NUMBER + 1}):
        with pytest.raises(ValueError):
            RawEventsMessage(**bad)


# -- the wire format of earlier versions ------------------------------------------------------------------------------


def test_an_ingest_batch_published_by_earlier_versions_decodes_and_encodes_to_the_same_bytes() -> None:
    # GIVEN a CSV batch as ingest published it before the model existed (lines 5..12 of the file, 6-7 and 10 blank,
    # 12 the broken tail of a truncated file)
    data = b"contact_id,event_name,timestamp\nu1,a,t\nu2,b,t\nu3,c,t\nu4,d,t\nu5,e"
    attributes = {
        "tenant": "acme", "format": "csv", "origin": ORIGIN, "batch_index": "3", "batch_id": "f" * 32,
        "first_line": "5", "last_line": "12", "line_count": "5", "skipped_lines": "6-7,10", "partial_line": "12",
        "source_id": "src1",
    }
    # WHEN decoded THEN every field is typed, and the lines get their numbers in the file
    message = RawEventsMessage.decode(data, attributes)
    assert message == RawEventsMessage(
        payload=b"u1,a,t\nu2,b,t\nu3,c,t\nu4,d,t\nu5,e", format="csv", header=b"contact_id,event_name,timestamp",
        origin=ORIGIN, tenant="acme", span=LineSpan(5, 12, ((6, 7), (10, 10))), partial_line=12, batch_index=3,
        batch_id="f" * 32, source_id="src1",
    )
    assert message.line_numbers(5) == [5, 8, 9, 11, 12] and message.origin_bucket == "acme-raw"
    # AND encoding it publishes the very same bytes and attributes
    assert message.encode() == (data, attributes)


def test_direct_publishes_and_replays_of_earlier_versions_decode() -> None:
    direct = RawEventsMessage.decode(b'{"contact_id":"u1"}\n', {"format": "native", "tenant": "acme"})
    assert (direct.origin, direct.span, direct.tenant, direct.line_numbers(2)) == (None, None, "acme", [1, 2])
    oversized = RawEventsMessage.decode(
        b'{"big":"xx', {"oversized": "true", "original_bytes": "12000000", "first_line": "4", "last_line": "4"}
    )
    assert (oversized.oversized, oversized.original_bytes, oversized.line_numbers(1)) == (True, 12_000_000, [4])
    replayed = {"format": "segment", "replayed_from": "r1", "origin": ORIGIN, "first_line": "7", "last_line": "7",
                "line_count": "1"}
    assert RawEventsMessage.decode(b"{}", replayed).encode() == (b"{}", replayed)
    dead = {"format": "native", "origin": "pubsub://raw-events.acme/314", "dead_letter_id": "314"}
    assert RawEventsMessage.decode(b"{}", dead).dead_letter_id == "314"


def test_replay_publishes_the_stored_line_at_its_position_as_earlier_versions_did() -> None:
    row = {"rejected_id": "r1", "reason_code": "invalid_field", "payload": "h1,h2\nv1,v2", "source_format": "csv",
           "origin": ORIGIN, "line_number": 7}
    assert replay_message(row).encode() == (
        b"h1,h2\nv1,v2",
        {"format": "csv", "origin": ORIGIN, "first_line": "7", "last_line": "7", "line_count": "1",
         "replayed_from": "r1"},
    )
    direct = {"rejected_id": "r2", "payload": "{}", "source_format": None, "origin": None, "line_number": None}
    assert replay_message(direct).encode() == (b"{}", {"format": "segment", "replayed_from": "r2"})


def test_origin_bucket_is_only_a_gs_origins() -> None:
    assert [origin_bucket(o) for o in (ORIGIN, "gs://b", "pubsub://raw-events.acme/1", "", None)] == [
        "acme-raw", "b", None, None, None
    ]


# -- line numbers: checked before any list is built -------------------------------------------------------------------

GOOD = {"first_line": "5", "last_line": "12", "line_count": "5", "skipped_lines": "6-7,10"}


@pytest.mark.parametrize(
    "changes",
    [
        {"first_line": "x"},
        {"last_line": "1e9"},
        {"last_line": "1000000000"},  # a billion numbers, were the list built before the check
        {"last_line": "9" * 5000},
        {"first_line": "-3"},
        {"first_line": "13"},  # after last_line
        {"first_line": "0", "last_line": "7", "skipped_lines": "3-5"},  # lines start at 1
        {"line_count": "4"},
        {"line_count": "five"},
        {"skipped_lines": "6-7,10,"},  # a trailing comma is tolerated: see the assertion below
        {"skipped_lines": "7-6,10"},
        {"skipped_lines": "6-7,7"},  # overlapping
        {"skipped_lines": "5-7,10"},  # the first line cannot be blank
        {"skipped_lines": "6-7,12"},  # nor the last
        {"skipped_lines": "6-7-8,10"},
        {"skipped_lines": "zz"},
        {"skipped_lines": "6-7"},  # one range short of the count
    ],
)
def test_attribute_line_numbers_are_checked_before_any_list_is_built(changes: dict[str, str]) -> None:
    # GIVEN attributes any publisher may have set, malformed or inconsistent with the 5 lines of the payload
    attrs = {**GOOD, **changes}
    # WHEN the loader asks for the numbers of those 5 lines, with the memory it allocates traced
    tracemalloc.start()
    try:
        numbers = attribute_line_numbers(attrs, 5)
        message_numbers = RawEventsMessage.decode(b"a\nb\nc\nd\ne", attrs).line_numbers(5)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # THEN it gets them only if the attributes describe exactly 5 lines; otherwise None (the loader numbers from 1)
    if changes == {"skipped_lines": "6-7,10,"}:
        assert numbers == message_numbers == [5, 8, 9, 11, 12]
    else:
        assert numbers is None and message_numbers == [1, 2, 3, 4, 5]
    assert peak < 1 << 16, peak
    assert attribute_line_numbers(GOOD, 5) == [5, 8, 9, 11, 12]
    assert attribute_line_numbers({}, 5) is None


def test_int_attribute_reads_only_plain_bounded_numbers() -> None:
    assert [int_attribute(v) for v in ("0", "17", "000123", "123456789012345")] == [0, 17, 123, 123456789012345]
    assert [int_attribute(v) for v in (None, "", "x", "1e9", "-1", " 7", "7 ", "1.0", "1" * 16, "\u0667")] == [None] * 10

"""parse_line / parse_lines: every reason code, strict JSON, rejected-row envelope, batch lineage."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shared import __version__
from shared.load import ParsedBatch, RejectReason, parse_line, parse_lines
from shared.load.parse import MAX_PAYLOAD_BYTES
from shared.warehouse.rows import EventRow, Lineage, RejectedRow, UserPropertiesRow

EVENTS = Path(__file__).resolve().parents[1] / "events"
NOW = datetime(2024, 5, 15, tzinfo=UTC)
LINEAGE = Lineage("segment", "gs://tenant-bucket/segment-logs/src/1715644800000/a.gz#17", 7, NOW)


def sample(name: str = "track", **changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    event.update(changes)
    return event


def without(event: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k not in keys}


def parse(raw: bytes | dict[str, Any], **kw: Any) -> EventRow | UserPropertiesRow | RejectedRow:
    if isinstance(raw, dict):
        raw = json.dumps(raw).encode()
    return parse_line(raw, fmt=kw.pop("fmt", "segment"), lineage=kw.pop("lineage", LINEAGE), now=NOW, **kw)


TRACK = sample()
CASES: list[tuple[RejectReason, bytes]] = [
    (RejectReason.INVALID_JSON, b'{"type": "track", oops}'),
    (RejectReason.INVALID_JSON, json.dumps(TRACK).encode()[:-1] + b', "total": NaN}'),
    (RejectReason.INVALID_UTF8, json.dumps(TRACK).encode().replace(b"Order Completed", b"Order \xff\xfe Completed")),
    (RejectReason.INVALID_UNICODE, json.dumps(TRACK).encode().replace(b"Order Completed", b"Order \\ud800 Completed")),
    (RejectReason.NOT_AN_OBJECT, b'[{"type": "track"}]'),
    (RejectReason.NOT_AN_OBJECT, b'"track"'),
    (RejectReason.UNKNOWN_TYPE, json.dumps(sample(type="Track")).encode()),
    (RejectReason.UNKNOWN_TYPE, json.dumps(sample(type="purchase")).encode()),
    (RejectReason.UNKNOWN_TYPE, json.dumps(without(TRACK, "type")).encode()),
    (RejectReason.MISSING_IDENTITY, json.dumps(sample(userId=None, anonymousId="  ")).encode()),
    (RejectReason.MISSING_IDENTITY, json.dumps(sample("alias", userId=None)).encode()),
    (RejectReason.MISSING_EVENT_NAME, json.dumps(without(TRACK, "event")).encode()),
    (RejectReason.MISSING_EVENT_NAME, json.dumps(sample(event="   ")).encode()),
    (RejectReason.MISSING_EVENT_NAME, json.dumps(sample(event=None)).encode()),
    (RejectReason.MISSING_GROUP_ID, json.dumps(without(sample("group"), "groupId")).encode()),
    (RejectReason.MISSING_PREVIOUS_ID, json.dumps(without(sample("alias"), "previousId")).encode()),
    (RejectReason.INVALID_TIMESTAMP, json.dumps(sample(timestamp="yesterday")).encode()),
    (RejectReason.INVALID_TIMESTAMP, json.dumps(sample(timestamp="2024-05-14T09:21:03")).encode()),  # naive
    (RejectReason.INVALID_TIMESTAMP, json.dumps(sample(sentAt=1715678463)).encode()),
    (
        RejectReason.MISSING_TIMESTAMP,
        json.dumps(without(TRACK, "timestamp", "originalTimestamp", "receivedAt")).encode(),
    ),
    (RejectReason.FUTURE_TIMESTAMP, json.dumps(sample(timestamp="2024-05-16T09:21:05Z")).encode()),
    (RejectReason.INVALID_FIELD, json.dumps(sample(properties=["not", "a", "dict"])).encode()),
    (RejectReason.INVALID_FIELD, json.dumps(sample(context="mobile")).encode()),
    (RejectReason.TRUNCATED_LINE, json.dumps(TRACK).encode()[:300]),
    (RejectReason.LINE_TOO_LARGE, json.dumps(sample(properties={"blob": "x" * 1_100_000})).encode()),
]


@pytest.mark.parametrize(("reason", "raw"), CASES, ids=[f"{r}-{i}" for i, (r, _) in enumerate(CASES)])
def test_each_reason_code_triggers(reason: RejectReason, raw: bytes) -> None:
    # GIVEN a line that is bad in one specific way WHEN parsed
    row = parse(raw)
    # THEN it becomes a rejected row carrying that reason, a message, and the original payload
    assert isinstance(row, RejectedRow), row
    assert row.reason_code == reason, row.message
    assert row.message
    assert row.payload == raw[:MAX_PAYLOAD_BYTES].decode("utf-8", errors="replace")
    assert (row.processor_name, row.processor_version) == ("landline.load", __version__)
    assert row.lineage == LINEAGE


def test_every_reason_code_is_covered() -> None:
    # invalid_csv only occurs in CSV lines: tests/unit/test_csv_export.py covers it
    # internal_error: test_any_exception_while_mapping_one_line...; too_many_lines: tests/unit/test_load_message.py
    covered = {reason for reason, _ in CASES} | {
        RejectReason.UNKNOWN_FORMAT,
        RejectReason.INVALID_CSV,
        RejectReason.INTERNAL_ERROR,
        RejectReason.TOO_MANY_LINES,
    }
    assert covered == set(RejectReason)


def test_invalid_field_message_names_the_field() -> None:
    row = parse(sample(properties=["x"]))
    assert isinstance(row, RejectedRow) and row.message.startswith("properties")


def test_bare_nan_and_infinity_are_rejected_but_the_words_in_strings_are_fine() -> None:
    base = json.dumps(TRACK).encode()[:-1]
    for token in (b"NaN", b"Infinity", b"-Infinity"):
        row = parse(base + b', "x": ' + token + b"}")
        assert isinstance(row, RejectedRow) and row.reason_code == RejectReason.INVALID_JSON
    row = parse(sample(properties={"note": "NaN and Infinity are words here"}))
    assert isinstance(row, EventRow) and row.metadata["note"] == "NaN and Infinity are words here"


def test_lone_surrogates_are_rejected_but_pairs_are_fine() -> None:
    # GIVEN escapes for a lone high surrogate, a lone low surrogate, and a valid pair
    base = json.dumps(TRACK).encode()
    for bad in (b"\\ud800", b"\\udc00", b"\\uD83D x"):
        row = parse(base.replace(b"Order Completed", bad))
        # THEN the lone ones are invalid_unicode (they could never be written as UTF-8)
        assert isinstance(row, RejectedRow) and row.reason_code == RejectReason.INVALID_UNICODE
    row = parse(base.replace(b"Order Completed", b"Order \\ud83d\\ude00"))
    assert isinstance(row, EventRow) and row.event_name == "Order \U0001f600"


def test_line_separator_inside_a_string_is_fine() -> None:
    # GIVEN U+2028 and U+2029 raw inside a JSON string (str.splitlines would break the line there)
    row = parse(sample(event="Order\u2028Completed", properties={"note": "a\u2029b"}))
    # THEN the line parses and the characters survive
    assert isinstance(row, EventRow)
    assert row.event_name == "Order\u2028Completed" and row.metadata["note"] == "a\u2029b"
    raw = json.dumps(sample(event="x\u2028y"), ensure_ascii=False).encode()
    assert b"\xe2\x80\xa8" in raw
    assert isinstance(parse(raw), EventRow)


def test_future_timestamp_uses_received_at_then_now() -> None:
    # GIVEN a timestamp 23h after receivedAt: accepted; 25h after: rejected
    ok = parse(sample(timestamp="2024-05-15T08:21:04Z"))
    late = parse(sample(timestamp="2024-05-15T10:21:05Z"))
    assert isinstance(ok, EventRow)
    assert isinstance(late, RejectedRow) and late.reason_code == RejectReason.FUTURE_TIMESTAMP
    # AND without receivedAt (and no batch received_at) the reference is now
    event = without(sample(timestamp="2024-05-15T23:00:00Z"), "receivedAt")
    no_received = Lineage("segment", "gs://b/o#1", 1, None)
    assert isinstance(parse(event, lineage=no_received), EventRow)
    event["timestamp"] = "2024-05-16T01:00:01Z"
    row = parse(event, lineage=no_received)
    assert isinstance(row, RejectedRow) and row.reason_code == RejectReason.FUTURE_TIMESTAMP
    # AND the skew is configurable
    assert isinstance(parse(event, lineage=no_received, max_future_skew_hours=48), EventRow)


def test_unknown_format_rejects_instead_of_raising() -> None:
    row = parse(TRACK, fmt="parquet")
    assert isinstance(row, RejectedRow) and row.reason_code == RejectReason.UNKNOWN_FORMAT


def test_rejected_ids_are_deterministic() -> None:
    # GIVEN the same bad line at the same position, twice THEN the same rejected_id (redelivery dedups)
    a, b = parse(b"{nope"), parse(b"{nope")
    assert isinstance(a, RejectedRow) and isinstance(b, RejectedRow) and a.rejected_id == b.rejected_id
    # AND another position of the same origin gets another id
    c = parse(b"{nope", lineage=Lineage("segment", LINEAGE.origin, 8, NOW))
    assert isinstance(c, RejectedRow) and c.rejected_id != a.rejected_id
    # AND without an origin, the content decides
    no_origin = Lineage("segment")
    d, e = parse(b"{nope", lineage=no_origin), parse(b"{nope!", lineage=no_origin)
    assert isinstance(d, RejectedRow) and isinstance(e, RejectedRow) and d.rejected_id != e.rejected_id
    assert d.rejected_id == parse(b"{nope", lineage=no_origin).rejected_id  # type: ignore[union-attr]


def test_payload_is_truncated_and_decoded_with_replacement() -> None:
    raw = b'{"type": "track", "x": "' + b"\xff" + b"y" * 200_000 + b'"}'
    row = parse(raw)
    assert isinstance(row, RejectedRow) and row.reason_code == RejectReason.INVALID_UTF8
    assert row.payload.startswith('{"type": "track", "x": "\ufffd') and len(row.payload) <= MAX_PAYLOAD_BYTES


def test_parse_lines_sets_line_numbers_and_splits_rows_from_rejections() -> None:
    # GIVEN a Segment file's lines (all six types) plus two bad lines
    good = (EVENTS / "mixed.ndjson").read_bytes().split(b"\n")
    lines = [raw for raw in good if raw] + [b"not json", b"[]"]
    batch_lineage = Lineage("segment", "gs://tenant-bucket/x.gz#3", None, NOW)
    # WHEN parsed as a batch, numbered from 1
    batch = parse_lines(enumerate(lines, 1), fmt="segment", lineage=batch_lineage, now=NOW)
    # THEN every line is exactly one row, each with its own line number and the batch's origin
    assert isinstance(batch, ParsedBatch)
    assert len(batch.rows) == 6 and len(batch.rejected) == 2
    assert [r.lineage.line_number for r in batch.rows] == [1, 2, 3, 4, 5, 6]
    assert [r.lineage.line_number for r in batch.rejected] == [7, 8]
    assert {r.lineage.origin for r in [*batch.rows, *batch.rejected]} == {"gs://tenant-bucket/x.gz#3"}
    assert sum(isinstance(r, UserPropertiesRow) for r in batch.rows) == 1
    assert batch.reasons() == {"invalid_json": 1, "not_an_object": 1}
    # AND rows serialise for BigQuery
    for row in [*batch.rows, *batch.rejected]:
        json.dumps(row.to_bq(NOW))


def test_parse_lines_leaves_the_process_wide_collector_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    # GIVEN the loader's 4 threads share one garbage collector (finding 29): pausing it for one batch paused it for
    # every thread. WHEN a batch is parsed with gc.disable/gc.enable made to fail
    def forbidden() -> None:
        raise AssertionError("parse_lines must not switch the process-wide collector")

    monkeypatch.setattr(gc, "disable", forbidden)
    monkeypatch.setattr(gc, "enable", forbidden)
    lines = [(1, json.dumps(TRACK).encode()), (2, b"{nope")]
    batch = parse_lines(lines, fmt="segment", lineage=LINEAGE, now=NOW)
    # THEN it parses without touching them
    assert (len(batch.rows), len(batch.rejected)) == (1, 1)


def test_fast_row_builders_match_the_constructors() -> None:
    from shared.sources import format as f

    # GIVEN the slot-filling builders used on the hot path THEN they are active and build equal, complete rows
    assert f._EVENT_SET is not None and f._LINEAGE_SET is not None
    lineage = f.line_lineage("segment", "gs://b/o#1", 3, NOW)
    assert lineage == Lineage("segment", "gs://b/o#1", 3, NOW)
    row = f.event_row("c1", NOW, "ev", "id1", lineage, "Europe/Paris", {"k": 1})
    assert row == EventRow("c1", NOW, "ev", "id1", lineage, "Europe/Paris", {"k": 1})
    assert row.to_bq(NOW) == EventRow("c1", NOW, "ev", "id1", lineage, "Europe/Paris", {"k": 1}).to_bq(NOW)
    # AND the rows stay frozen
    with pytest.raises(AttributeError):
        row.contact_id = "other"  # type: ignore[misc]
    # AND batch parsing gives the same rows as line-by-line parsing
    good = [raw for raw in (EVENTS / "mixed.ndjson").read_bytes().split(b"\n") if raw]
    batch = parse_lines(enumerate(good, 1), fmt="segment", lineage=Lineage("segment", "gs://b/o#1", None, NOW), now=NOW)
    one_by_one = [parse(raw, lineage=Lineage("segment", "gs://b/o#1", n, NOW)) for n, raw in enumerate(good, 1)]
    assert batch.rows == one_by_one


def test_to_bq_times_are_utc_whatever_the_row_holds() -> None:
    from datetime import timedelta, timezone

    # GIVEN a row built by other code with a +02:00 timestamp and naive-free UTC times elsewhere
    plus2 = datetime(2024, 5, 14, 11, 0, tzinfo=timezone(timedelta(hours=2)))
    row = EventRow("c1", plus2, "ev", "id1", Lineage("native", "o", 1, plus2), None, {})
    out = row.to_bq(plus2)
    # THEN every time is written as the UTC instant
    assert out["timestamp"] == out["received_at"] == out["loaded_at"] == "2024-05-14T09:00:00+00:00"
    up = UserPropertiesRow("c1", plus2, "id1", Lineage("native", "o", 1, None))
    assert up.to_bq(NOW)["updated_at"] == "2024-05-14T09:00:00+00:00" and up.to_bq(NOW)["received_at"] is None
    assert parse(TRACK).to_bq(NOW)["timestamp"] == "2024-05-14T09:21:03.629000+00:00"  # type: ignore[union-attr]


# -- poison lines: one line never fails its neighbours (review findings 1, 25) -------------------------------------
SEGMENT_OK = {"type": "track", "userId": "u1", "event": "e", "timestamp": "2024-05-14T09:00:00Z"}


def nested(depth: int) -> bytes:
    """A Segment track whose properties hold ``depth`` nested arrays."""
    return json.dumps(SEGMENT_OK).encode()[:-1] + b', "properties": {"x": ' + b"[" * depth + b"]" * depth + b"}}"


EDGE_TIMES = ["0001-01-01T00:00:00+01:00", "9999-12-31T23:00-05:00", "0001-01-01T00:59:59.999999+01:00"]


def edge_time_lines(ts: str) -> list[tuple[str, bytes, dict[str, Any]]]:
    """One line per format whose only problem is ``ts`` (an aware time outside year 1..9999 once in UTC)."""
    return [
        ("segment", json.dumps({**SEGMENT_OK, "timestamp": ts}).encode(), {}),
        ("native", json.dumps({"contact_id": "u", "event_name": "e", "timestamp": ts}).encode(), {}),
        ("native", json.dumps({"contact_id": "u", "updated_at": ts, "country": "FR"}).encode(), {}),
        ("amplitude", json.dumps({"event_type": "e", "user_id": "u", "event_time": ts}).encode(), {}),
        (
            "amplitude",
            json.dumps({"event_type": "e", "user_id": "u", "event_time": "2024-05-14 09:00:00",
                        "server_received_time": ts}).encode(),
            {},
        ),
        ("csv", f"u,e,{ts}".encode(), {"csv_header": b"contact_id,event_name,timestamp"}),
        ("csv", f"u,FR,{ts}".encode(), {"csv_header": b"contact_id,country,updated_at"}),
    ]


@pytest.mark.parametrize("depth", [1_000, 5_000, 100_000])
def test_json_nested_thousands_deep_is_one_invalid_json_rejection(depth: int) -> None:
    # GIVEN a line nested deeper than any parser's recursion limit WHEN parsed
    row = parse(nested(depth))
    # THEN it is rejected with a precise reason, not a RecursionError
    assert isinstance(row, RejectedRow) and row.reason_code == RejectReason.INVALID_JSON, row
    assert "deep" in row.message


@pytest.mark.parametrize("ts", EDGE_TIMES)
def test_aware_timestamps_outside_the_datetime_range_in_utc_are_invalid_timestamp(ts: str) -> None:
    for fmt, raw, extra in edge_time_lines(ts):
        # GIVEN a line of each format whose time leaves year 1..9999 once converted to UTC WHEN parsed
        row = parse(raw, fmt=fmt, lineage=Lineage(fmt, "o", 1, NOW), **extra)
        # THEN it is an invalid_timestamp rejection (received or event time alike)
        assert isinstance(row, RejectedRow), (fmt, raw, row)
        assert row.reason_code == RejectReason.INVALID_TIMESTAMP, (fmt, raw, row.message)


def test_a_received_time_outside_the_range_is_invalid_only_where_it_decides() -> None:
    # GIVEN Segment's receivedAt (the reference of the future check, not stored) at either edge with an offset
    early = parse({**SEGMENT_OK, "receivedAt": "0001-01-01T00:00:00+01:00"})
    late = parse({**SEGMENT_OK, "receivedAt": "9999-12-31T23:00-05:00"})
    # THEN year 0 in UTC is an invalid time (not "the event is in the future"); before year 9999 nothing is decided
    assert isinstance(early, RejectedRow) and early.reason_code == RejectReason.INVALID_TIMESTAMP, early.message
    assert isinstance(late, EventRow)


def test_timestamps_at_the_edge_that_stay_in_range_still_load() -> None:
    # GIVEN aware times that are in range once in UTC (year 1 at UTC, year 9999 minus an offset)
    old = parse({**SEGMENT_OK, "timestamp": "0001-01-01T00:00:00-01:00"})
    assert isinstance(old, EventRow) and old.timestamp == datetime(1, 1, 1, 1, tzinfo=UTC)
    # THEN they load (the far future one is rejected for being in the future, with that reason)
    late = parse({**SEGMENT_OK, "timestamp": "9999-12-31T23:00:00+05:00"})
    assert isinstance(late, RejectedRow) and late.reason_code == RejectReason.FUTURE_TIMESTAMP


MIXPANEL_OK = {"event": "e", "properties": {"time": 1715677263, "distinct_id": "u"}}


def mixpanel_raw(time_literal: bytes, field: str = "time") -> bytes:
    body = json.dumps({"event": "e", "properties": {"time": 1715677263, "distinct_id": "u", field: 0}}).encode()
    return body.replace(b'"' + field.encode() + b'": 0', b'"' + field.encode() + b'": ' + time_literal)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (mixpanel_raw(b"1" + b"0" * 400), RejectReason.INVALID_TIMESTAMP),
        (mixpanel_raw(b"1e400"), RejectReason.INVALID_TIMESTAMP),
        (mixpanel_raw(b"-1" + b"0" * 400), RejectReason.INVALID_TIMESTAMP),
        (mixpanel_raw(b"1e400", "extra_number"), RejectReason.INVALID_FIELD),
    ],
    ids=["time-10**400", "time-1e400", "time--10**400", "metadata-1e400"],
)
def test_mixpanel_huge_numbers_are_rejected_with_a_reason(raw: bytes, reason: RejectReason) -> None:
    row = parse(raw, fmt="mixpanel", lineage=Lineage("mixpanel", "o", 1, NOW))
    assert isinstance(row, RejectedRow) and row.reason_code == reason, row
    assert len(row.message) < 200  # the number is not copied whole into the message


def test_mixpanel_unusable_processing_time_falls_back_to_the_batch_time() -> None:
    # GIVEN mp_processing_time_ms 10**400 (it is only the reference of the future check) WHEN parsed
    row = parse(mixpanel_raw(b"1" + b"0" * 400, "mp_processing_time_ms"), fmt="mixpanel",
                lineage=Lineage("mixpanel", "o", 1, NOW))
    # THEN the event loads, checked against the batch's received time instead
    assert isinstance(row, EventRow) and row.timestamp == datetime(2024, 5, 14, 9, 1, 3, tzinfo=UTC)


@pytest.mark.parametrize("literal", [b"1e400", b"-1e400", b"1E+309", b"1" + b"0" * 400 + b".5"])
def test_numbers_that_overflow_to_infinity_are_rejected_never_stored_as_null(literal: bytes) -> None:
    base = json.dumps({**SEGMENT_OK, "properties": {"total": 0}}).encode()
    for fmt, raw in [
        ("segment", base.replace(b'"total": 0', b'"total": ' + literal)),
        ("segment", json.dumps({**SEGMENT_OK, "type": "identify", "traits": {"n": 0}}).encode().replace(
            b'"n": 0', b'"n": ' + literal)),
        ("native", b'{"contact_id":"u","event_name":"e","timestamp":"2024-05-14T09:00:00Z","metadata":{"n":%s}}'
         % literal),
        ("native", b'{"contact_id":"u","properties":{"n":[%s]}}' % literal),
        ("amplitude", b'{"event_type":"e","user_id":"u","event_time":"2024-05-14 09:00:00",'
                      b'"event_properties":{"n":%s}}' % literal),
    ]:
        row = parse(raw, fmt=fmt, lineage=Lineage(fmt, "o", 1, NOW))
        assert isinstance(row, RejectedRow), (fmt, raw[:80], row)
        assert row.reason_code == RejectReason.INVALID_FIELD and "range" in row.message, row.message


def test_integers_beyond_int64_are_kept_exactly_as_decimal_strings() -> None:
    big, small = 2**63, -(2**63) - 1
    raw = json.dumps({**SEGMENT_OK, "properties": {"id": big, "neg": small, "ok": 2**63 - 1, "deep": [{"n": big}]}})
    # GIVEN integers one past int64 at either end WHEN parsed
    row = parse(raw.encode())
    # THEN the event loads, those values become their exact decimal strings, in-range integers stay integers
    assert isinstance(row, EventRow)
    assert row.metadata == {"id": str(big), "neg": str(small), "ok": 2**63 - 1, "deep": [{"n": str(big)}]}
    # AND the same holds for user properties
    up = parse({**SEGMENT_OK, "type": "identify", "traits": {"account": 10**30}})
    assert isinstance(up, UserPropertiesRow) and up.properties == {"account": str(10**30)}


def test_a_bom_at_the_start_of_a_line_is_stripped() -> None:
    # GIVEN lines that start with a UTF-8 BOM (a mid-file line of concatenated exports) in every JSON format
    for fmt, body in [
        ("segment", json.dumps(SEGMENT_OK).encode()),
        ("native", b'{"contact_id":"u","event_name":"e","timestamp":"2024-05-14T09:00:00Z"}'),
        ("mixpanel", json.dumps(MIXPANEL_OK).encode()),
        ("amplitude", b'{"event_type":"e","user_id":"u","event_time":"2024-05-14 09:00:00"}'),
    ]:
        # WHEN parsed
        row = parse(b"\xef\xbb\xbf" + body, fmt=fmt, lineage=Lineage(fmt, "o", 1, NOW))
        # THEN it loads like the line without the BOM
        assert isinstance(row, EventRow), (fmt, row)
        assert row == parse(body, fmt=fmt, lineage=Lineage(fmt, "o", 1, NOW))
    # AND a CSV data line with a BOM keeps its first cell clean
    row = parse(b"\xef\xbb\xbfu,e,2024-05-14T09:00:00Z", fmt="csv", lineage=Lineage("csv", "o", 1, NOW),
                csv_header=b"contact_id,event_name,timestamp")
    assert isinstance(row, EventRow) and row.contact_id == "u"


def test_any_exception_while_mapping_one_line_becomes_that_lines_internal_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from shared.sources.format import MappingContext
    from shared.sources.segment import SegmentFormat

    # GIVEN a mapping bug that raises on one particular line
    real = SegmentFormat.map

    def buggy(self: SegmentFormat, raw: bytes, lineage: Lineage, ctx: MappingContext) -> Any:
        if b"boom" in raw:
            raise KeyError("boom")
        return real(self, raw, lineage, ctx)

    monkeypatch.setattr(SegmentFormat, "map", buggy)
    lines = [(n, json.dumps({**SEGMENT_OK, "event": f"e{n}"}).encode()) for n in range(1, 6)]
    lines[2] = (3, json.dumps({**SEGMENT_OK, "event": "boom"}).encode())
    # WHEN the batch is parsed
    batch = parse_lines(lines, fmt="segment", lineage=Lineage("segment", "o", None, NOW), now=NOW)
    # THEN only that line is rejected, as internal_error naming the exception type; its neighbours load
    assert [r.lineage.line_number for r in batch.rows] == [1, 2, 4, 5]
    [bad] = batch.rejected
    assert (bad.reason_code, bad.lineage.line_number) == ("internal_error", 3)
    assert bad.message.startswith("KeyError") and bad.payload == lines[2][1].decode()
    # AND parse_line does the same
    row = parse(lines[2][1])
    assert isinstance(row, RejectedRow) and row.reason_code == "internal_error"


def test_memory_errors_are_not_turned_into_rejections(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.sources.format import MappingContext
    from shared.sources.segment import SegmentFormat

    # GIVEN the process running out of memory while mapping (not the line's fault: a retry may succeed)
    def oom(self: SegmentFormat, raw: bytes, lineage: Lineage, ctx: MappingContext) -> Any:
        raise MemoryError

    monkeypatch.setattr(SegmentFormat, "map", oom)
    # THEN it propagates, so the message is retried instead of its lines being rejected for good
    with pytest.raises(MemoryError):
        parse_lines([(1, json.dumps(SEGMENT_OK).encode())], fmt="segment", lineage=LINEAGE, now=NOW)

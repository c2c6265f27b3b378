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
    covered = {reason for reason, _ in CASES} | {RejectReason.UNKNOWN_FORMAT, RejectReason.INVALID_CSV}
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


def test_parse_lines_pauses_the_collector_only_for_the_batch() -> None:
    import gc

    lines = [(1, json.dumps(TRACK).encode()), (2, b"{nope")]
    assert gc.isenabled()
    # GIVEN the collector on THEN it is on again after the batch
    parse_lines(lines, fmt="segment", lineage=LINEAGE, now=NOW)
    assert gc.isenabled()

    # AND also when the caller's iterable raises mid-batch
    def broken() -> Any:
        yield lines[0]
        raise RuntimeError("reader failed")

    with pytest.raises(RuntimeError):
        parse_lines(broken(), fmt="segment", lineage=LINEAGE, now=NOW)
    assert gc.isenabled()
    # AND a caller that turned it off keeps it off
    gc.disable()
    try:
        parse_lines(lines, fmt="segment", lineage=LINEAGE, now=NOW)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_fast_row_builders_match_the_constructors() -> None:
    from shared.load import parse as p

    # GIVEN the slot-filling builders used on the hot path THEN they are active and build equal, complete rows
    assert p._EVENT_SET is not None and p._LINEAGE_SET is not None
    lineage = p._lineage("segment", "gs://b/o#1", 3, NOW)
    assert lineage == Lineage("segment", "gs://b/o#1", 3, NOW)
    row = p._event_row("c1", NOW, "ev", "id1", lineage, "Europe/Paris", {"k": 1})
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

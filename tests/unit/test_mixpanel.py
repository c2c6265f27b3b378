"""Mixpanel raw event exports (shared.sources.mixpanel) through the loader: mapping, identity, time, reasons, PII."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.load import RejectReason, parse_lines
from shared.privacy import PrivacyPolicy
from shared.warehouse.rows import EventRow, Lineage, RejectedRow
from tests.unit.export_support import EVENTS, captured_line, line_parsers

NOW = datetime(2024, 5, 15, tzinfo=UTC)
LINEAGE = Lineage("mixpanel", "gs://tenant-bucket/mixpanel/3141592/2024/05/14/full_day/export-0.json.gz#5", 1, NOW)
# Personal values of the captured lines (tests/events/mixpanel.ndjson) that must never reach event metadata.
PII = {
    "ip": "203.0.113.42",
    "device id": "B9E6D4B3-3C6F-4E0A-9F21-8E7B2C5D1A90",
    "web device id": "18f6f0c2a1b9c-0d5e7f1a2b3c4d-26011b51-1fa400-18f6f0c2a1b9c",
    "idfa": "6D92078A-8246-4BA4-AE5B-76104861E7DC",
    "city": "London",
    "other city": "Manchester",
    "region": "England",
    "latitude": "51.5072",
    "email": "jane.doe@example.com",
    "phone": "+44 7700 900123",
    "phone in free text": "(415) 555-2671",
    "project token": "6972694d809c7390676a138834f8c890",
}


def captured(n: int, changes: dict[str, Any] | None = None) -> dict[str, Any]:
    """Line ``n`` (1-based) of the captured export, with ``changes`` applied to its ``properties`` (``...`` removes)."""
    return captured_line("mixpanel", n, changes, inside="properties")


parse, event = line_parsers("mixpanel", LINEAGE, NOW)


def test_web_event_maps_to_an_event_row() -> None:
    # GIVEN a captured web SDK event: identified user, epoch seconds, $insert_id
    # WHEN it is loaded
    row = event(captured(1))
    # THEN it is an event of the identified user, at that second in UTC, with Mixpanel's dedup id
    assert (row.contact_id, row.event_name) == ("user_8412", "Support Ticket Opened")
    assert row.timestamp == datetime(2024, 5, 14, 9, 21, 3, tzinfo=UTC)
    assert row.event_instance_id == "5d958f87542d4c109422"
    assert row.lineage == LINEAGE and row.timezone is None
    # AND the event's own and the descriptive default properties are the metadata
    assert row.metadata["priority"] == "high" and row.metadata["ticket_id"] == "T-88231"
    assert (row.metadata["mp_lib"], row.metadata["$os"], row.metadata["$browser"]) == ("web", "Mac OS X", "Chrome")
    assert row.metadata["$current_url"] == "https://acme.example/support"
    # AND the identity, the time and the dedup id are columns, not metadata
    for key in ("distinct_id", "$user_id", "$device_id", "time", "$insert_id", "mp_processing_time_ms"):
        assert key not in row.metadata


def test_mobile_event_keeps_app_os_and_library() -> None:
    # GIVEN a captured iOS event WHEN loaded THEN app version, OS, device model and library survive
    md = event(captured(2)).metadata
    assert md["$app_version_string"] == "5.12.0" and md["$os"] == "iOS" and md["$os_version"] == "17.4.1"
    assert md["$model"] == "iPhone14,5" and md["mp_lib"] == "swift" and md["$lib_version"] == "4.2.0"
    assert md["screen"] == "Settings"


@pytest.mark.parametrize(
    ("time", "expected"),
    [
        (1715678463, datetime(2024, 5, 14, 9, 21, 3, tzinfo=UTC)),  # seconds (the raw export)
        (1715678463000, datetime(2024, 5, 14, 9, 21, 3, tzinfo=UTC)),  # milliseconds (the import API)
        (1715678463.5, datetime(2024, 5, 14, 9, 21, 3, 500000, tzinfo=UTC)),  # fractional seconds
        (1715678463250, datetime(2024, 5, 14, 9, 21, 3, 250000, tzinfo=UTC)),
        (1715678463250.0, datetime(2024, 5, 14, 9, 21, 3, 250000, tzinfo=UTC)),
    ],
)
def test_time_in_seconds_or_milliseconds_is_read_as_utc(time: float, expected: datetime) -> None:
    # GIVEN the same event with its epoch time in seconds or in milliseconds
    # WHEN loaded THEN both are the same UTC instant
    row = event(captured(1, {"time": time}))
    assert row.timestamp == expected and row.timestamp.tzinfo is UTC


def test_the_captured_millisecond_line_is_read_as_milliseconds() -> None:
    row = event(captured(2))
    assert row.timestamp == datetime(2024, 5, 14, 9, 25, 41, 250000, tzinfo=UTC)


def test_identity_is_user_id_then_distinct_id() -> None:
    # GIVEN events with and without $user_id
    # THEN $user_id (the identified user) wins over distinct_id
    assert event(captured(1, {"distinct_id": "anon-1", "$user_id": "user_8412"})).contact_id == "user_8412"
    # AND without it (or with a blank one) distinct_id is the contact, "$device:..." while anonymous
    assert event(captured(1, {"$user_id": ...})).contact_id == "user_8412"
    assert event(captured(1, {"$user_id": "  ", "distinct_id": "anon-1"})).contact_id == "anon-1"
    assert event(captured(2)).contact_id == "$device:B9E6D4B3-3C6F-4E0A-9F21-8E7B2C5D1A90"
    # AND a numeric distinct_id (server-side imports) is kept as a string
    assert event(captured(3)).contact_id == "84120"


def test_missing_insert_id_gets_a_deterministic_content_hash() -> None:
    # GIVEN the captured line without $insert_id, the same content with keys in another order, and other content
    a = event(captured(2))
    reordered = captured(2)
    reordered["properties"] = dict(reversed(list(reordered["properties"].items())))
    b = event(dict(reversed(list(reordered.items()))))
    c = event(captured(2, {"screen": "Profile"}))
    # THEN equal content has an equal id (a re-exported line dedups) and other content another id
    assert len(a.event_instance_id) == 64
    assert a.event_instance_id == b.event_instance_id != c.event_instance_id
    # AND a blank $insert_id is no id
    assert event(captured(1, {"$insert_id": " "})).event_instance_id != " "


def test_timezone_property_is_the_timezone_column() -> None:
    row = event(captured(1, {"$timezone": "Europe/London"}))
    assert row.timezone == "Europe/London" and "$timezone" not in row.metadata


def good() -> dict[str, Any]:
    return captured(1)


CASES: list[tuple[RejectReason, bytes]] = [
    (RejectReason.INVALID_JSON, b'{"event": "x", "properties": {oops}}'),
    (RejectReason.INVALID_JSON, json.dumps(good()).encode()[:-2] + b', "v": NaN}}'),
    (RejectReason.INVALID_UTF8, json.dumps(good()).encode().replace(b"Support", b"Sup\xff\xfeport")),
    (RejectReason.TRUNCATED_LINE, json.dumps(good()).encode()[:200]),
    (RejectReason.NOT_AN_OBJECT, b'[{"event": "x"}]'),
    (RejectReason.NOT_AN_OBJECT, b'"Support Ticket Opened"'),
    (RejectReason.MISSING_EVENT_NAME, json.dumps({"properties": good()["properties"]}).encode()),
    (RejectReason.MISSING_EVENT_NAME, json.dumps({**good(), "event": "  "}).encode()),
    (RejectReason.MISSING_EVENT_NAME, json.dumps({**good(), "event": None}).encode()),
    (RejectReason.MISSING_IDENTITY, json.dumps(captured(1, {"distinct_id": ..., "$user_id": ...})).encode()),
    (RejectReason.MISSING_IDENTITY, json.dumps(captured(1, {"distinct_id": "", "$user_id": None})).encode()),
    (RejectReason.MISSING_IDENTITY, json.dumps({"event": "x"}).encode()),  # no properties at all
    (RejectReason.MISSING_IDENTITY, json.dumps(captured(2, {"distinct_id": ...})).encode()),  # a device id alone
    (RejectReason.MISSING_TIMESTAMP, json.dumps(captured(1, {"time": ...})).encode()),
    (RejectReason.MISSING_TIMESTAMP, json.dumps(captured(1, {"time": None})).encode()),
    (RejectReason.INVALID_TIMESTAMP, json.dumps(captured(1, {"time": "1715678463"})).encode()),
    (RejectReason.INVALID_TIMESTAMP, json.dumps(captured(1, {"time": "2024-05-14T09:21:03Z"})).encode()),
    (RejectReason.INVALID_TIMESTAMP, json.dumps(captured(1, {"time": True})).encode()),
    (RejectReason.INVALID_TIMESTAMP, json.dumps(captured(1, {"time": 0})).encode()),
    (RejectReason.INVALID_TIMESTAMP, json.dumps(captured(1, {"time": -1715678463})).encode()),
    (RejectReason.INVALID_TIMESTAMP, json.dumps(captured(1, {"time": 1})).encode().replace(b": 1,", b": 1e400,", 1)),
    (RejectReason.FUTURE_TIMESTAMP, json.dumps(captured(1, {"time": 1_900_000_000})).encode()),
    (RejectReason.INVALID_FIELD, json.dumps({**good(), "event": 5}).encode()),
    (RejectReason.INVALID_FIELD, json.dumps({**good(), "properties": ["time", 1715678463]}).encode()),
    (
        RejectReason.INVALID_FIELD,
        json.dumps(captured(1, {"distinct_id": {"id": "user_8412"}, "$user_id": ...})).encode(),
    ),
    (RejectReason.LINE_TOO_LARGE, json.dumps(captured(1, {"blob": "x" * 1_100_000})).encode()),
]


@pytest.mark.parametrize(("reason", "raw"), CASES, ids=[f"{r}-{i}" for i, (r, _) in enumerate(CASES)])
def test_each_bad_line_is_rejected_with_its_reason(reason: RejectReason, raw: bytes) -> None:
    # GIVEN a Mixpanel line that is bad in one specific way WHEN loaded
    row = parse(raw)
    # THEN it is a rejected row with that reason, a message, and the line as payload
    assert isinstance(row, RejectedRow), row
    assert row.reason_code == reason, row.message
    assert row.message
    assert row.lineage.source_format == "mixpanel"


def test_a_time_far_after_mixpanel_processed_it_is_in_the_future() -> None:
    # GIVEN a time 25 h after mp_processing_time_ms, but before the loader's clock + 24 h
    line = captured(1, {"time": int(datetime(2024, 5, 15, 10, 30, tzinfo=UTC).timestamp())})
    # THEN Mixpanel's processing time is the reference (the same line always gets the same verdict): rejected
    row = parse(line)
    assert isinstance(row, RejectedRow) and row.reason_code == RejectReason.FUTURE_TIMESTAMP
    # AND without a processing time the batch's received time is the reference: accepted
    assert isinstance(parse(captured(1, {"time": line["properties"]["time"], "mp_processing_time_ms": ...})), EventRow)


def test_event_metadata_holds_no_personal_data() -> None:
    # GIVEN the captured lines, which carry IP, device and advertising ids, geolocation, the project token, and an
    # email and phone numbers among the event's own properties
    rows = [event(captured(n)) for n in (1, 2, 3)]
    # WHEN loaded THEN none of those values appears anywhere in any event's metadata
    dump = "\n".join(json.dumps(r.metadata, ensure_ascii=False) for r in rows)
    leaks = {what for what, value in PII.items() if value in dump}
    assert leaks == set()
    for key in ("ip", "$city", "$region", "mp_country_code", "$latitude", "$longitude", "$ios_ifa", "token", "email"):
        assert all(key not in r.metadata for r in rows)
    # AND the non-personal properties survive
    assert rows[2].metadata == {"$import": True, "plan": "premium", "amount": 9.99, "currency": "EUR"}


def test_hash_mode_hashes_personal_properties_but_drops_ids_and_location() -> None:
    # GIVEN a tenant policy that keeps personal values joinable as salted hashes
    policy = PrivacyPolicy(mode="hash", salt="tenant-salt")
    md = event(captured(1), policy=policy).metadata
    # THEN the email property is a pseudonym, while device ids and location are gone (a hashed id still tracks)
    assert md["email"].startswith("sha256:")
    assert not {"$city", "$region", "mp_country_code", "$device_id"} & set(md)
    text = json.dumps(md)
    assert PII["email"] not in text and PII["city"] not in text and PII["web device id"] not in text


def test_a_whole_export_file_is_one_row_per_line() -> None:
    # GIVEN the captured export file plus a bad line
    lines = [*(EVENTS / "mixpanel.ndjson").read_bytes().splitlines(), b'{"event": "x"}']
    batch_lineage = Lineage("mixpanel", LINEAGE.origin, None, NOW)
    # WHEN parsed as a batch
    batch = parse_lines(enumerate(lines, 1), fmt="mixpanel", lineage=batch_lineage, now=NOW)
    # THEN every line is one row, numbered, and the rows serialise for BigQuery
    assert [r.lineage.line_number for r in batch.rows] == [1, 2, 3]
    assert all(isinstance(r, EventRow) and r.lineage.source_format == "mixpanel" for r in batch.rows)
    assert batch.reasons() == {"missing_identity": 1} and batch.rejected[0].lineage.line_number == 4
    for row in [*batch.rows, *batch.rejected]:
        json.dumps(row.to_bq(NOW))

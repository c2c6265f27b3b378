"""Amplitude raw event exports (shared.sources.amplitude) through the loader: mapping, identity, time, reasons, PII,
and ``$identify`` lines as user properties."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.load import RejectReason, parse_lines
from shared.privacy import PrivacyPolicy
from shared.warehouse.rows import Lineage, RejectedRow, UserPropertiesRow
from tests.unit.export_support import EVENTS, captured_line, line_parsers

NOW = datetime(2024, 5, 15, tzinfo=UTC)
LINEAGE = Lineage("amplitude", "gs://tenant-bucket/amplitude/187520/187520_2024-05-14_9#1.json.gz#7", 1, NOW)
# Personal values of the captured lines (tests/events/amplitude.ndjson) that must never reach event metadata.
PII = {
    "ip": "203.0.113.42",
    "other ip": "198.51.100.7",
    "android ip": "192.0.2.10",
    "device id": "B9E6D4B3-3C6F-4E0A-9F21-8E7B2C5D1A90",
    "web device id": "2b6c1f3e-0d9a-4e8b-b7c6-5d4e3f2a1b0c",
    "idfa": "6D92078A-8246-4BA4-AE5B-76104861E7DC",
    "adid": "38400000-8cf0-11bd-b23e-10b96e40000d",
    "amplitude id": "987654321",
    "city": "London",
    "other city": "Manchester",
    "region": "England",
    "latitude": "51.5072",
    "longitude": "13.405",
    "email": "jane.doe@example.com",
    "phone in free text": "(415) 555-2671",
    "user property": "premium",
}
IDENTIFY_LINE = 3


def captured(n: int, changes: dict[str, Any] | None = None) -> dict[str, Any]:
    """Line ``n`` (1-based) of the captured export, with ``changes`` applied (``...`` removes)."""
    return captured_line("amplitude", n, changes)


parse, event = line_parsers("amplitude", LINEAGE, NOW)


def test_ios_event_maps_to_an_event_row() -> None:
    # GIVEN a captured iOS event of a known user
    # WHEN it is loaded
    row = event(captured(1))
    # THEN it is an event of user_id, at event_time (Amplitude's skew-corrected time) read as UTC, id $insert_id
    assert (row.contact_id, row.event_name) == ("user_8412", "Support Ticket Opened")
    assert row.timestamp == datetime(2024, 5, 14, 9, 21, 3, 629000, tzinfo=UTC)
    assert row.event_instance_id == "9d6e2f4a-7c1b-4e3d-8a5f-0b2c4d6e8f10"
    assert row.lineage == LINEAGE and row.timezone is None
    # AND event_properties are the metadata, with the descriptive fields under "context"
    assert row.metadata["priority"] == "high" and row.metadata["ticket_id"] == "T-88231"
    assert row.metadata["context"] == {
        "platform": "iOS",
        "os_name": "ios",
        "os_version": "17.4.1",
        "version_name": "5.12.0",
        "start_version": "5.10.0",
        "language": "English",
        "library": "amplitude-swift/1.4.3",
        "device_type": "Apple iPhone 13",
        "device_family": "Apple iPhone",
        "device_brand": "Apple",
        "device_manufacturer": "Apple",
        "device_model": "iPhone14,5",
        "device_carrier": "EE",
        "session_id": 1715678400000,
    }


def test_web_event_of_an_anonymous_visitor() -> None:
    # GIVEN a captured web event: user_id null, no $insert_id, ISO "T" times
    row = event(captured(2))
    # THEN the device is the contact, Amplitude's uuid the id, and the time is UTC
    assert row.contact_id == "2b6c1f3e-0d9a-4e8b-b7c6-5d4e3f2a1b0c"
    assert row.event_instance_id == "c7d8e9f0-1a2b-4c3d-9e4f-5a6b7c8d9e0f"
    assert row.timestamp == datetime(2024, 5, 14, 9, 25, 41, 250000, tzinfo=UTC)
    assert row.event_name == "[Amplitude] Page Viewed" and row.metadata["[Amplitude] Page Path"] == "/pricing"
    assert row.metadata["context"]["platform"] == "Web" and row.metadata["context"]["language"] == "en-GB"


def test_identity_is_user_id_then_device_id() -> None:
    # GIVEN events with and without a user_id
    # THEN user_id wins; null, blank or absent falls back to device_id; a numeric user_id is a string
    assert event(captured(1)).contact_id == "user_8412"
    for missing in (None, "", "   ", ...):
        row = event(captured(1, {"user_id": missing}))
        assert row.contact_id == "B9E6D4B3-3C6F-4E0A-9F21-8E7B2C5D1A90"
    assert event(captured(1, {"user_id": 84120})).contact_id == "84120"


def test_event_id_is_insert_id_then_uuid_then_a_content_hash() -> None:
    assert event(captured(1)).event_instance_id == "9d6e2f4a-7c1b-4e3d-8a5f-0b2c4d6e8f10"
    assert event(captured(1, {"$insert_id": None})).event_instance_id == "a3f1c2de-5b6a-4c8d-9e0f-1a2b3c4d5e6f"
    # GIVEN neither id, the same content in another key order, and other content
    a = event(captured(1, {"$insert_id": ..., "uuid": ...}))
    b = event(dict(reversed(list(captured(1, {"$insert_id": ..., "uuid": ...}).items()))))
    c = event(captured(1, {"$insert_id": ..., "uuid": ..., "event_type": "Other"}))
    # THEN equal content has an equal id (a re-exported line dedups) and other content another
    assert len(a.event_instance_id) == 64 and a.event_instance_id == b.event_instance_id != c.event_instance_id


@pytest.mark.parametrize(
    ("event_time", "expected"),
    [
        ("2024-05-14 09:21:03.629000", datetime(2024, 5, 14, 9, 21, 3, 629000, tzinfo=UTC)),  # the export's format
        ("2024-05-14 09:21:03", datetime(2024, 5, 14, 9, 21, 3, tzinfo=UTC)),
        ("2024-05-14T09:21:03.629000", datetime(2024, 5, 14, 9, 21, 3, 629000, tzinfo=UTC)),  # the S3 schema's
        ("2024-05-14T09:21:03.629Z", datetime(2024, 5, 14, 9, 21, 3, 629000, tzinfo=UTC)),
        ("2024-05-14T11:21:03.629+02:00", datetime(2024, 5, 14, 9, 21, 3, 629000, tzinfo=UTC)),  # a zone is honoured
    ],
)
def test_event_time_without_a_zone_is_utc(event_time: str, expected: datetime) -> None:
    # GIVEN event_time in the space-separated UTC form Amplitude exports, or ISO forms
    row = event(captured(1, {"event_time": event_time}))
    # THEN it is that instant, in datetime.UTC
    assert row.timestamp == expected and row.timestamp.tzinfo is UTC


def test_time_falls_back_to_client_then_server_times() -> None:
    row = event(captured(1, {"event_time": None}))
    assert row.timestamp == datetime(2024, 5, 14, 9, 21, 3, 112000, tzinfo=UTC)  # client_event_time
    row = event(captured(1, {"event_time": ..., "client_event_time": ...}))
    assert row.timestamp == datetime(2024, 5, 14, 9, 21, 4, 518000, tzinfo=UTC)  # server_received_time


def test_a_time_far_after_amplitude_received_it_is_in_the_future() -> None:
    # GIVEN an event_time 25 h after server_received_time, yet less than 24 h after the loader's clock
    line = captured(1, {"event_time": "2024-05-15 10:30:00.000000"})
    # THEN Amplitude's receive time is the reference (the same line always gets the same verdict): rejected
    row = parse(line)
    assert isinstance(row, RejectedRow) and row.reason_code == RejectReason.FUTURE_TIMESTAMP
    assert row.message.startswith("timestamp 2024-05-15T10:30:00+00:00")


def good() -> dict[str, Any]:
    return captured(1)


ALL_TIMES = {"event_time": ..., "client_event_time": ..., "server_received_time": ..., "server_upload_time": ...}
CASES: list[tuple[RejectReason, bytes]] = [
    (RejectReason.INVALID_JSON, b'{"event_type": "x", oops}'),
    (RejectReason.INVALID_JSON, json.dumps(good()).encode()[:-1] + b', "v": NaN}'),
    (RejectReason.INVALID_JSON, json.dumps(good()).encode()[:-1] + b', "v": -Infinity}'),
    (RejectReason.INVALID_UTF8, json.dumps(good()).encode().replace(b"Support", b"Sup\xff\xfeport")),
    (RejectReason.INVALID_UNICODE, json.dumps(good()).encode().replace(b"Support", b"Sup\\ud800port")),
    (RejectReason.TRUNCATED_LINE, json.dumps(good()).encode()[:300]),
    (RejectReason.NOT_AN_OBJECT, b'[{"event_type": "x"}]'),
    (RejectReason.NOT_AN_OBJECT, b"null"),
    (RejectReason.MISSING_EVENT_NAME, json.dumps(captured(1, {"event_type": ...})).encode()),
    (RejectReason.MISSING_EVENT_NAME, json.dumps(captured(1, {"event_type": " "})).encode()),
    (RejectReason.MISSING_EVENT_NAME, json.dumps(captured(1, {"event_type": None})).encode()),
    (RejectReason.MISSING_IDENTITY, json.dumps(captured(1, {"user_id": None, "device_id": None})).encode()),
    (RejectReason.MISSING_IDENTITY, json.dumps(captured(1, {"user_id": "", "device_id": ...})).encode()),
    (RejectReason.MISSING_IDENTITY, json.dumps(captured(IDENTIFY_LINE, {"user_id": ..., "device_id": ...})).encode()),
    (RejectReason.MISSING_TIMESTAMP, json.dumps(captured(1, ALL_TIMES)).encode()),
    (RejectReason.INVALID_TIMESTAMP, json.dumps(captured(1, {"event_time": "yesterday"})).encode()),
    (RejectReason.INVALID_TIMESTAMP, json.dumps(captured(1, {"event_time": "2024-05-14"})).encode()),  # no time
    (RejectReason.INVALID_TIMESTAMP, json.dumps(captured(1, {"event_time": 1715678463629})).encode()),  # epoch
    (RejectReason.INVALID_TIMESTAMP, json.dumps(captured(1, {"server_upload_time": "2024-13-01 00:00:00"})).encode()),
    (RejectReason.FUTURE_TIMESTAMP, json.dumps(captured(1, {"event_time": "2999-01-01 00:00:00.000000"})).encode()),
    (RejectReason.INVALID_FIELD, json.dumps(captured(1, {"event_type": {"name": "x"}})).encode()),
    (RejectReason.INVALID_FIELD, json.dumps(captured(1, {"user_id": ["user_8412"]})).encode()),
    (RejectReason.INVALID_FIELD, json.dumps(captured(1, {"event_properties": ["priority", "high"]})).encode()),
    (RejectReason.INVALID_FIELD, json.dumps(captured(1, {"user_properties": "plan=premium"})).encode()),
    (RejectReason.LINE_TOO_LARGE, json.dumps(captured(1, {"event_properties": {"blob": "x" * 1_100_000}})).encode()),
]


@pytest.mark.parametrize(("reason", "raw"), CASES, ids=[f"{r}-{i}" for i, (r, _) in enumerate(CASES)])
def test_each_bad_line_is_rejected_with_its_reason(reason: RejectReason, raw: bytes) -> None:
    # GIVEN an Amplitude line that is bad in one specific way WHEN loaded
    row = parse(raw)
    # THEN it is a rejected row with that reason, a message, and the line as payload
    assert isinstance(row, RejectedRow), row
    assert row.reason_code == reason, row.message
    assert row.message
    assert row.lineage.source_format == "amplitude"


def test_event_metadata_holds_no_personal_data() -> None:
    # GIVEN the captured events, carrying IP addresses, device ids, IDFA and ADID, amplitude_id, city, region,
    # coordinates, user_properties, and an email and a phone number among the event properties
    rows = [event(captured(n)) for n in (1, 2, 4)]
    # WHEN loaded THEN none of those values appears anywhere in any event's metadata
    dump = "\n".join(json.dumps(r.metadata, ensure_ascii=False) for r in rows)
    leaks = {what for what, value in PII.items() if value in dump}
    assert leaks == set()
    for key in ("ip_address", "idfa", "adid", "device_id", "amplitude_id", "city", "region", "country", "dma",
                "location_lat", "location_lng", "user_properties", "contact_email"):  # fmt: skip
        assert all(key not in r.metadata and key not in r.metadata.get("context", {}) for r in rows)
    # AND the non-personal event properties survive
    assert rows[2].metadata["order_id"] == "O-5521" and rows[2].metadata["total"] == 42.5


def test_hash_mode_hashes_personal_properties_but_never_adds_ids_or_location() -> None:
    md = event(captured(1), policy=PrivacyPolicy(mode="hash", salt="tenant-salt")).metadata
    assert md["contact_email"].startswith("sha256:") and md["note"].startswith("sha256:")
    text = json.dumps(md)
    assert PII["email"] not in text and PII["idfa"] not in text and PII["ip"] not in text and "London" not in text


def test_identify_line_is_user_properties() -> None:
    # GIVEN a captured $identify line (user property updates, no action)
    # WHEN it is loaded
    row = parse(captured(IDENTIFY_LINE))
    # THEN it is a user_properties row of the same contact the user's events have, at event_time
    assert isinstance(row, UserPropertiesRow)
    assert row.contact_id == "user_8412"
    assert row.updated_at == datetime(2024, 5, 14, 9, 20, 11, tzinfo=UTC)
    assert row.event_instance_id == "identify-8412-1"
    # AND the contact addresses, timezone and country are columns; the rest stays in properties
    assert (row.email_address, row.phone_number, row.timezone) == (
        "jane.doe@example.com",
        "+447700900123",
        "Europe/London",
    )
    assert row.country == "United Kingdom"  # Amplitude's geo country, as no country user property is set
    assert row.push_token is None
    assert row.properties == {"plan": "premium", "first_name": "Jane"}
    assert row.lineage.source_format == "amplitude"


def test_identify_unwraps_set_operations_and_prefers_a_country_property() -> None:
    # GIVEN an $identify whose user_properties still hold Identify API operations, and a country property
    ops = {
        "plan": "basic",
        "$set": {"plan": "premium", "phone_number": "+4915112345678", "country": "DE"},
        "$setOnce": {"plan": "trial", "initial_source": "ad"},
        "$add": {"logins": 1},
        "$unset": {"old": "-"},
    }
    row = parse(captured(IDENTIFY_LINE, {"user_properties": ops}))
    # THEN $set wins, $setOnce fills only what is unknown, other operations are not values
    assert isinstance(row, UserPropertiesRow)
    assert row.properties == {"plan": "premium", "initial_source": "ad"}
    assert (row.phone_number, row.country, row.email_address) == ("+4915112345678", "DE", None)


def test_identify_of_an_anonymous_device_and_without_properties() -> None:
    row = parse(captured(IDENTIFY_LINE, {"user_id": None, "user_properties": None}))
    assert isinstance(row, UserPropertiesRow)
    assert row.contact_id == "B9E6D4B3-3C6F-4E0A-9F21-8E7B2C5D1A90" and row.properties == {}


def test_a_whole_export_file_is_one_row_per_line() -> None:
    # GIVEN the captured export file plus a bad line
    lines = [*(EVENTS / "amplitude.ndjson").read_bytes().splitlines(), b'{"event_type": "x", "user_id": "u"}']
    batch_lineage = Lineage("amplitude", LINEAGE.origin, None, NOW)
    # WHEN parsed as a batch
    batch = parse_lines(enumerate(lines, 1), fmt="amplitude", lineage=batch_lineage, now=NOW)
    # THEN three events, one user_properties row, one rejection, each with its line number
    assert [(type(r).__name__, r.lineage.line_number) for r in batch.rows] == [
        ("EventRow", 1),
        ("EventRow", 2),
        ("UserPropertiesRow", 3),
        ("EventRow", 4),
    ]
    assert batch.reasons() == {"missing_timestamp": 1} and batch.rejected[0].lineage.line_number == 5
    for row in [*batch.rows, *batch.rejected]:
        json.dumps(row.to_bq(NOW))

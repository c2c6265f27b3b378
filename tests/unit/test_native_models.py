"""The native data model for direct publishers: events and user-properties records."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.load import RejectReason, parse_line
from shared.sources.native import NATIVE_ADAPTER, NativeEvent, NativeUserProperties
from shared.warehouse.rows import EventRow, Lineage, RejectedRow, UserPropertiesRow

EVENTS = Path(__file__).resolve().parents[1] / "events"
NOW = datetime(2024, 5, 15, tzinfo=UTC)
LINEAGE = Lineage("native", "pubsub://raw-events/123", 1, NOW)


def sample(name: str, **changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    record.update(changes)
    return {k: v for k, v in record.items() if v is not ...}


def parse(record: dict[str, Any]) -> EventRow | UserPropertiesRow | RejectedRow:
    return parse_line(json.dumps(record).encode(), fmt="native", lineage=LINEAGE, now=NOW)


def test_native_event_maps_to_event_row_without_pii() -> None:
    # GIVEN a native event with a +05:30 timestamp and an email hidden in metadata
    row = parse(sample("native_event"))
    # THEN it is an event at the UTC instant, with the email scrubbed and a content-hash id
    assert isinstance(row, EventRow)
    assert (row.contact_id, row.event_name, row.timezone) == ("user_8412", "subscription_renewed", "Asia/Kolkata")
    assert row.timestamp == datetime(2024, 5, 14, 9, 30, tzinfo=UTC)
    assert row.metadata == {"plan": "premium", "amount": 9.99, "currency": "EUR"}
    assert len(row.event_instance_id) == 64


def test_native_event_id_is_a_deterministic_content_hash() -> None:
    # GIVEN the same event twice, once with another key order and the same instant in another offset
    a = parse(sample("native_event"))
    b = parse(dict(reversed(list(sample("native_event", timestamp="2024-05-14T09:30:00Z").items()))))
    c = parse(sample("native_event", metadata={"plan": "basic"}))
    # THEN the ids match; other content gets another id; a publisher's id is kept as is
    assert isinstance(a, EventRow) and isinstance(b, EventRow) and isinstance(c, EventRow)
    assert a.event_instance_id == b.event_instance_id != c.event_instance_id
    own = parse(sample("native_event", event_instance_id="evt-1"))
    assert isinstance(own, EventRow) and own.event_instance_id == "evt-1"


def test_native_user_properties_maps_to_user_properties_row() -> None:
    row = parse(sample("native_user_properties"))
    assert isinstance(row, UserPropertiesRow)
    assert row.email_address == "jane.doe@example.com" and row.phone_number == "+447700900123"
    assert row.country == "GB" and row.push_token and row.updated_at == datetime(2024, 5, 14, 9, 20, 11, tzinfo=UTC)
    assert row.properties == {"plan": "premium", "first_name": "Jane"}
    again = parse(sample("native_user_properties"))
    assert isinstance(again, UserPropertiesRow) and again.event_instance_id == row.event_instance_id


def test_kind_defaults_from_the_fields() -> None:
    # GIVEN records without "kind"
    event = NATIVE_ADAPTER.validate_json(json.dumps(sample("native_event", kind=...)))
    props = NATIVE_ADAPTER.validate_json(b'{"contact_id": "u1", "push_token": "tok"}')
    # THEN event_name means event, profile fields mean user properties
    assert type(event) is NativeEvent and type(props) is NativeUserProperties
    # AND user properties without updated_at are stamped with the batch's received_at
    row = parse({"contact_id": "u1", "timezone": "Europe/Paris", "country": "FR"})
    assert isinstance(row, UserPropertiesRow) and row.updated_at == NOW


def test_native_rejections_use_the_shared_reason_codes() -> None:
    cases = {
        RejectReason.UNKNOWN_TYPE: sample("native_event", kind="purchase"),
        RejectReason.MISSING_IDENTITY: sample("native_event", contact_id=" "),
        RejectReason.MISSING_EVENT_NAME: sample("native_event", event_name=...),
        RejectReason.INVALID_TIMESTAMP: sample("native_event", timestamp="2024-05-14 09:30"),
        RejectReason.FUTURE_TIMESTAMP: sample("native_event", timestamp="2024-06-14T09:30:00Z"),
        RejectReason.INVALID_FIELD: sample("native_event", metadata=[1, 2]),
    }
    for reason, record in cases.items():
        row = parse(record)
        assert isinstance(row, RejectedRow) and row.reason_code == reason, (reason, row)
    row = parse_line(b"[1, 2]", fmt="native", lineage=LINEAGE, now=NOW)
    assert isinstance(row, RejectedRow) and row.reason_code == RejectReason.NOT_AN_OBJECT

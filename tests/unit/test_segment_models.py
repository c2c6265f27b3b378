"""Segment spec types: validation rules and the mapping of each call type to rows."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shared.load import RejectReason, parse_line
from shared.sources.segment import SEGMENT_ADAPTER, Alias, Group, Identify, Page, Screen, Track
from shared.warehouse.rows import EventRow, Lineage, RejectedRow, UserPropertiesRow

EVENTS = Path(__file__).resolve().parents[1] / "events"
NOW = datetime(2024, 5, 15, tzinfo=UTC)
LINEAGE = Lineage("segment", "gs://tenant-bucket/segment-logs/src/1715644800000/a.gz#17", 1, NOW)


def sample(name: str, **changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    event.update(changes)
    return event


def parse(event: dict[str, Any] | bytes) -> EventRow | UserPropertiesRow | RejectedRow:
    raw = event if isinstance(event, bytes) else json.dumps(event).encode()
    return parse_line(raw, fmt="segment", lineage=LINEAGE, now=NOW)


@pytest.mark.parametrize(
    ("name", "model"),
    [("track", Track), ("identify", Identify), ("page", Page), ("screen", Screen), ("group", Group), ("alias", Alias)],
)
def test_each_sample_validates_as_its_spec_type(name: str, model: type) -> None:
    # GIVEN a captured Segment call of each type
    raw = (EVENTS / f"{name}.json").read_bytes()
    # WHEN validated through the discriminated union
    msg = SEGMENT_ADAPTER.validate_json(raw)
    # THEN it becomes the model of its type, with UTC event time and a contact
    assert type(msg) is model
    assert msg.event_time is not None and msg.event_time.tzinfo is UTC
    assert msg.contact_id


def test_track_maps_to_event_row() -> None:
    # GIVEN a mobile track call WHEN parsed
    row = parse(sample("track"))
    # THEN event_name is `event`, the id is messageId, contact is userId, timezone comes from context
    assert isinstance(row, EventRow)
    assert row.event_name == "Order Completed"
    assert row.event_instance_id == "ajs-next-9d0f6ec4e3b54f2f8a4b0f52c1c6b0a1"
    assert row.contact_id == "user_8412"
    assert row.timezone == "Europe/London"
    assert row.timestamp == datetime(2024, 5, 14, 9, 21, 3, 629000, tzinfo=UTC)
    assert row.timestamp.tzinfo is UTC
    # AND metadata holds the properties and non-personal context only
    assert row.metadata["order_id"] == "50314b8e9bcf000000000000"
    assert row.metadata["context"]["app"]["version"] == "5.12.0"
    assert row.metadata["context"]["os"] == {"name": "iOS", "version": "17.4.1"}
    assert row.metadata["context"]["device"] == {"manufacturer": "Apple", "model": "iPhone14,5", "type": "ios"}
    assert "ip" not in row.metadata["context"] and "location" not in row.metadata["context"]
    assert row.lineage == LINEAGE


def test_page_maps_to_page_viewed_with_name_and_category() -> None:
    # GIVEN a page call with userId null, an anonymousId, version "1.1" and +05:30 offsets without fractions
    event = sample("page")
    assert event["userId"] is None and event["version"] == "1.1"
    # WHEN parsed
    row = parse(event)
    # THEN it is a page_viewed event of the anonymous contact at the UTC instant
    assert isinstance(row, EventRow)
    assert row.event_name == "page_viewed"
    assert row.contact_id == "507f191e810c19729de860ea"
    assert row.timestamp == datetime(2024, 5, 14, 9, 21, 9, tzinfo=UTC)
    assert row.metadata["name"] == "Pricing" and row.metadata["category"] == "Docs"
    assert row.metadata["context"]["page"]["path"] == "/pricing"
    assert "userAgent" not in row.metadata["context"]


def test_screen_maps_to_screen_viewed() -> None:
    row = parse(sample("screen"))
    assert isinstance(row, EventRow)
    assert row.event_name == "screen_viewed"
    assert row.metadata["name"] == "Home"
    assert row.metadata["variation"] == "blue signup button"


def test_group_keeps_group_id_and_non_personal_traits() -> None:
    # GIVEN a group call whose traits mix company facts and contact details
    row = parse(sample("group"))
    # THEN the event keeps groupId and the non-PII traits only
    assert isinstance(row, EventRow)
    assert row.event_name == "group"
    assert row.metadata["group_id"] == "0e8c78ea9d97a7b8185e8632"
    assert row.metadata["traits"] == {
        "industry": "Technology",
        "employees": 329,
        "plan": "enterprise",
        "total billed": 830,
    }


def test_alias_keeps_previous_id() -> None:
    row = parse(sample("alias"))
    assert isinstance(row, EventRow)
    assert (row.event_name, row.contact_id, row.metadata["previous_id"]) == (
        "alias",
        "user_8412",
        "507f191e810c19729de860ea",
    )


def test_identify_maps_to_user_properties() -> None:
    # GIVEN an identify call with contact traits, a device token and a timezone
    row = parse(sample("identify"))
    # THEN contact addresses are promoted to their columns, the rest stays in properties
    assert isinstance(row, UserPropertiesRow)
    assert row.contact_id == "user_8412"
    assert row.email_address == "jane.doe@example.com"
    assert row.phone_number == "+447700900123"
    assert row.country == "GB"
    assert row.timezone == "Europe/London"
    assert row.push_token and row.push_token.startswith("f07a9c4c")
    assert row.event_instance_id == "8c5f2a4e-5b6d-4c1e-9a3f-2b7d8e9f0a1b"
    assert row.updated_at == datetime(2024, 5, 14, 9, 20, 11, 574000, tzinfo=UTC)
    assert "email" not in row.properties and "phone" not in row.properties
    assert row.properties["plan"] == "premium"


def test_identify_country_falls_back_to_context_location_and_timezone_to_traits() -> None:
    event = sample("identify", traits={"timezone": "Asia/Tokyo"})
    event["context"] = {"location": {"country": "Japan"}}
    row = parse(event)
    assert isinstance(row, UserPropertiesRow)
    assert (row.country, row.timezone, row.push_token) == ("Japan", "Asia/Tokyo", None)


@pytest.mark.parametrize("version", [2, "1.1"])
def test_both_spec_versions_are_accepted(version: int | str) -> None:
    assert isinstance(parse(sample("track", version=version)), EventRow)


def test_capitalised_type_is_rejected() -> None:
    # GIVEN type "Track" (the spec is case-sensitive) THEN the call is rejected as unknown_type
    row = parse(sample("track", type="Track"))
    assert isinstance(row, RejectedRow)
    assert row.reason_code == RejectReason.UNKNOWN_TYPE
    assert "Track" in row.message


def test_user_id_null_and_blank_fall_back_to_anonymous_id() -> None:
    for user_id in (None, "", "   "):
        row = parse(sample("track", userId=user_id))
        assert isinstance(row, EventRow)
        assert row.contact_id == "23adfd82-aa0f-45a7-a756-24f2a7a4c895"


def test_numeric_user_id_becomes_a_string() -> None:
    row = parse(sample("track", userId=8412))
    assert isinstance(row, EventRow) and row.contact_id == "8412"


def test_offsets_without_fractional_seconds_normalise_to_utc() -> None:
    # GIVEN a timestamp with a +05:30 offset and no fractional seconds
    row = parse(sample("track", timestamp="2024-05-14T14:51:09+05:30"))
    # THEN the row time is the same instant in UTC
    assert isinstance(row, EventRow)
    assert row.timestamp == datetime(2024, 5, 14, 9, 21, 9, tzinfo=UTC) and row.timestamp.tzinfo is UTC


def test_event_time_falls_back_to_original_timestamp_then_received_at() -> None:
    event = sample("track")
    del event["timestamp"]
    row = parse(event)
    assert isinstance(row, EventRow) and row.timestamp == datetime(2024, 5, 14, 9, 21, 3, 112000, tzinfo=UTC)
    del event["originalTimestamp"]
    row = parse(event)
    assert isinstance(row, EventRow) and row.timestamp == datetime(2024, 5, 14, 9, 21, 4, 518000, tzinfo=UTC)


def test_extra_fields_are_ignored() -> None:
    row = parse(sample("track", _metadata={"bundled": ["Mixpanel"]}, writeKey="abc", projectId="p1"))
    assert isinstance(row, EventRow)


def test_missing_message_id_gets_a_deterministic_content_hash() -> None:
    # GIVEN the same call without messageId, delivered twice with other key order and another receivedAt
    event = sample("track")
    del event["messageId"]
    again = dict(reversed(list(event.items())), receivedAt="2024-05-14T09:30:00Z")
    first, second = parse(event), parse(again)
    # THEN both get the same 64-hex id, and a different call gets another one
    assert isinstance(first, EventRow) and isinstance(second, EventRow)
    assert first.event_instance_id == second.event_instance_id and len(first.event_instance_id) == 64
    other = parse({**event, "event": "Order Refunded"})
    assert isinstance(other, EventRow) and other.event_instance_id != first.event_instance_id

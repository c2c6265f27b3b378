"""CSV exports in the native data model (shared.sources.csv_export) through the loader: header, mapping, reasons, PII."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from shared.envelopes import PubSubMessage
from shared.load import RejectReason, parse_line, parse_lines
from shared.load.pipeline import parse_message
from shared.sources.csv_export import HeaderError, parse_header, split_line
from shared.warehouse.rows import EventRow, Lineage, RejectedRow, UserPropertiesRow
from tests.unit.export_support import EVENTS

NOW = datetime(2024, 5, 15, tzinfo=UTC)
LINEAGE = Lineage("csv", "gs://tenant-bucket/csv/crm/events.csv#7", None, NOW)
EVENT_LINES = (EVENTS / "csv_events.csv").read_bytes().splitlines()
USER_LINES = (EVENTS / "csv_users.csv").read_bytes().splitlines()
EVENT_HEADER, USER_HEADER = EVENT_LINES[0], USER_LINES[0]
PII = ("jane.doe@example.com", "+44 7700 900123", "B9E6D4B3-3C6F-4E0A-9F21-8E7B2C5D1A90")


def parse(raw: bytes, header: bytes = EVENT_HEADER) -> EventRow | UserPropertiesRow | RejectedRow:
    return parse_line(raw, fmt="csv", lineage=LINEAGE, now=NOW, csv_header=header)


def event(raw: bytes, header: bytes = EVENT_HEADER) -> EventRow:
    row = parse(raw, header)
    assert isinstance(row, EventRow), row
    return row


def rejected(raw: bytes, header: bytes = EVENT_HEADER) -> RejectedRow:
    row = parse(raw, header)
    assert isinstance(row, RejectedRow), row
    return row


def test_event_line_maps_to_an_event_row_with_string_metadata() -> None:
    # GIVEN the first data line of the sample events file
    # WHEN it is loaded with the file's header
    row = event(EVENT_LINES[1])
    # THEN the named columns are the event's fields
    assert (row.contact_id, row.event_name, row.event_instance_id) == ("user_8412", "Order Completed", "evt-0001")
    assert row.timestamp == datetime(2024, 5, 14, 9, 21, 3, tzinfo=UTC) and row.timezone == "Europe/London"
    # AND every other column is metadata, as a string, a quoted comma included
    assert row.metadata["plan"] == "pro" and row.metadata["order_total"] == "42.50"
    assert row.metadata["note"] == "gift wrap, please" and row.metadata["page"] == "/checkout"
    assert row.lineage == LINEAGE


def test_event_metadata_is_scrubbed_of_pii() -> None:
    # GIVEN sample lines with an email column, a device id column and a phone number in free text
    rows = [event(line) for line in EVENT_LINES[1:]]
    # WHEN loaded THEN no personal value and no personal key reaches metadata
    for row in rows:
        dump = repr(row.metadata)
        assert not [value for value in PII if value in dump]
        assert "email" not in row.metadata and "device_id" not in row.metadata
    # AND the descriptive columns survive
    assert rows[1].metadata == {"plan": "pro", "page": "/support"}


def test_empty_cells_are_absent_values() -> None:
    # GIVEN a line with empty optional cells (no event_instance_id, no order_total, no email...)
    row = event(EVENT_LINES[3])
    # WHEN loaded THEN they are neither fields nor metadata keys, and the id is a stable content hash
    assert set(row.metadata) == {"plan", "note"} and row.metadata["note"] == 'She said "hi"'
    assert row.event_instance_id and row.event_instance_id == event(EVENT_LINES[3]).event_instance_id
    # AND an empty timezone cell is no timezone
    assert event(EVENT_LINES[2]).timezone is None


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2024-05-14T09:21:03Z", datetime(2024, 5, 14, 9, 21, 3, tzinfo=UTC)),
        ("2024-05-14T11:21:03+02:00", datetime(2024, 5, 14, 9, 21, 3, tzinfo=UTC)),
        ("2024-05-14T02:21:03.250-07:00", datetime(2024, 5, 14, 9, 21, 3, 250000, tzinfo=UTC)),
    ],
)
def test_timestamps_with_offsets_are_stored_in_utc(stamp: str, expected: datetime) -> None:
    # GIVEN the same event with its timestamp in several zones WHEN loaded THEN it is the same UTC instant
    row = event(f"u1,Viewed,{stamp},,,,,,,,".encode())
    assert row.timestamp == expected and row.timestamp.tzinfo is UTC


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b",Viewed,2024-05-14T09:21:03Z,,,,,,,,", RejectReason.MISSING_IDENTITY),
        (b" ,Viewed,2024-05-14T09:21:03Z,,,,,,,,", RejectReason.MISSING_IDENTITY),
        (b"u1,,2024-05-14T09:21:03Z,,,,,,,,", RejectReason.MISSING_EVENT_NAME),
        (b"u1,Viewed,,,,,,,,,", RejectReason.MISSING_TIMESTAMP),
        (b"u1,Viewed,2024-05-14T09:21:03,,,,,,,,", RejectReason.INVALID_TIMESTAMP),  # no zone
        (b"u1,Viewed,yesterday,,,,,,,,", RejectReason.INVALID_TIMESTAMP),
        (b"u1,Viewed,2030-01-01T00:00:00Z,,,,,,,,", RejectReason.FUTURE_TIMESTAMP),
        (b"u1,Viewed,2024-05-14T09:21:03Z", RejectReason.INVALID_CSV),  # too few fields
        (b"u1,Viewed,2024-05-14T09:21:03Z,,,,,,,,,extra", RejectReason.INVALID_CSV),  # too many
        (b'u1,Viewed,2024-05-14T09:21:03Z,,,,,,"starts a field that spans lines,,', RejectReason.INVALID_CSV),
        (b'ends a field that spanned lines",Viewed,2024-05-14T09:21:03Z,,,,,,,,', RejectReason.INVALID_CSV),
        (b'u1,Viewed,2024-05-14T09:21:03Z,,,,,,"a"b,,', RejectReason.INVALID_CSV),  # text after a closing quote
        (b"u1,Viewed,2024-05-14T09:21:03Z,,,,,,\xff,,", RejectReason.INVALID_UTF8),
    ],
)
def test_bad_lines_are_rejected_with_a_reason(line: bytes, reason: RejectReason) -> None:
    # GIVEN a data line that breaks one rule WHEN loaded THEN it is rejected with that rule's reason code
    row = rejected(line)
    assert row.reason_code == reason, row.message
    assert row.payload == line.decode("utf-8", errors="replace")


def test_unbalanced_quote_and_field_count_messages_say_what_is_wrong() -> None:
    assert "unbalanced quote" in rejected(b'u1,"Viewed,2024-05-14T09:21:03Z,,,,,,,,').message
    assert rejected(b"u1,Viewed").message == "2 fields, but the header has 11 columns"


def test_user_properties_file_maps_to_user_properties_rows() -> None:
    # GIVEN the sample user-properties file (no event_name column, profile columns)
    first = parse(USER_LINES[1], USER_HEADER)
    second = parse(USER_LINES[2], USER_HEADER)
    # WHEN loaded THEN each line is the contact's user_properties row, addresses in their columns
    assert isinstance(first, UserPropertiesRow) and isinstance(second, UserPropertiesRow)
    assert (first.contact_id, first.email_address, first.phone_number) == (
        "user_8412",
        "jane.doe@example.com",
        "+447700900123",
    )
    assert (first.country, first.push_token, first.timezone) == ("United Kingdom", "fcm-token-8412", "Europe/London")
    assert first.updated_at == datetime(2024, 5, 14, 9, tzinfo=UTC)
    # AND the other columns are properties, as strings; empty cells are absent
    assert first.properties == {"plan": "pro", "favourite_colour": "green, mostly"}
    assert second.properties == {"plan": "free"} and second.email_address is None and second.push_token is None
    assert second.updated_at == datetime(2024, 5, 14, 17, 30, tzinfo=UTC)


def test_user_properties_without_updated_at_take_the_receive_time() -> None:
    row = parse(b"u1,FR", b"contact_id,country")
    assert isinstance(row, UserPropertiesRow) and row.updated_at == NOW and row.country == "FR"


@pytest.mark.parametrize(
    ("header", "words"),
    [
        (b"contact_id,event_name,plan", ["timestamp"]),
        (b"event_name,timestamp", ["contact_id"]),
        (b"user,name,when", ["contact_id", "event_name", "timestamp"]),  # neither kind: read as events
        (b"email_address,country", ["contact_id"]),  # user properties need contact_id
        (b"contact_id,event_name,timestamp,plan,plan", ["duplicate", "plan"]),
        (b"contact_id,event_name,timestamp,,plan", ["empty column name", "4"]),
        (b'contact_id,"event_name,timestamp', ["not a CSV line"]),
    ],
)
def test_bad_header_names_the_columns(header: bytes, words: list[str]) -> None:
    # GIVEN a header missing a required column, repeating one, or not CSV
    # WHEN it is checked
    with pytest.raises(HeaderError) as info:
        parse_header(header)
    # THEN the error names the columns (the ingest records it as the file's rejection reason)
    assert info.value.reason == "invalid_csv_header"
    for word in words:
        assert word in info.value.message
    # AND a line that still arrives with it (a direct publisher) is rejected, not loaded
    assert rejected(b"u1,a,b,c,d", header).reason_code == RejectReason.INVALID_CSV


def test_header_kind_bom_and_spaces() -> None:
    assert parse_header(b"\xef\xbb\xbfcontact_id, event_name ,timestamp\r").columns == (
        "contact_id",
        "event_name",
        "timestamp",
    )
    assert parse_header(EVENT_HEADER).kind == "event" and parse_header(USER_HEADER).kind == "user_properties"
    assert split_line(b'a,"b,c",""""') == ["a", "b,c", '"']


def test_a_line_without_header_is_rejected() -> None:
    row = parse_line(EVENT_LINES[1], fmt="csv", lineage=LINEAGE, now=NOW)
    assert isinstance(row, RejectedRow) and row.reason_code == RejectReason.INVALID_CSV


def test_batch_message_carries_the_header_first_and_keeps_line_numbers() -> None:
    # GIVEN a csv batch as ingest publishes it: the header row, then data lines 5 and 7 (line 6 was blank)
    payload = b"\n".join([EVENT_HEADER, EVENT_LINES[1], b"u1,Viewed"])
    message = PubSubMessage.model_validate(
        {
            "data": base64.b64encode(payload).decode(),
            "messageId": "m1",
            "attributes": {
                "format": "csv",
                "origin": LINEAGE.origin,
                "first_line": "5",
                "last_line": "7",
                "skipped_lines": "6",
            },
        }
    )
    # WHEN the loader reads it
    parsed = parse_message(message)
    # THEN the header is not a record, and each line keeps its number in the file
    [row] = parsed.rows
    [bad] = parsed.rejected
    assert isinstance(row, EventRow) and row.lineage.line_number == 5
    assert bad.lineage.line_number == 7 and bad.reason_code == RejectReason.INVALID_CSV
    # AND the rejected line's payload is its header and the line: a one-line CSV message a replay can republish
    assert bad.payload == EVENT_HEADER.decode() + "\nu1,Viewed"
    replayed = PubSubMessage.model_validate(
        {
            "data": base64.b64encode(bad.payload.encode()).decode(),
            "messageId": "m2",
            "attributes": {"format": "csv", "origin": LINEAGE.origin, "first_line": "7", "last_line": "7"},
        }
    )
    [again] = parse_message(replayed).rejected
    assert again.rejected_id == bad.rejected_id and again.payload == bad.payload


def test_parse_lines_maps_a_whole_file() -> None:
    numbered = list(enumerate(EVENT_LINES[1:], start=2))
    parsed = parse_lines(numbered, fmt="csv", lineage=LINEAGE, now=NOW, csv_header=EVENT_HEADER)
    assert [r.lineage.line_number for r in parsed.rows] == [2, 3, 4] and not parsed.rejected

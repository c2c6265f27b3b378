"""The writer without BigQuery: rows as protobuf, per-row errors, whole-append refusals, time and error classes.

The emulator's side of the same contract is in tests/integration/test_load_writer.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud.bigquery_storage_v1 import types

from shared.config import Tenant
from shared.errors import SetupError, TransientError
from shared.warehouse import writer
from shared.warehouse.rows import EventRow, Lineage

NOW = datetime(2024, 5, 14, 9, 21, 3, 629000, tzinfo=UTC)


def event(i: int, name: str = "ok", metadata: dict[str, Any] | None = None, contact: str = "u") -> EventRow:
    return EventRow(contact, NOW, name, f"id-{i}", Lineage("segment", "gs://b/o#1", i, NOW), None, metadata)


def decoded(table: str, proto: bytes) -> dict[str, Any]:
    message = writer.codec(table).message.FromString(proto)
    return {f.name: v for f, v in message.ListFields()}


def test_a_row_becomes_the_protobuf_of_its_tables_schema() -> None:
    # GIVEN an event with non-ASCII text, nesting and numbers in its JSON column
    metadata = {"city": "Zürich", "n": 3, "price": 19.5, "ok": True, "none": None, "items": [{"sku": "a"}]}
    row = EventRow("user_ü", NOW, "Bestellung", "id-1", Lineage("segment", "gs://b/o#1", 7, NOW), "Europe/Berlin", metadata)
    # WHEN encoded for an append
    fields = decoded("events", writer.codec("events").encode(row.to_bq(NOW)))
    # THEN TIMESTAMP is µs since the epoch, JSON its text, INTEGER an int and STRING as given; nulls are absent
    micros = 1715678463629000
    assert fields["timestamp"] == fields["received_at"] == fields["loaded_at"] == micros
    assert json.loads(fields["metadata"]) == metadata
    assert (fields["contact_id"], fields["line_number"], fields["timezone"]) == ("user_ü", 7, "Europe/Berlin")
    assert "event_name" in fields and "country" not in fields


@pytest.mark.parametrize(
    ("column", "value", "says"),
    [
        ("metadata", '{"not json', "metadata: malformed JSON text"),
        ("line_number", "seven", "line_number: 'seven' is not an INTEGER"),
        ("line_number", 2**63, "outside INTEGER's range"),
        ("timestamp", "yesterday", "timestamp: 'yesterday' is not a TIMESTAMP"),
        ("contact_id", {"a": 1}, "contact_id: a dict is not a STRING"),
        ("colour", "red", "colour: no such column in events"),
    ],
)
def test_a_value_its_column_cannot_hold_is_refused_with_the_column_named(column: str, value: Any, says: str) -> None:
    row = event(1).to_bq(NOW) | {column: value}
    with pytest.raises(writer.Unencodable, match=says.replace("(", r"\(")):
        writer.codec("events").encode(row)


def test_values_insert_all_accepted_keep_their_meaning() -> None:
    # GIVEN the other spellings insertAll took: JSON as text, TIMESTAMP as seconds or naive ISO text, numbers as text
    codec = writer.codec("events")
    fields = decoded("events", codec.encode({
        "contact_id": 42, "metadata": '{"a": 1}', "timestamp": 1.5, "received_at": "2024-05-14T09:21:03",
        "line_number": "12",
    }))
    assert fields["contact_id"] == "42" and fields["metadata"] == '{"a": 1}'
    assert fields["timestamp"] == 1_500_000 and fields["line_number"] == 12
    assert fields["received_at"] == 1715678463000000  # naive means UTC


def test_encoded_json_rows_mean_what_the_stdlib_encoding_meant() -> None:
    # (encode_row: a rejected row's payload and bulk loads' NDJSON)
    row = event(1, metadata={"city": "Zürich", "emoji": "🎉"}).to_bq(NOW)
    assert json.loads(writer.encode_row(row)) == row == json.loads(json.dumps(row))
    assert json.loads(writer.encode_row({"nan": float("nan"), "when": NOW.date()})) == {"nan": None, "when": "2024-05-14"}


def test_appends_respect_the_request_limits() -> None:
    big = [writer._Item(event(i), b"x" * 3_000_000, {}) for i in range(5)]
    small = [writer._Item(event(i), b"x" * 10, {}) for i in range(12_001)]
    assert [len(c) for c in writer._chunks(big)] == [2, 2, 1]
    assert [len(c) for c in writer._chunks(small)] == [5_000, 5_000, 2_001]


class FakeBigQuery:
    """The Write API as the writer sees it, per its documented contract: an append holding a row without
    ``contact_id`` fails with ``row_errors`` naming it and stores nothing; an append holding a row with event name
    ``POISON`` is refused as a whole (no row errors); ``fail_with`` fails every call; otherwise rows are stored."""

    project = "proj"

    def __init__(self, fail_with: Exception | None = None) -> None:
        self.fail_with = fail_with
        self.appends: list[int] = []
        self.calls = 0
        self.stored: dict[str, list[dict[str, Any]]] = {}

    def get_dataset(self, ref: str) -> Any:
        return type("Dataset", (), {"location": "europe-west1"})()

    def get_table(self, ref: str) -> Any:
        raise gexc.NotFound(f"Not found: Table {ref}")

    def stream(self, client: Any, table: str, codec: writer.Codec) -> Any:
        fake = self
        name = table.rsplit(".", 1)[1]

        class Appends:
            def append(self, chunks: list[list[bytes]], timeout: float) -> list[types.AppendRowsResponse]:
                fake.calls += 1
                if fake.fail_with is not None:
                    raise fake.fail_with
                out = []
                for rows in chunks:
                    fake.appends.append(len(rows))
                    decoded_rows = [decoded(name, r) for r in rows]
                    named = [i for i, r in enumerate(decoded_rows) if "contact_id" not in r and name == "events"]
                    if named:
                        errors = [types.RowError(index=i, message="Missing required field: contact_id.") for i in named]
                        out.append(types.AppendRowsResponse(error={"code": 3, "message": "Rows are invalid"},
                                                            row_errors=errors))  # fmt: skip
                    elif any(r.get("event_name") == "POISON" for r in decoded_rows):
                        out.append(types.AppendRowsResponse(error={"code": 3, "message": "AppendRows request too large"}))
                    else:
                        fake.stored.setdefault(name, []).extend(decoded_rows)
                        out.append(types.AppendRowsResponse())
                return out

        return Appends()


def tenant() -> Tenant:
    return Tenant(name="acme", region="europe-west1", bucket="acme-bucket", dataset="acme")


def write(fake: FakeBigQuery, rows: list[Any], monkeypatch: pytest.MonkeyPatch) -> writer.WriteResult:
    monkeypatch.setattr(writer, "_Appends", fake.stream)
    return writer.write_rows(fake, tenant(), rows, processor="test", appends=object())  # type: ignore[arg-type]


def test_rows_named_by_an_append_are_rejected_and_their_neighbours_appended_again(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN 12,000 events (three appends), two of them without their REQUIRED contact_id in different appends
    rows = [event(i, contact=None if i in (17, 9_001) else "u") for i in range(12_000)]  # type: ignore[arg-type]
    fake = FakeBigQuery()
    # WHEN written
    result = write(fake, rows, monkeypatch)
    # THEN every other row is stored exactly once, and the two are warehouse_invalid rejections with BigQuery's words
    ids = [r["event_instance_id"] for r in fake.stored["events"]]
    assert result.written["events"] == 11_998 == len(ids) == len(set(ids))
    assert sorted(r.lineage.line_number for r in result.invalid) == [17, 9_001]
    assert all("Missing required field: contact_id" in r.message for r in result.invalid)
    assert result.written["rejected"] == 2 == len(fake.stored["rejected"])
    # AND only the good rows of the failed appends were sent again (3 appends, then 9,998 rows), one call per round
    assert fake.appends == [5_000, 5_000, 2_000, 5_000, 4_998, 2]  # (the last: the 2 rejections)
    assert fake.calls == 3  # events, events again, rejected


def test_a_value_that_cannot_be_sent_is_rejected_and_never_appended(monkeypatch: pytest.MonkeyPatch) -> None:
    class Raw:
        table = "events"
        insert_id = "raw-1"

        def to_bq(self, loaded_at: datetime) -> dict[str, Any]:
            return event(1).to_bq(loaded_at) | {"metadata": "{oops"}

    fake = FakeBigQuery()
    result = write(fake, [Raw(), event(2)], monkeypatch)
    [bad] = result.invalid
    assert bad.rejected_id == "warehouse:raw-1" and "metadata: malformed JSON text" in bad.message
    assert [r["event_instance_id"] for r in fake.stored["events"]] == ["id-2"]


def test_an_append_refused_as_a_whole_is_bisected_to_the_offending_row(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN 1,000 rows, one of which BigQuery refuses as a whole append (an oversized or malformed row)
    fake = FakeBigQuery()
    rows = [event(i, name="POISON" if i == 537 else "ok") for i in range(1, 1001)]
    # WHEN they are written
    result = write(fake, rows, monkeypatch)
    # THEN every other row is stored once, the offending one is a warehouse_invalid rejection that says why
    ids = [r["event_instance_id"] for r in fake.stored["events"]]
    assert result.written["events"] == 999 == len(set(ids)) == len(ids)
    [refused] = result.invalid
    assert (refused.reason_code, refused.lineage.line_number) == ("warehouse_invalid", 537)
    assert "holding only this row" in refused.message and "too large" in refused.message
    # AND the bisection is bounded: about 2 appends per halving, not one per row (nor a retry until dead-letter)
    assert len(fake.appends) <= 2 * 10 + 2


def test_a_rejected_row_keeps_a_bounded_payload(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [event(i, name="POISON" if i == 2 else "ok") for i in range(1, 4)]
    rows[1] = event(2, name="POISON", metadata={"blob": "x" * 300_000})
    result = write(FakeBigQuery(), rows, monkeypatch)
    [big] = result.invalid
    assert len(big.payload.encode()) <= writer.REJECTED_PAYLOAD_MAX_BYTES and "cut" in big.message
    assert result.written["events"] == 2


def test_when_the_write_budget_is_spent_the_write_is_retried_later(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a write whose time budget is already used up (a BigQuery slow enough to use up earlier appends' time)
    monkeypatch.setattr(writer, "WRITE_BUDGET_S", 0.0)
    fake = FakeBigQuery()
    # WHEN rows are written / THEN it raises a TransientError (redelivered) having stored nothing
    with pytest.raises(TransientError, match="budget"):
        write(fake, [event(1), event(2)], monkeypatch)
    assert fake.stored == {}


def test_a_call_past_its_deadline_is_transient(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer, "RETRY_DEADLINE_S", 0.3)
    with pytest.raises(TransientError, match="Deadline"):
        write(FakeBigQuery(fail_with=gexc.DeadlineExceeded("Deadline Exceeded")), [event(1)], monkeypatch)


def test_a_short_outage_is_retried_within_the_call_and_stores_the_rows_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a service that refuses connections twice, then works (an emulator restart, a brief outage)
    fake = FakeBigQuery()
    real = fake.stream
    failures = [gexc.ServiceUnavailable("failed to connect to all addresses"), gexc.ServiceUnavailable("again")]

    def flaky(client: Any, table: str, codec: writer.Codec) -> Any:
        appends = real(client, table, codec)
        inner = appends.append

        def append(chunks: list[list[bytes]], timeout: float) -> list[types.AppendRowsResponse]:
            if failures:
                fake.calls += 1
                raise failures.pop(0)
            return inner(chunks, timeout)

        appends.append = append
        return appends

    monkeypatch.setattr(writer, "_Appends", flaky)
    # WHEN rows are written / THEN the write succeeds after the retries, without a redelivery, rows stored once
    result = writer.write_rows(fake, tenant(), [event(1), event(2)], processor="test", appends=object())  # type: ignore[arg-type]
    assert result.written["events"] == 2 and fake.calls == 3
    assert [r["event_instance_id"] for r in fake.stored["events"]] == ["id-1", "id-2"]


def test_the_appends_are_one_call_whose_first_request_names_the_stream_and_schema() -> None:
    # GIVEN a Write API client that records the call
    seen: dict[str, Any] = {}

    class Client:
        def append_rows(self, requests: Any, **options: Any) -> list[types.AppendRowsResponse]:
            seen["requests"], seen["options"] = list(requests), options
            return [types.AppendRowsResponse() for _ in seen["requests"]]

    # WHEN two chunks are appended
    appends = writer._Appends(Client(), "proj.acme.events", writer.codec("events"))  # type: ignore[arg-type]
    responses = appends.append([[b"r1", b"r2"], [b"r3"]], 12.0)
    # THEN one call carried both, the first naming the _default stream with the writer schema, the routing header
    # set, no retry of the call, and the deadline given
    first, second = seen["requests"]
    assert first.write_stream == "projects/proj/datasets/acme/tables/events/streams/_default"
    assert first.proto_rows.writer_schema.proto_descriptor.name == "Row" and not second.write_stream
    assert list(first.proto_rows.rows.serialized_rows) == [b"r1", b"r2"]
    assert seen["options"]["timeout"] == 12.0 and seen["options"]["retry"] is None
    assert ("x-goog-request-params", f"write_stream={first.write_stream}") in seen["options"]["metadata"]
    assert len(responses) == 2


@pytest.mark.parametrize(
    ("error", "raised", "says"),
    [
        (gexc.ServiceUnavailable("backend"), TransientError, "backend"),
        (gexc.TooManyRequests("quota"), TransientError, "quota"),
        (gexc.NotFound("Table"), SetupError, "does not exist"),
        (gexc.PermissionDenied("denied"), SetupError, "refused access"),
        (gexc.Unknown("stream failed"), SetupError, "does not exist"),  # then get_table: 404
    ],
)
def test_errors_are_transient_or_setup_errors_with_a_fix(
    monkeypatch: pytest.MonkeyPatch, error: Exception, raised: type[Exception], says: str
) -> None:
    monkeypatch.setattr(writer, "RETRY_DEADLINE_S", 0.3)  # transient ones are retried this long first
    with pytest.raises(raised, match=says):
        write(FakeBigQuery(fail_with=error), [event(1)], monkeypatch)

"""The writer encodes each row once (pydantic-core) and builds the insertAll body from those bytes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.errors import TransientError
from shared.warehouse import writer
from shared.warehouse.rows import EventRow, Lineage

NOW = datetime(2024, 5, 14, 9, 21, 3, 629000, tzinfo=UTC)


def test_encoded_rows_mean_what_the_stdlib_encoding_meant() -> None:
    # GIVEN a row with non-ASCII text, nesting, nulls, numbers and booleans
    row = EventRow(
        "user_ü", NOW, "Bestellung abgeschlossen", "id-1", Lineage("segment", "gs://b/o#1", 7, NOW), "Europe/Berlin",
        {"city": "Zürich", "emoji": "🎉", "n": 3, "price": 19.5, "ok": True, "none": None, "items": [{"sku": "a"}]},
    ).to_bq(NOW)
    # WHEN it is encoded for the request
    encoded = writer.encode_row(row)
    # THEN it is UTF-8 JSON that decodes to exactly the row (the stdlib's encoding decodes to the same)
    assert json.loads(encoded) == row == json.loads(json.dumps(row))
    assert "Zürich".encode() in encoded


def test_non_finite_floats_and_unknown_types_do_not_break_a_request() -> None:
    # GIVEN values JSON cannot carry as such
    row: dict[str, Any] = {"nan": float("nan"), "inf": float("inf"), "when": NOW.date()}
    # WHEN encoded / THEN non-finite floats are null and unknown types their string, so the request stays valid JSON
    assert json.loads(writer.encode_row(row)) == {"nan": None, "inf": None, "when": "2024-05-14"}


def test_the_insert_all_body_is_the_documented_request_with_the_encoded_rows() -> None:
    # GIVEN a client that records what it is asked to send
    sent: dict[str, Any] = {}

    class Client:
        def _call_api(self, retry: Any, **kwargs: Any) -> dict[str, Any]:
            sent.update(kwargs, retry=retry)
            return {"insertErrors": [{"index": 1, "errors": [{"reason": "invalid"}]}]}

    rows = [writer.encode_row({"a": 1}), writer.encode_row({"b": "ü"})]
    # WHEN two encoded rows are inserted
    errors = writer._insert(Client(), "proj.ds.events", rows, ["id-1", "id-2"])  # type: ignore[arg-type]
    # THEN the request is insertAll on the table, with the stable insertIds, skipInvalidRows, and the rows verbatim
    assert sent["method"] == "POST" and sent["path"] == "/projects/proj/datasets/ds/tables/events/insertAll"
    assert json.loads(sent["data"]) == {
        "skipInvalidRows": True,
        "rows": [{"insertId": "id-1", "json": {"a": 1}}, {"insertId": "id-2", "json": {"b": "ü"}}],
    }
    # AND its retries stop after INSERT_DEADLINE_S (not DEFAULT_RETRY's 600 s) with a timeout on every request
    assert sent["retry"].timeout == writer.INSERT_DEADLINE_S <= 60
    assert sent["timeout"] == writer.REQUEST_TIMEOUT_S
    # AND the per-row errors come back as the client library returns them
    assert errors == [{"index": 1, "errors": [{"reason": "invalid"}]}]


def test_chunks_respect_the_request_limits_on_the_encoded_size() -> None:
    # GIVEN rows of 3 MB of encoded JSON each, and many small rows
    big = [(f"id{i}", writer.encode_row({"blob": "x" * 3_000_000}), None) for i in range(5)]
    small = [(f"s{i}", writer.encode_row({"i": i}), None) for i in range(1201)]
    # WHEN chunked
    big_chunks = writer._chunks(big)  # type: ignore[arg-type]
    small_chunks = writer._chunks(small)  # type: ignore[arg-type]
    # THEN no request goes over the byte budget, and none over the row count
    assert [len(c) for c in big_chunks] == [2, 2, 1]
    assert all(sum(len(r) + len(i) + 32 for i, r, _ in c) <= writer.MAX_BYTES_PER_REQUEST for c in big_chunks)
    assert [len(c) for c in small_chunks] == [500, 500, 201]


class RefusingBigQuery:
    """insertAll that refuses, as a whole (HTTP 400), every request into ``events`` holding a row that contains
    ``poison`` (the same text as a string in a ``rejected`` payload is fine, as in BigQuery)."""

    project = "proj"

    def __init__(self, poison: bytes = b"POISON") -> None:
        self.poison = poison
        self.requests: list[int] = []
        self.stored: list[str] = []

    def get_dataset(self, ref: str) -> Any:
        return type("Dataset", (), {"location": "europe-west1"})()

    def _call_api(self, retry: Any, **kwargs: Any) -> dict[str, Any]:
        from google.api_core import exceptions as gexc

        body = json.loads(kwargs["data"])
        self.requests.append(len(body["rows"]))
        if self.poison in kwargs["data"] and kwargs["path"].endswith("/events/insertAll"):
            raise gexc.BadRequest("Request payload size exceeds the limit: 10485760 bytes.")
        self.stored += [r["insertId"] for r in body["rows"]]
        return {}


def events(n: int, poison_at: set[int]) -> list[EventRow]:
    return [
        EventRow(
            "u", NOW, "POISON" if i in poison_at else "ok", f"id-{i}", Lineage("segment", "gs://b/o#1", i, NOW), None
        )
        for i in range(1, n + 1)
    ]


def tenant() -> Any:
    from shared.config import Tenant

    return Tenant(name="acme", region="europe-west1", bucket="acme-bucket", dataset="acme")


def test_a_whole_request_400_is_bisected_to_the_offending_row() -> None:
    # GIVEN 1,000 rows, one of which BigQuery refuses as a whole request (an oversized or malformed row)
    client = RefusingBigQuery()
    rows = events(1000, poison_at={537})
    # WHEN they are written
    result = writer.write_rows(client, tenant(), rows, processor="test")  # type: ignore[arg-type]
    # THEN every other row is stored once, the offending one is a warehouse_invalid rejection that says why
    stored_events = [i for i in client.stored if not i.startswith("warehouse:")]
    assert result.written["events"] == 999 == len(set(stored_events)) == len(stored_events)
    [refused] = result.invalid
    assert (refused.reason_code, refused.lineage.line_number) == ("warehouse_invalid", 537)
    assert "HTTP 400" in refused.message and "payload size exceeds" in refused.message
    assert result.written["rejected"] == 1
    # AND the bisection is bounded: about 2 requests per halving, not one per row (nor a retry until dead-letter)
    assert len(client.requests) <= 2 * 2 * 10 + 2


def test_a_row_refused_alone_keeps_a_bounded_payload_and_the_rest_of_the_batch() -> None:
    # GIVEN two poison rows in one chunk, one of them far bigger than a rejected row may keep
    client = RefusingBigQuery()
    rows = events(10, poison_at={2, 9})
    rows[1] = EventRow("u", NOW, "POISON", "id-2", rows[1].lineage, None, {"blob": "x" * 300_000})
    # WHEN written
    result = writer.write_rows(client, tenant(), rows, processor="test")  # type: ignore[arg-type]
    # THEN both are rejections, the big payload is cut (so the rejected row itself can be stored), the 8 others stored
    assert sorted(r.lineage.line_number for r in result.invalid) == [2, 9]
    big = next(r for r in result.invalid if r.lineage.line_number == 2)
    assert len(big.payload.encode()) <= writer.REJECTED_PAYLOAD_MAX_BYTES
    assert "cut" in big.message
    assert result.written["events"] == 8


def test_when_the_write_budget_is_spent_the_write_is_retried_later(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a write whose time budget is already used up (a BigQuery slow enough to use up earlier inserts' time)
    monkeypatch.setattr(writer, "WRITE_BUDGET_S", 0.0)
    client = RefusingBigQuery()
    # WHEN rows are written / THEN it raises a TransientError (redelivered, idempotent) before sending anything
    with pytest.raises(TransientError, match="budget"):
        writer.write_rows(client, tenant(), events(3, set()), processor="test")  # type: ignore[arg-type]
    assert client.requests == []

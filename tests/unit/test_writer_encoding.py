"""The writer encodes each row once (pydantic-core) and builds the insertAll body from those bytes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

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
    assert sent["retry"] is not None
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

"""Issue 4: the streaming writer against the real BigQuery emulator (local-bigquery), nothing mocked.

A batch with one row BigQuery refuses (an event without its REQUIRED contact_id) must store every good row, turn the
bad one into a ``warehouse_invalid`` rejection, and a redelivery of the same batch must add no visible duplicate.

What the emulator does (checked by ``test_emulator_insert_all_semantics`` so a version change is noticed):

* ``skip_invalid_rows=True``: the good rows are stored; the bad row comes back with reason ``invalid``.
* ``skip_invalid_rows=False``: nothing is stored; the bad row is ``invalid``, every other row is ``stopped``.
* The insertId of a row that was *not* stored (``stopped`` or ``invalid``) is not remembered: retrying it under the
  same id stores it. (the emulator is meant to remember such ids for 60 s; local-bigquery 0.4.0 does not.
  The writer retries ``stopped`` rows under a derived insertId, which is correct either way.)
"""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, cast

import httpx
import pytest
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery

from shared.config import Tenant
from shared.warehouse import writer
from shared.warehouse.rows import EventRow, Lineage, UserPropertiesRow
from shared.warehouse.writer import write_rows
from tests.faults import pipeline_accounting
from tests.stack_support import unique

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.faults import Fault
    from tests.stack_support import StackHandle

pytestmark = pytest.mark.stack

TS = datetime(2024, 5, 1, 10, tzinfo=UTC)


def bq(stack: StackHandle, endpoint: str | None = None) -> bigquery.Client:
    return bigquery.Client(
        project=stack.stack.cfg.project,
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=endpoint or stack.env["LANDLINE_BIGQUERY_ENDPOINT"]),
    )


def new_tenant(stack: StackHandle) -> Tenant:
    import json

    name = stack.add_tenant()
    return Tenant.model_validate(json.loads(stack.stack.cfg.paths.tenants.read_text())[name])


def rows_of(client: bigquery.Client, tenant: Tenant, sql: str) -> list[dict[str, Any]]:
    sql = sql.replace("{ds}", f"{client.project}.{tenant.dataset}")
    return [dict(r.items()) for r in client.query(sql).result()]


def count(client: bigquery.Client, tenant: Tenant, table: str) -> int:
    return int(rows_of(client, tenant, f"SELECT COUNT(*) AS n FROM `{{ds}}.{table}`")[0]["n"])


def batch(run: str, good: int = 5) -> list[EventRow | UserPropertiesRow]:
    origin = f"gs://writer-test/{run}.gz#1"
    rows: list[EventRow | UserPropertiesRow] = [
        EventRow(f"user-{n}", TS, "Item Viewed", f"{run}-{n}", Lineage("segment", origin, n), None, {"n": n})
        for n in range(1, good + 1)
    ]
    # BigQuery refuses this one: contact_id is REQUIRED in events (the loader never builds it; a schema drift might)
    rows.insert(2, EventRow(cast("str", None), TS, "Item Viewed", f"{run}-bad", Lineage("segment", origin, 99)))
    rows.append(
        UserPropertiesRow("user-1", TS, f"{run}-up", Lineage("segment", origin, 100), email_address="a@example.com")
    )
    return rows


@pytest.mark.scenario(
    "Redelivered load batch adds no visible duplicate",
    injected="the same batch (5 events, 1 user-properties row, 1 row BigQuery refuses) written twice",
    findings=[],
)
def test_one_invalid_row_does_not_stop_its_neighbours_and_a_redelivery_adds_no_visible_duplicate(
    local_stack: StackHandle, fault: Fault
) -> None:
    # GIVEN a tenant and a batch of good rows (two tables) with one row BigQuery will refuse
    tenant, run = new_tenant(local_stack), unique("r")
    client = bq(local_stack)
    rows = batch(run)

    # WHEN the batch is written
    result = write_rows(client, tenant, rows, processor="test")

    # THEN every good row is stored
    assert result.written["events"] == 5
    assert result.written["user_properties"] == 1
    stored = rows_of(client, tenant, "SELECT event_instance_id FROM `{ds}.events` ORDER BY line_number")
    assert [r["event_instance_id"] for r in stored] == [f"{run}-{n}" for n in range(1, 6)]
    assert count(client, tenant, "user_properties") == 1
    # AND the bad row is a warehouse_invalid rejection that names the column, keeps its lineage and payload
    [invalid] = result.invalid
    assert invalid.reason_code == "warehouse_invalid"
    assert "contact_id" in invalid.message
    assert result.written["rejected"] == 1
    [rejected] = rows_of(
        client, tenant, "SELECT reason_code, origin, line_number, payload, message FROM `{ds}.rejected_deduped`"
    )
    assert rejected["reason_code"] == "warehouse_invalid"
    assert (rejected["origin"], rejected["line_number"]) == (f"gs://writer-test/{run}.gz#1", 99)
    assert f"{run}-bad" in rejected["payload"]

    # WHEN the same batch is written again (a Pub/Sub redelivery)
    again = write_rows(client, tenant, rows, processor="test")

    # THEN the bad row is rejected again under the same id, and nothing new is visible in the deduplicated views
    assert [r.rejected_id for r in again.invalid] == [invalid.rejected_id]
    dedup = rows_of(client, tenant, "SELECT COUNT(*) AS n, COUNT(DISTINCT event_instance_id) AS d FROM `{ds}.events_deduped`")
    assert dedup == [{"n": 5, "d": 5}]
    assert count(client, tenant, "rejected_deduped") == 1
    # (inside the insertId window the raw table has no second copy either)
    assert count(client, tenant, "events") == 5
    assert count(client, tenant, "rejected") == 1
    fault.report(
        "the second write stores nothing new: one row per event in events_deduped, one rejection",
        **pipeline_accounting(local_stack, tenant.name, expected_lines=len(rows)),
    )


def test_stopped_rows_are_retried_under_derived_ids_and_stored_once(
    local_stack: StackHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a BigQuery that answers "stopped" for the good neighbours of a bad row (what insertAll does without
    # skipInvalidRows): the writer's first request is sent to the emulator with skip_invalid_rows=False
    tenant, run = new_tenant(local_stack), unique("r")
    client = bq(local_stack)
    calls: list[tuple[int, list[str]]] = []
    real_insert = writer._insert

    def first_call_stops(
        c: bigquery.Client, table: str, rows: list[bytes], ids: list[str], **options: Any
    ) -> list[dict[str, Any]]:
        calls.append((len(rows), list(ids)))
        return real_insert(c, table, rows, ids, **{**options, "skip_invalid_rows": len(calls) > 1})

    monkeypatch.setattr(writer, "_insert", first_call_stops)
    rows = [r for r in batch(run) if isinstance(r, EventRow)]

    # WHEN the batch is written
    result = write_rows(client, tenant, rows, processor="test")

    # THEN the stopped rows were retried once, under derived insertIds, and every good row is stored exactly once
    assert calls[0][0] == 6
    assert calls[1][0] == 5
    assert all(i.endswith("~retry1") for i in calls[1][1])
    assert result.written["events"] == 5
    assert [r.reason_code for r in result.invalid] == ["warehouse_invalid"]
    stored = rows_of(client, tenant, "SELECT event_instance_id FROM `{ds}.events` ORDER BY line_number")
    assert [r["event_instance_id"] for r in stored] == [f"{run}-{n}" for n in range(1, 6)]


def test_emulator_insert_all_semantics(local_stack: StackHandle) -> None:
    # GIVEN a fresh events table
    tenant = new_tenant(local_stack)
    client = bq(local_stack)
    table = f"{client.project}.{tenant.dataset}.events"

    def row(i: str, contact: str | None = "u") -> dict[str, Any]:
        return {"contact_id": contact, "timestamp": TS.isoformat(), "event_name": "x", "event_instance_id": i}

    def ids() -> list[str]:
        return [r["event_instance_id"] for r in rows_of(client, tenant, "SELECT * FROM `{ds}.events` ORDER BY 4")]

    # WHEN a good row and a bad row are inserted without skip_invalid_rows
    errors = client.insert_rows_json(table, [row("a"), row("b", None)], row_ids=["ia", "ib"], skip_invalid_rows=False)
    # THEN nothing is stored: the bad row is "invalid", its neighbour "stopped"
    assert {e["index"]: [x["reason"] for x in e["errors"]] for e in errors} == {0: ["stopped"], 1: ["invalid"]}
    assert ids() == []

    # WHEN the stopped row and the corrected bad row are retried under the SAME insertIds
    assert client.insert_rows_json(table, [row("a"), row("b")], row_ids=["ia", "ib"], skip_invalid_rows=True) == []
    # THEN both are stored: ids of rows that were not stored were not remembered
    assert ids() == ["a", "b"]

    # WHEN a good row and a bad row are inserted with skip_invalid_rows, then the good one is sent again
    errors = client.insert_rows_json(table, [row("c"), row("d", None)], row_ids=["ic", "id"], skip_invalid_rows=True)
    assert [(e["index"], e["errors"][0]["reason"]) for e in errors] == [(1, "invalid")]
    client.insert_rows_json(table, [row("c")], row_ids=["ic"], skip_invalid_rows=True)
    # THEN the good row was stored once (its insertId is remembered), the bad one not at all
    assert ids() == ["a", "b", "c"]


@contextmanager
def refusing_endpoint(emulator: str, poison: bytes) -> Iterator[tuple[str, list[int]]]:
    """A BigQuery endpoint in front of the emulator that refuses, as a whole (HTTP 400, BigQuery's error body), every
    insertAll request into ``events`` holding ``poison``, and passes everything else through. Yields its URL and the
    row count of each insertAll request it saw."""
    requests: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            if self.path.split("?")[0].endswith("/insertAll"):
                requests.append(len(json.loads(body)["rows"]))
                if poison in body and "/tables/events/" in self.path:
                    error = {"code": 400, "status": "INVALID_ARGUMENT",
                             "message": "Request payload size exceeds the limit: 10485760 bytes.",
                             "errors": [{"reason": "badRequest", "message": "Request payload size exceeds the limit"}]}
                    self._send(400, json.dumps({"error": error}).encode())
                    return
            headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "accept")}
            upstream = httpx.request(self.command, emulator + self.path, content=body, headers=headers, timeout=60)
            self._send(upstream.status_code, upstream.content)

        def _send(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _forward

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.scenario(
    "insertAll whole-request 400 (oversized or malformed request)",
    injected="a BigQuery endpoint answering HTTP 400 to every insertAll request that holds one given row of 1,000",
    findings=[15],
)
def test_a_whole_request_400_writes_the_good_rows_and_rejects_the_offending_one(
    local_stack: StackHandle, fault: Fault
) -> None:
    # GIVEN 1,000 events of one batch, one of which makes BigQuery refuse any request that holds it
    tenant, run = new_tenant(local_stack), unique("r")
    origin = f"gs://writer-test/{run}.gz#1"
    rows = [
        EventRow(f"user-{n}", TS, "POISON" if n == 613 else "Item Viewed", f"{run}-{n}", Lineage("segment", origin, n))
        for n in range(1, 1001)
    ]
    with refusing_endpoint(local_stack.env["LANDLINE_BIGQUERY_ENDPOINT"], b"POISON") as (endpoint, requests):
        # WHEN the batch is written through that endpoint
        result = write_rows(bq(local_stack, endpoint), tenant, rows, processor="test")
    # THEN the 999 good rows are stored and the offending row is a warehouse_invalid rejection naming the 400
    client = bq(local_stack)
    assert result.written["events"] == 999 == count(client, tenant, "events_deduped")
    [rejected] = rows_of(client, tenant, "SELECT reason_code, line_number, message FROM `{ds}.rejected_deduped`")
    assert (rejected["reason_code"], rejected["line_number"]) == ("warehouse_invalid", 613)
    assert "HTTP 400" in rejected["message"]
    # AND the chunks were bisected (a few dozen requests for 1,000 rows), not retried until dead-lettered
    assert len(requests) < 60
    fault.report(
        "the request is bisected down to the one row, which becomes a warehouse_invalid rejection; 999 rows load",
        **pipeline_accounting(local_stack, tenant.name, expected_lines=len(rows)),
        insert_requests=len(requests),
    )

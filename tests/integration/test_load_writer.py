"""The writer (Storage Write API, ``_default`` stream) against the real BigQuery emulator (local-bigquery).

A batch with one row BigQuery refuses (an event without its REQUIRED contact_id) must store every good row, turn the
bad one into a ``warehouse_invalid`` rejection, and a redelivery of the same batch must add no visible duplicate.

What the emulator's Write API does (checked by ``test_emulator_write_api_semantics`` so a version change is noticed):

* An append holding a row without a REQUIRED column fails as a whole with ``row_errors`` naming that row, and stores
  nothing (the documented contract).
* The ``_default`` stream is at-least-once: the same rows appended twice are stored twice.
* An append holding malformed JSON text for a JSON column also fails with ``row_errors``, but the emulator has stored
  the good rows already (BigQuery stores none). The writer never sends such a row: it checks JSON text before
  appending and rejects the row itself (``test_malformed_json_is_rejected_before_it_is_sent``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

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
    # (the raw tables hold the second copy: the default stream is at-least-once, and readers go through the views)
    assert count(client, tenant, "events") == 10
    assert count(client, tenant, "rejected") == 2
    fault.report(
        "the second write adds nothing visible: one row per event in events_deduped, one rejection "
        "(the raw tables hold a second copy: the Write API's default stream is at-least-once)",
        **pipeline_accounting(local_stack, tenant.name, expected_lines=len(rows)),
    )


class JsonText:
    """A row of ``events`` with hand-made values: how a malformed JSON text reaches the writer."""

    table = "events"

    def __init__(self, insert_id: str, metadata: str) -> None:
        self.insert_id = insert_id
        self.metadata = metadata

    def to_bq(self, loaded_at: datetime) -> dict[str, Any]:
        return {"contact_id": "u", "timestamp": TS.isoformat(), "event_name": "E", "event_instance_id": self.insert_id,
                "metadata": self.metadata, "loaded_at": loaded_at.isoformat()}


def test_malformed_json_is_rejected_before_it_is_sent(local_stack: StackHandle) -> None:
    # GIVEN 50 rows, one of which carries malformed JSON text for the JSON column (the emulator would store its
    # neighbours and still report the append as failed, so a re-append would double them)
    tenant, run = new_tenant(local_stack), unique("j")
    client = bq(local_stack)
    rows = [JsonText(f"{run}-{n}", '{"not json' if n == 17 else f'{{"n": {n}}}') for n in range(50)]
    # WHEN written
    result = write_rows(client, tenant, rows, processor="test")
    # THEN the bad row is a warehouse_invalid rejection naming the column, and the 49 others are stored exactly once
    [bad] = result.invalid
    assert bad.rejected_id == f"warehouse:{run}-17" and "metadata: malformed JSON text" in bad.message
    assert result.written["events"] == 49 == count(client, tenant, "events")
    assert count(client, tenant, "rejected") == 1


def test_emulator_write_api_semantics(local_stack: StackHandle) -> None:
    from google.cloud.bigquery_storage_v1 import types

    # GIVEN an events table and the writer's own append stream to its _default stream
    tenant = new_tenant(local_stack)
    client = bq(local_stack)
    table = f"{client.project}.{tenant.dataset}.events"
    events = writer.codec("events")

    def row(event_id: str, contact: str | None = "u", metadata: str = "{}") -> bytes:
        # encoded by hand: the writer's codec would refuse the malformed JSON text before sending it
        fields = {"contact_id": contact, "timestamp": writer._timestamp(TS), "event_name": "E",
                  "event_instance_id": event_id, "metadata": metadata}
        return events.message(**{k: v for k, v in fields.items() if v is not None}).SerializeToString()

    def append(*rows: bytes) -> types.AppendRowsResponse | None:
        [response] = writer._Appends(writer.write_client(), table, events).append([list(rows)], 60)
        return response if response.error.code else None

    def ids() -> list[str]:
        return sorted(r["event_instance_id"] for r in rows_of(client, tenant, "SELECT event_instance_id FROM `{ds}.events`"))

    # WHEN a good row and one without its REQUIRED contact_id are appended together
    failed = append(row("a"), row("b", contact=None))
    # THEN the append fails naming row 1 and nothing is stored
    assert failed is not None and [(e.index, "contact_id" in e.message) for e in failed.row_errors] == [(1, True)]
    assert ids() == []
    # WHEN the good row is appended twice
    assert append(row("a")) is None and append(row("a")) is None
    # THEN it is stored twice (at-least-once: no insertIds on the default stream)
    assert ids() == ["a", "a"]
    # WHEN a good row and one with malformed JSON text are appended together
    failed = append(row("c"), row("d", metadata='{"not json'))
    # THEN the append fails naming row 1, yet the emulator stored the good row (BigQuery would not): the divergence
    # the writer avoids by never sending malformed JSON text
    assert failed is not None and [e.index for e in failed.row_errors] == [1]
    assert ids() == ["a", "a", "c"]


def refuse_appends_holding(monkeypatch: pytest.MonkeyPatch, poison: bytes) -> list[int]:
    """Make BigQuery refuse, as a whole (INVALID_ARGUMENT without row errors, as for an oversized or malformed
    request), every append into ``events`` holding a row that contains ``poison``; every other append goes to the
    emulator. Returns the row count of each append into ``events``."""
    from google.cloud.bigquery_storage_v1 import types

    appends: list[int] = []
    real_append = writer._Appends.append

    def append(self: writer._Appends, chunks: list[list[bytes]], timeout: float) -> list[types.AppendRowsResponse]:
        if not self.table.endswith(".events"):
            return real_append(self, chunks, timeout)
        appends.extend(len(c) for c in chunks)
        refused = [any(poison in r for r in chunk) for chunk in chunks]
        passed = iter(real_append(self, [c for c, bad in zip(chunks, refused, strict=True) if not bad], timeout)
                      if not all(refused) else [])  # fmt: skip
        too_large = types.AppendRowsResponse(error={"code": 3, "message": "AppendRows request too large: 10485760 bytes"})
        return [too_large if bad else next(passed) for bad in refused]

    monkeypatch.setattr(writer._Appends, "append", append)
    return appends


@pytest.mark.scenario(
    "Write API append refused as a whole (oversized or malformed request)",
    injected="BigQuery refusing, as a whole and without row errors, every append that holds one given row of 1,000",
    findings=[15],
)
def test_a_whole_request_400_writes_the_good_rows_and_rejects_the_offending_one(
    local_stack: StackHandle, fault: Fault, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN 1,000 events of one batch, one of which makes BigQuery refuse any append that holds it
    tenant, run = new_tenant(local_stack), unique("r")
    origin = f"gs://writer-test/{run}.gz#1"
    rows = [
        EventRow(f"user-{n}", TS, "POISON" if n == 613 else "Item Viewed", f"{run}-{n}", Lineage("segment", origin, n))
        for n in range(1, 1001)
    ]
    appends = refuse_appends_holding(monkeypatch, b"POISON")
    # WHEN the batch is written
    client = bq(local_stack)
    result = write_rows(client, tenant, rows, processor="test")
    # THEN the 999 good rows are stored once and the offending row is a warehouse_invalid rejection naming the refusal
    assert result.written["events"] == 999 == count(client, tenant, "events") == count(client, tenant, "events_deduped")
    [rejected] = rows_of(client, tenant, "SELECT reason_code, line_number, message FROM `{ds}.rejected_deduped`")
    assert (rejected["reason_code"], rejected["line_number"]) == ("warehouse_invalid", 613)
    assert "holding only this row" in rejected["message"] and "too large" in rejected["message"]
    # AND the append was bisected (a few dozen appends for 1,000 rows), not retried until dead-lettered
    assert len(appends) < 40
    fault.report(
        "the append is bisected down to the one row, which becomes a warehouse_invalid rejection; 999 rows load once",
        **pipeline_accounting(local_stack, tenant.name, expected_lines=len(rows)),
        appends=len(appends),
    )

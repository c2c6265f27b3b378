"""Upgrading the product over an existing tenant: provisioning adds the columns this version writes and points the
views at this version's SQL, so rows keep loading instead of failing as ``warehouse_invalid``. Real local BigQuery."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING
from unittest import mock

import pytest
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery

from shared.config import ActivityLevels, Tenant
from shared.errors import SetupError
from shared.warehouse.client import SCHEMA_LABEL, provision_dataset, schema_fingerprint
from shared.warehouse.rows import EventRow, FileLedgerRow, Lineage
from shared.warehouse.schema import TABLES, VIEWS, table_spec
from shared.warehouse.writer import write_rows
from tests.stack_support import unique

if TYPE_CHECKING:
    from tests.stack_support import StackHandle

pytestmark = pytest.mark.stack

REGION = "europe-west1"
NOW = datetime(2024, 5, 14, 9, 0, tzinfo=UTC)


def bq(stack: StackHandle) -> bigquery.Client:
    return bigquery.Client(
        project=stack.stack.cfg.project,
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=stack.env["LANDLINE_BIGQUERY_ENDPOINT"]),
    )


def old_dataset(client: bigquery.Client, *, events_schema: list[bigquery.SchemaField]) -> Tenant:
    """A dataset as an older version left it: events with fewer columns, and an outdated events_deduped view."""
    name = unique("old")
    ds = bigquery.Dataset(f"{client.project}.{name}")
    ds.location = REGION
    client.create_dataset(ds)
    client.create_table(bigquery.Table(f"{client.project}.{name}.events", schema=events_schema))
    rejected = next(spec for spec in TABLES if spec.name == "rejected")
    client.create_table(bigquery.Table(f"{client.project}.{name}.rejected", schema=rejected.schema))
    view = bigquery.Table(f"{client.project}.{name}.events_deduped")
    view.view_query = f"SELECT contact_id FROM `{client.project}.{name}.events`"
    client.create_table(view)
    return Tenant(name=name, region=REGION, bucket=f"{name.replace('_', '-')}-b", dataset=name)


def test_provisioning_upgrades_an_older_tenant_so_rows_load_again(local_stack: StackHandle) -> None:
    client = bq(local_stack)
    # GIVEN a tenant whose events table lacks this version's optional columns (metadata, lineage, timezone...)
    events = next(spec for spec in TABLES if spec.name == "events")
    old_columns = [f for f in events.schema if f.mode == "REQUIRED"]
    tenant = old_dataset(client, events_schema=old_columns)
    row = EventRow("u1", NOW, "Order Completed", "evt-1", Lineage("segment", "gs://b/o#1", 1, NOW), "Europe/Paris",
                   {"total": 27.5})
    # (as it is, this version's rows do not fit it)
    before = write_rows(client, tenant, [row], processor="test")
    assert before.written["events"] == 0 and len(before.invalid) == 1

    # WHEN provisioning runs again (what `landline tenant add` and `landline up` do for every registered tenant)
    provision_dataset(client, tenant)

    # THEN the table has every column of this version, REQUIRED ones unchanged, the old columns first
    table = client.get_table(f"{client.project}.{tenant.dataset}.events")
    assert [f.name for f in table.schema] == [
        *(f.name for f in old_columns), *(f.name for f in events.schema if f.mode != "REQUIRED")
    ]
    # AND the view runs this version's SQL
    view = client.get_table(f"{client.project}.{tenant.dataset}.events_deduped")
    wanted = VIEWS["events_deduped"].format(ds=f"{client.project}.{tenant.dataset}")
    assert " ".join(view.view_query.split()) == " ".join(wanted.split())
    # AND the same row now loads, with its new columns, and shows in the view
    after = write_rows(client, tenant, [row], processor="test")
    assert after.written["events"] == 1 and after.invalid == []
    rows = list(client.query(
        f"SELECT event_name, timezone, JSON_VALUE(metadata, '$.total') AS total "
        f"FROM `{client.project}.{tenant.dataset}.events_deduped`"
    ).result())
    assert [tuple(r.values()) for r in rows] == [("Order Completed", "Europe/Paris", "27.5")]
    # AND running it again changes nothing (idempotent)
    provision_dataset(client, tenant)
    assert [f.name for f in client.get_table(table.reference).schema] == [f.name for f in table.schema]


def test_a_missing_required_column_is_a_setup_error_with_a_fix(local_stack: StackHandle) -> None:
    client = bq(local_stack)
    # GIVEN an events table without one of this version's REQUIRED columns (BigQuery cannot add those in place)
    events = next(spec for spec in TABLES if spec.name == "events")
    tenant = old_dataset(client, events_schema=[f for f in events.schema if f.name != "event_name"])
    # WHEN provisioning runs / THEN it stops with a setup error naming the column and what to do
    with pytest.raises(SetupError, match=r"lacks the REQUIRED columns \['event_name'\]") as err:
        provision_dataset(client, tenant)
    assert "copy the table" in err.value.fix


def test_files_is_partitioned_by_recorded_at_and_an_older_unpartitioned_ledger_keeps_working(
    local_stack: StackHandle,
) -> None:
    client = bq(local_stack)
    files = table_spec("files")
    # GIVEN a new tenant, and an older tenant whose files table was created unpartitioned (before this version)
    fresh = old_dataset(client, events_schema=next(s for s in TABLES if s.name == "events").schema)
    provision_dataset(client, fresh)
    old = old_dataset(client, events_schema=next(s for s in TABLES if s.name == "events").schema)
    client.create_table(bigquery.Table(f"{client.project}.{old.dataset}.files", schema=files.schema))
    # WHEN provisioning runs for both
    provision_dataset(client, old)
    # THEN the new tenant's ledger is partitioned by day of recorded_at (finding 28) ...
    partitioning = client.get_table(f"{client.project}.{fresh.dataset}.files").time_partitioning
    assert partitioning is not None and partitioning.field == "recorded_at"
    # ... and the old one, which BigQuery cannot re-partition in place, is left as it was and still takes ledger rows
    assert client.get_table(f"{client.project}.{old.dataset}.files").time_partitioning is None
    row = FileLedgerRow("gs://b/o#1", "b", "o", "1", "loaded", "attempt-1", lines=3, batches=1)
    for tenant in (fresh, old):
        assert write_rows(client, tenant, [row], processor="test").written["files"] == 1
        [latest] = client.query(f"SELECT status, lines FROM `{client.project}.{tenant.dataset}.files_latest`").result()
        assert (latest["status"], latest["lines"]) == ("loaded", 3)


def test_an_up_to_date_tenant_is_not_provisioned_again_but_what_was_dropped_or_changed_is(local_stack: StackHandle) -> None:
    client = bq(local_stack)
    # GIVEN a tenant this version provisioned in full (`landline up` re-provisions every tenant after a restart)
    name = unique("cur")
    tenant = Tenant(name=name, region=REGION, bucket=f"{name.replace('_', '-')}-b", dataset=name)
    ds_id = f"{client.project}.{tenant.dataset}"
    provision_dataset(client, tenant)
    assert client.get_dataset(ds_id).labels[SCHEMA_LABEL] == schema_fingerprint(tenant, ds_id)
    # WHEN a restart provisions it again / THEN no table or view is created or replaced
    with mock.patch.object(client, "create_table", wraps=client.create_table) as create, \
            mock.patch.object(client, "query", wraps=client.query) as query:
        provision_dataset(client, tenant, skip_if_current=True)
    assert create.call_count == 0 and query.call_count == 0
    # WHEN a table was dropped by hand / THEN even a restart makes it again
    client.delete_table(f"{ds_id}.message_sends")
    provision_dataset(client, tenant, skip_if_current=True)
    assert client.get_table(f"{ds_id}.message_sends").schema == table_spec("message_sends").schema
    # WHEN the tenant's activity thresholds change / THEN the view is made again with them
    changed = tenant.model_copy(update={"activity": ActivityLevels(low=2, medium=7, high=40)})
    assert schema_fingerprint(changed, ds_id) != schema_fingerprint(tenant, ds_id)
    provision_dataset(client, changed, skip_if_current=True)
    view = client.get_table(f"{ds_id}.contact_activity").view_query
    assert ">= 40" in view and ">= 7" in view
    assert client.get_dataset(ds_id).labels[SCHEMA_LABEL] == schema_fingerprint(changed, ds_id)

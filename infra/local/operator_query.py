"""`landline query` and `landline tables`: SQL over one tenant's dataset, read-only unless asked otherwise.

BigQuery checks the statement first (a dry run: it parses and resolves it, reads nothing): its statement type must be
SELECT unless ``--write`` is given (DDL, DML and scripts change or drop tables `stats` and the functions rely on), and
every table it names must be in the tenant's own dataset (another tenant's data is not this command's to read). Only
then does the query run. This is a guard against mistakes, not a security boundary: the caller's credentials decide
what they may do, with any other tool.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from google.api_core import exceptions as gexc

from infra.local.cli_support import fail, one_line
from shared.config import settings, tenants
from shared.warehouse.client import bigquery_client, check_region
from shared.warehouse.query import tenant_job_config
from shared.warehouse.schema import TABLES, VIEWS

READ_ONLY_STATEMENTS = frozenset({"SELECT"})

# What each view is for (the tables describe themselves in shared/warehouse/schema.py).
VIEW_DESCRIPTIONS: dict[str, str] = {
    "events_deduped": "Exactly one row per event (the first delivery of each event_instance_id): count events here.",
    "users_latest": "One row per contact: the latest non-null value of each user property (push token, email, ...).",
    "files_latest": "One row per file: its last attempt that read it through (status, lines, error).",
    "rejected_deduped": "One row per rejected line: reason_code, message and the raw payload (for replay).",
    "contact_activity": "One row per contact: its events over the last 30 days and its level (dormant ... high).",
    "campaign_launched": "One row per launched campaign: the launch that counts (the first committed one).",
    "campaign_assignments": "One row per campaign member: its arm (a variant or holdout), stratum, message id, time.",
}


def catalog() -> list[dict[str, str]]:
    """Every table and view `landline tenant add` creates, with what it holds."""
    return [{"name": t.name, "kind": "table", "description": t.description} for t in TABLES] + [
        {"name": name, "kind": "view", "description": VIEW_DESCRIPTIONS[name]} for name in VIEWS
    ]


@dataclass
class QueryResult:
    statement_type: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    affected_rows: int | None = None

    def summary(self) -> str:
        """What a statement without rows did (for --write)."""
        if self.affected_rows is not None:
            return f"{self.statement_type}: {self.affected_rows} rows affected"
        return f"{self.statement_type}: done"


def run_guarded(tenant_name: str, sql: str, *, write: bool = False) -> QueryResult:
    """Dry-run ``sql`` in the tenant's dataset, refuse what it must not do, then run it."""
    tenant = tenants().get(tenant_name)
    client = bigquery_client()
    check_region(client, tenant)
    try:
        dry = client.query(
            sql, job_config=tenant_job_config(tenant_name, dry_run=True, use_query_cache=False), location=tenant.region
        )
    except gexc.NotFound as exc:
        fail(f"{one_line(exc)}; tenant {tenant_name}'s tables: {', '.join(table_names(tenant_name))}")
    kind = str(dry.statement_type or "UNKNOWN")
    if kind not in READ_ONLY_STATEMENTS and not write:
        fail(f"{kind} refused: query is read-only by default (one SELECT); pass --write to change or drop data")
    project = settings().project
    foreign = sorted(
        f"{ref.project}.{ref.dataset_id}.{ref.table_id}"
        for ref in dry.referenced_tables or ()
        if (ref.project, ref.dataset_id) != (project, tenant.dataset)
    )
    if foreign:
        fail(f"the query reads {', '.join(foreign)}, outside tenant {tenant_name}'s dataset {tenant.dataset}; "
             f"query each tenant with its own --tenant")  # fmt: skip
    job = client.query(sql, job_config=tenant_job_config(tenant_name), location=tenant.region)
    rows = [dict(row.items()) for row in job.result()]
    affected = job.num_dml_affected_rows if kind not in READ_ONLY_STATEMENTS else None
    return QueryResult(kind, rows, affected)


def table_names(tenant_name: str) -> list[str]:
    """The tables and views that exist in the tenant's dataset."""
    tenant = tenants().get(tenant_name)
    client = bigquery_client()
    return sorted(t.table_id for t in client.list_tables(f"{settings().project}.{tenant.dataset}"))

"""The per-tenant dataset: tables (with partitioning and clustering) and the views that deduplicate on read.

Columns are the row types' (shared/warehouse/rows.py); this module adds partitioning, clustering and the views.
insertId dedup is best effort (about a minute), so exactness lives in the views: ``events_deduped`` keeps one row per
``event_instance_id``; ``users_latest`` keeps the latest non-null value of each field per contact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from google.cloud import bigquery

from shared.warehouse.rows import (
    Column,
    EventRow,
    FileLedgerRow,
    InvalidTokenRow,
    RejectedRow,
    Row,
    ScheduleRow,
    SendRow,
    UserPropertiesRow,
)


def schema_of(row_type: type[Row]) -> list[bigquery.SchemaField]:
    """The BigQuery schema of a row type's table, from its columns (shared/warehouse/rows.py)."""
    return [_field(c) for c in row_type.columns]


def _field(column: Column) -> bigquery.SchemaField:
    mode = "REQUIRED" if column.required else "NULLABLE"
    if column.description:  # else no description at all (not an explicit null), as the tables were created
        return bigquery.SchemaField(column.name, column.type, mode=mode, description=column.description)
    return bigquery.SchemaField(column.name, column.type, mode=mode)


@dataclass(frozen=True)
class TableSpec:
    name: str
    schema: list[bigquery.SchemaField]
    partition_field: str | None = None
    clustering: list[str] = field(default_factory=list)
    description: str = ""

    @classmethod
    def of(cls, row_type: type[Row], **options: Any) -> TableSpec:
        return cls(row_type.table, schema_of(row_type), **options)


TABLES: list[TableSpec] = [
    TableSpec.of(
        EventRow,
        partition_field="timestamp",
        clustering=["event_name", "contact_id"],
        description="One row per event delivery; read events_deduped for exactly one row per event.",
    ),
    TableSpec.of(
        UserPropertiesRow,
        partition_field="updated_at",
        clustering=["contact_id"],
        description="Append-only user properties; users_latest has the latest non-null value per field.",
    ),
    TableSpec.of(
        RejectedRow,
        partition_field="rejected_at",
        clustering=["reason_code"],
        description="Versioned bad-row envelope; `landline replay` republishes payloads.",
    ),
    TableSpec.of(
        FileLedgerRow,
        # Partitioned so the ledger's growth stays cheap to query and expire by time. BigQuery cannot partition an
        # existing table in place: tables created before this (unpartitioned) keep working unchanged, and only a
        # copy into a new table would partition them (README, "Deploying").
        partition_field="recorded_at",
        description="File ledger: one row per state change of an object generation.",
    ),
    TableSpec.of(ScheduleRow, description="What to send and when."),
    TableSpec.of(SendRow, description="Outcome per attempt: sent, failed, deferred, skipped."),
    TableSpec.of(
        InvalidTokenRow,
        description="Tokens a provider reported dead; not used again until the contact sends a newer one.",
    ),
]

# Views: `{ds}` is replaced by the fully qualified dataset. Forms chosen to be correct on BigQuery and on the local
# emulator (which silently ignores IGNORE NULLS together with LIMIT inside ARRAY_AGG; README, "The local stack").
_LATEST = "ARRAY_AGG({col} IGNORE NULLS ORDER BY updated_at DESC, loaded_at DESC)[SAFE_OFFSET(0)] AS {col}"
VIEWS: dict[str, str] = {
    "events_deduped": """
        SELECT * FROM `{ds}.events`
        WHERE TRUE
        QUALIFY ROW_NUMBER() OVER (PARTITION BY event_instance_id ORDER BY loaded_at, origin, line_number) = 1
    """,
    "users_latest": "SELECT contact_id, "
    + ", ".join(
        _LATEST.format(col=c)
        for c in ("country", "timezone", "push_token", "phone_number", "email_address", "properties")
    )
    + ", MAX(updated_at) AS updated_at FROM `{ds}.user_properties` GROUP BY contact_id",
    # Per file, its last attempt that ended; one that read it through (loaded, truncated, rejected, ignored) outranks
    # a later gone or failed one: a redelivery of an overwritten generation finds it gone, but the lines its first
    # attempt loaded are still there and still count.
    "files_latest": """
        SELECT * FROM `{ds}.files`
        WHERE TRUE
        QUALIFY ROW_NUMBER() OVER (
            PARTITION BY origin
            ORDER BY CASE status WHEN 'started' THEN 0 WHEN 'gone' THEN 1 WHEN 'failed' THEN 1 ELSE 2 END DESC,
                     recorded_at DESC
        ) = 1
    """,
    "rejected_deduped": """
        SELECT * FROM `{ds}.rejected`
        WHERE TRUE
        QUALIFY ROW_NUMBER() OVER (PARTITION BY rejected_id ORDER BY rejected_at DESC) = 1
    """,
}


def table_spec(name: str) -> TableSpec:
    return next(t for t in TABLES if t.name == name)

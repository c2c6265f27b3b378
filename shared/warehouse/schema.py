"""The per-tenant dataset: tables (with partitioning and clustering) and the views that deduplicate on read.

Columns are the row types' (shared/warehouse/rows.py); this module adds partitioning, clustering and the views.
The writer is at-least-once (the Storage Write API's default stream), so exactness lives in the views:
``events_deduped`` keeps one row per ``event_instance_id``; ``users_latest`` keeps the latest non-null value of each
field per contact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from google.cloud import bigquery

from shared.config import ACTIVITY_WINDOW_DAYS, ActivityLevels
from shared.warehouse.rows import (
    AudienceRow,
    CampaignAssignmentRow,
    CampaignLaunchRow,
    CampaignRow,
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
    TableSpec.of(AudienceRow, description="Audience definitions (landline audience create); newest per name wins."),
    TableSpec.of(CampaignRow, description="Campaign definitions (landline campaign create); newest per name wins."),
    TableSpec.of(CampaignLaunchRow, description="Commit markers of campaign launches; the first per campaign counts."),
    TableSpec.of(
        CampaignAssignmentRow,
        clustering=["campaign", "arm"],
        description="Every launch's assignments; read campaign_assignments (committed launches only).",
    ),
]

# The columns of ``users_latest`` (one row per contact): the identifiers an audience's ``where`` may name.
USERS_LATEST_FIELDS: tuple[str, ...] = (
    "country", "timezone", "push_token", "phone_number", "email_address", "properties",
)  # fmt: skip
USERS_LATEST_COLUMNS: dict[str, str] = {
    c.name: c.type for c in UserPropertiesRow.columns if c.name in ("contact_id", *USERS_LATEST_FIELDS, "updated_at")
}

# Views: `{ds}` is replaced by the fully qualified dataset. Forms chosen to be correct on BigQuery and on the local
# emulator (which silently ignores IGNORE NULLS together with LIMIT inside ARRAY_AGG; README, "The local stack").
_LATEST = "ARRAY_AGG({col} IGNORE NULLS ORDER BY updated_at DESC, loaded_at DESC)[SAFE_OFFSET(0)] AS {col}"


def users_latest_sql(where: str = "TRUE", table: str = "user_properties") -> str:
    """``users_latest``'s query, narrowed by ``where`` (a fixed SQL text over user_properties' columns) before it
    groups: the send tick reads the few thousand contacts of a shard this way instead of the view, which would group
    every contact of the tenant first (user_properties is clustered by contact_id, so BigQuery prunes too)."""
    latest = ", ".join(_LATEST.format(col=c) for c in USERS_LATEST_FIELDS)
    return f"SELECT contact_id, {latest}, MAX(updated_at) AS updated_at FROM {table} WHERE {where} GROUP BY contact_id"


VIEWS: dict[str, str] = {
    "events_deduped": """
        SELECT * FROM `{ds}.events`
        WHERE TRUE
        QUALIFY ROW_NUMBER() OVER (PARTITION BY event_instance_id ORDER BY loaded_at, origin, line_number) = 1
    """,
    "users_latest": users_latest_sql(table="`{ds}.user_properties`"),  # the send tick narrows the same text
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
    # Every contact of users_latest with its event count over the last ACTIVITY_WINDOW_DAYS days and its level; the
    # thresholds are the tenant's (``{low}``, ``{medium}``, ``{high}``: ``view_sql``), so `tenant add` re-creates
    # the view when they change. Relative to CURRENT_TIMESTAMP(): the level is always today's.
    "contact_activity": """
        SELECT u.contact_id, COALESCE(e.events_30d, 0) AS events_30d,
               CASE WHEN COALESCE(e.events_30d, 0) >= {high} THEN 'high'
                    WHEN COALESCE(e.events_30d, 0) >= {medium} THEN 'medium'
                    WHEN COALESCE(e.events_30d, 0) >= {low} THEN 'low'
                    ELSE 'dormant' END AS activity
        FROM `{ds}.users_latest` AS u
        LEFT JOIN (
            SELECT contact_id, COUNT(*) AS events_30d FROM `{ds}.events_deduped`
            WHERE timestamp >= TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL {window_days} DAY)
            GROUP BY contact_id
        ) AS e ON e.contact_id = u.contact_id
    """,
    # A launch writes its rows with INSERT ... SELECT, then its marker: until the marker is there, its rows do not exist
    # for any reader, so a launch that fails half-way leaves nothing (shared/campaigns/launch.py). Two launches racing:
    # the first marker wins, the other's rows stay invisible. A campaign sent in waves has one committed launch per wave.
    "campaign_launched": """
        SELECT * FROM `{ds}.campaign_launches`
        WHERE TRUE
        QUALIFY ROW_NUMBER() OVER (PARTITION BY campaign, IFNULL(wave, 0) ORDER BY launched_at, launch_id) = 1
    """,
    "campaign_assignments": """
        SELECT a.* FROM `{ds}.campaign_assignments_all` AS a
        JOIN `{ds}.campaign_launched` AS l ON l.launch_id = a.launch_id
    """,
}
ACTIVITY_LEVELS: tuple[str, ...] = ("dormant", "low", "medium", "high")


def view_sql(name: str, dataset: str, activity: ActivityLevels | None = None) -> str:
    """The SQL of view ``name`` over ``dataset`` (fully qualified), with the tenant's activity thresholds (validated
    integers from its configuration, never text from a request)."""
    levels = activity or ActivityLevels()
    return VIEWS[name].format(
        ds=dataset, low=levels.low, medium=levels.medium, high=levels.high, window_days=ACTIVITY_WINDOW_DAYS
    )


def table_spec(name: str) -> TableSpec:
    return next(t for t in TABLES if t.name == name)

"""The per-tenant dataset: tables (with partitioning and clustering) and the views that deduplicate on read.

insertId dedup is best effort (about a minute), so exactness lives in the views: ``events_deduped`` keeps one row per
``event_instance_id``; ``users_latest`` keeps the latest non-null value of each field per contact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from google.cloud import bigquery

F = bigquery.SchemaField


def _lineage() -> list[bigquery.SchemaField]:
    return [
        F("source_format", "STRING"),
        F("origin", "STRING", description="gs://bucket/object#generation, or pubsub://topic/message-id"),
        F("line_number", "INT64"),
        F("received_at", "TIMESTAMP"),
    ]


@dataclass(frozen=True)
class TableSpec:
    name: str
    schema: list[bigquery.SchemaField]
    partition_field: str | None = None
    clustering: list[str] = field(default_factory=list)
    description: str = ""


TABLES: list[TableSpec] = [
    TableSpec(
        "events",
        [
            F("contact_id", "STRING", mode="REQUIRED"),
            F("timestamp", "TIMESTAMP", mode="REQUIRED"),
            F("event_name", "STRING", mode="REQUIRED"),
            F("event_instance_id", "STRING"),
            F("timezone", "STRING"),
            F("metadata", "JSON"),
            *_lineage(),
            F("loaded_at", "TIMESTAMP"),
        ],
        partition_field="timestamp",
        clustering=["event_name", "contact_id"],
        description="One row per event delivery; read events_deduped for exactly one row per event.",
    ),
    TableSpec(
        "user_properties",
        [
            F("contact_id", "STRING", mode="REQUIRED"),
            F("country", "STRING"),
            F("timezone", "STRING"),
            F("push_token", "STRING"),
            F("phone_number", "STRING"),
            F("email_address", "STRING"),
            F("properties", "JSON"),
            F("updated_at", "TIMESTAMP"),
            F("event_instance_id", "STRING"),
            *_lineage(),
            F("loaded_at", "TIMESTAMP"),
        ],
        partition_field="updated_at",
        clustering=["contact_id"],
        description="Append-only user properties; users_latest has the latest non-null value per field.",
    ),
    TableSpec(
        "rejected",
        [
            F("rejected_id", "STRING", mode="REQUIRED"),
            F("schema_version", "STRING"),
            F("reason_code", "STRING", mode="REQUIRED"),
            F("message", "STRING"),
            F("processor_name", "STRING"),
            F("processor_version", "STRING"),
            F("payload", "STRING"),
            *_lineage(),
            F("rejected_at", "TIMESTAMP"),
        ],
        partition_field="rejected_at",
        clustering=["reason_code"],
        description="Versioned bad-row envelope; `landline replay` republishes payloads.",
    ),
    TableSpec(
        "files",
        [
            F("origin", "STRING", mode="REQUIRED"),
            F("bucket", "STRING"),
            F("object_name", "STRING"),
            F("generation", "STRING"),
            F("status", "STRING", mode="REQUIRED"),
            F("attempt_id", "STRING"),
            F("bytes_read", "INT64"),
            F("lines", "INT64"),
            F("batches", "INT64"),
            F("encoding", "STRING"),
            F("error", "STRING"),
            F("started_at", "TIMESTAMP"),
            F("finished_at", "TIMESTAMP"),
            F("recorded_at", "TIMESTAMP"),
        ],
        # Partitioned so the ledger's growth stays cheap to query and expire by time. BigQuery cannot partition an
        # existing table in place: tables created before this (unpartitioned) keep working unchanged, and only a
        # copy into a new table would partition them (README, "Deploying").
        partition_field="recorded_at",
        description="File ledger: one row per state change of an object generation.",
    ),
    TableSpec(
        "message_schedule",
        [
            F("message_id", "STRING", mode="REQUIRED"),
            F("contact_id", "STRING", mode="REQUIRED"),
            F("channel", "STRING"),
            F("provider", "STRING"),
            F("title", "STRING"),
            F("body", "STRING"),
            F("data", "JSON"),
            F("deep_link", "STRING"),
            F("send_at", "TIMESTAMP"),
            F("local_send_time", "STRING", description="YYYY-MM-DDTHH:MM in the contact's timezone"),
            F("expires_at", "TIMESTAMP"),
            F("collapse_key", "STRING"),
            F("priority", "STRING"),
            F("created_at", "TIMESTAMP"),
            F("requested_at", "TIMESTAMP", description="Pub/Sub publish time of the request: the newest one wins"),
            F("request_line", "INTEGER", description="line of the request in its message: a later line wins"),
        ],
        description="What to send and when.",
    ),
    TableSpec(
        "message_sends",
        [
            F("message_id", "STRING", mode="REQUIRED"),
            F("contact_id", "STRING"),
            F("provider", "STRING"),
            F("status", "STRING", mode="REQUIRED"),
            F("reason", "STRING"),
            F("provider_message_id", "STRING"),
            F("attempt_id", "STRING"),
            F("retry_at", "TIMESTAMP"),
            F("at", "TIMESTAMP"),
        ],
        description="Outcome per attempt: sent, failed, deferred, skipped.",
    ),
    TableSpec(
        "invalid_tokens",
        [
            F("contact_id", "STRING", mode="REQUIRED"),
            F("push_token", "STRING", mode="REQUIRED"),
            F("provider", "STRING"),
            F("reason", "STRING"),
            F("invalidated_at", "TIMESTAMP"),
        ],
        description="Tokens a provider reported dead; not used again until the contact sends a newer one.",
    ),
]

# Views: `{ds}` is replaced by the fully qualified dataset. Forms chosen to be correct on BigQuery and on the local
# emulator (which silently ignores IGNORE NULLS together with LIMIT inside ARRAY_AGG; see emulators.md).
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

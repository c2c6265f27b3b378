"""Typed rows, one class per table. Producers (ingest ledger, loader, push) build these; the writer serialises them.

Each row type lists its table's columns once (``columns``: name, BigQuery type, mode, where the value comes from):
the BigQuery schema (``shared/warehouse/schema.py``) and ``to_bq`` derive from that list. The two hot rows (events,
user_properties: once per input line) keep a hand-unrolled ``to_bq``; tests/unit/test_warehouse_rows.py proves it
equals the derived one.

Plain slotted dataclasses rather than pydantic models: they are built once per input line on the hot path, after
validation already happened, so a second validation pass would only cost time.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from operator import attrgetter
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:
    from collections.abc import Callable

BAD_ROW_SCHEMA_VERSION = "1-0-0"


def position_insert_id(instance_id: str, lineage: Lineage) -> str:
    """insertId of a row: the event's stable id *at its position* (origin + line).

    A redelivery of the same batch carries the same positions and is deduplicated; the same messageId on another line
    or in another file (Segment's own duplicates) is stored, so the views can count it as a duplicate instead of the
    streaming layer dropping it silently. Exact dedup by event id happens in the views.
    """
    key = f"{instance_id}|{lineage.origin}|{lineage.line_number}"
    return hashlib.sha256(key.encode()).hexdigest()[:40]


def _ts(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


BigQueryType = Literal["STRING", "INT64", "INTEGER", "TIMESTAMP", "JSON"]
WRITTEN_AT = "<written at>"  # a column's source: the time the writer writes the row (``to_bq``'s ``loaded_at``)


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a table. ``source`` is the row attribute (dotted path) holding its value, by default ``name``;
    ``WRITTEN_AT`` for the write time. TIMESTAMP values are written as UTC ISO strings, all others as they are."""

    name: str
    type: BigQueryType
    required: bool = False
    description: str = ""
    source: str | None = None


@cache
def _plan(columns: tuple[Column, ...]) -> tuple[tuple[str, Callable[[Any], Any] | None, bool], ...]:
    """A table's columns compiled once for ``Row.to_bq``: (name, getter or None for the write time, is a TIMESTAMP)."""
    return tuple(
        (c.name, None if c.source == WRITTEN_AT else attrgetter(c.source or c.name), c.type == "TIMESTAMP")
        for c in columns
    )


def _lineage_columns() -> tuple[Column, ...]:
    return (
        Column("source_format", "STRING", source="lineage.source_format"),
        Column("origin", "STRING", description="gs://bucket/object#generation, or pubsub://topic/message-id",
               source="lineage.origin"),
        Column("line_number", "INT64", source="lineage.line_number"),
        Column("received_at", "TIMESTAMP", source="lineage.received_at"),
    )


class Row:
    """What every row type has: its table, its columns, and ``to_bq`` derived from them."""

    __slots__ = ()
    table: str  # set on each class; an instance attribute to the writer's Row protocol
    columns: ClassVar[tuple[Column, ...]]

    def to_bq(self, loaded_at: datetime) -> dict[str, Any]:
        """The row as the BigQuery JSON the writer sends: one key per column, in table order."""
        out: dict[str, Any] = {}
        for name, get, is_time in _plan(self.columns):
            value = loaded_at if get is None else get(self)
            out[name] = _ts(value) if is_time else value
        return out


@dataclass(slots=True, frozen=True)
class Lineage:
    """Where a row came from: ``origin`` = ``gs://bucket/object#generation`` (or ``pubsub://topic/message-id``)."""

    source_format: str
    origin: str | None = None
    line_number: int | None = None
    received_at: datetime | None = None


@dataclass(slots=True, frozen=True)
class EventRow(Row):
    contact_id: str
    timestamp: datetime
    event_name: str
    event_instance_id: str
    lineage: Lineage
    timezone: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    table = "events"
    columns = (
        Column("contact_id", "STRING", required=True),
        Column("timestamp", "TIMESTAMP", required=True),
        Column("event_name", "STRING", required=True),
        Column("event_instance_id", "STRING"),
        Column("timezone", "STRING"),
        Column("metadata", "JSON"),
        *_lineage_columns(),
        Column("loaded_at", "TIMESTAMP", source=WRITTEN_AT),
    )

    @property
    def insert_id(self) -> str:
        return position_insert_id(self.event_instance_id, self.lineage)

    def to_bq(self, loaded_at: datetime) -> dict[str, Any]:
        # Hot path (once per event): ``Row.to_bq`` unrolled (a test proves them equal); times the loader built are
        # already in datetime.UTC, so skip astimezone.
        lineage = self.lineage
        ts = self.timestamp
        received = lineage.received_at
        return {
            "contact_id": self.contact_id,
            "timestamp": ts.isoformat() if ts.tzinfo is UTC else _ts(ts),
            "event_name": self.event_name,
            "event_instance_id": self.event_instance_id,
            "timezone": self.timezone,
            "metadata": self.metadata,
            "source_format": lineage.source_format,
            "origin": lineage.origin,
            "line_number": lineage.line_number,
            "received_at": received.isoformat() if received is not None and received.tzinfo is UTC else _ts(received),
            "loaded_at": loaded_at.isoformat() if loaded_at.tzinfo is UTC else _ts(loaded_at),
        }


@dataclass(slots=True, frozen=True)
class UserPropertiesRow(Row):
    contact_id: str
    updated_at: datetime
    event_instance_id: str
    lineage: Lineage
    country: str | None = None
    timezone: str | None = None
    push_token: str | None = None
    phone_number: str | None = None
    email_address: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)

    table = "user_properties"
    columns = (
        Column("contact_id", "STRING", required=True),
        Column("country", "STRING"),
        Column("timezone", "STRING"),
        Column("push_token", "STRING"),
        Column("phone_number", "STRING"),
        Column("email_address", "STRING"),
        Column("properties", "JSON"),
        Column("updated_at", "TIMESTAMP"),
        Column("event_instance_id", "STRING"),
        *_lineage_columns(),
        Column("loaded_at", "TIMESTAMP", source=WRITTEN_AT),
    )

    @property
    def insert_id(self) -> str:
        return position_insert_id(self.event_instance_id, self.lineage)

    def to_bq(self, loaded_at: datetime) -> dict[str, Any]:
        # Hot path (once per identify): ``Row.to_bq`` unrolled, as in EventRow.
        lineage = self.lineage
        ts = self.updated_at
        received = lineage.received_at
        return {
            "contact_id": self.contact_id,
            "country": self.country,
            "timezone": self.timezone,
            "push_token": self.push_token,
            "phone_number": self.phone_number,
            "email_address": self.email_address,
            "properties": self.properties,
            "updated_at": ts.isoformat() if ts.tzinfo is UTC else _ts(ts),
            "event_instance_id": self.event_instance_id,
            "source_format": lineage.source_format,
            "origin": lineage.origin,
            "line_number": lineage.line_number,
            "received_at": received.isoformat() if received is not None and received.tzinfo is UTC else _ts(received),
            "loaded_at": loaded_at.isoformat() if loaded_at.tzinfo is UTC else _ts(loaded_at),
        }


@dataclass(slots=True, frozen=True)
class RejectedRow(Row):
    """Snowplow-style versioned bad-row envelope: why, who rejected it, where it came from, and the payload."""

    rejected_id: str
    reason_code: str
    message: str
    payload: str
    lineage: Lineage
    processor_name: str
    processor_version: str
    schema_version: str = BAD_ROW_SCHEMA_VERSION

    table = "rejected"
    columns = (
        Column("rejected_id", "STRING", required=True),
        Column("schema_version", "STRING"),
        Column("reason_code", "STRING", required=True),
        Column("message", "STRING"),
        Column("processor_name", "STRING"),
        Column("processor_version", "STRING"),
        Column("payload", "STRING"),
        *_lineage_columns(),
        Column("rejected_at", "TIMESTAMP", source=WRITTEN_AT),
    )

    @property
    def insert_id(self) -> str:
        return self.rejected_id


@dataclass(slots=True, frozen=True)
class FileLedgerRow(Row):
    """One state change of one object generation (append-only; ``files_latest`` shows the newest per file)."""

    origin: str
    bucket: str
    object_name: str
    generation: str
    status: str  # started | loaded | truncated | rejected | ignored | failed
    attempt_id: str
    bytes_read: int = 0
    lines: int = 0
    batches: int = 0
    encoding: str | None = None
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    table = "files"
    columns = (
        Column("origin", "STRING", required=True),
        Column("bucket", "STRING"),
        Column("object_name", "STRING"),
        Column("generation", "STRING"),
        Column("status", "STRING", required=True),
        Column("attempt_id", "STRING"),
        Column("bytes_read", "INT64"),
        Column("lines", "INT64"),
        Column("batches", "INT64"),
        Column("encoding", "STRING"),
        Column("error", "STRING"),
        Column("started_at", "TIMESTAMP"),
        Column("finished_at", "TIMESTAMP"),
        Column("recorded_at", "TIMESTAMP", source=WRITTEN_AT),
    )

    @property
    def insert_id(self) -> str:
        return f"{self.origin}/{self.attempt_id}/{self.status}"


@dataclass(slots=True, frozen=True)
class ScheduleRow(Row):
    """One message to send (``message_schedule``); the newest row per message_id wins."""

    message_id: str
    contact_id: str
    title: str
    body: str
    created_at: datetime
    channel: str = "push"
    provider: str | None = None
    data: dict[str, str] = field(default_factory=dict)
    deep_link: str | None = None
    send_at: datetime | None = None
    local_send_time: str | None = None
    expires_at: datetime | None = None
    collapse_key: str | None = None
    priority: str = "high"
    # Version of the request (finding 16): a redelivered older request must not win over a newer one, so rows are
    # ordered by when the request was published and its line, not by when it was processed.
    requested_at: datetime | None = None
    request_line: int = 0
    # Set only on rows a campaign launch inserted (shared/campaigns/launch.py): title, body, deep link and data are
    # Liquid templates, the row counts only once its launch is committed (campaign_launched), and the send tick claims
    # it with the others of its ``chunk`` (one claim per chunk, shared/push/shards.py) instead of one by one.
    campaign: str | None = None
    launch_id: str | None = None
    chunk: str | None = None

    table = "message_schedule"
    columns = (
        Column("message_id", "STRING", required=True),
        Column("contact_id", "STRING", required=True),
        Column("channel", "STRING"),
        Column("provider", "STRING"),
        Column("title", "STRING"),
        Column("body", "STRING"),
        Column("data", "JSON"),
        Column("deep_link", "STRING"),
        Column("send_at", "TIMESTAMP"),
        Column("local_send_time", "STRING", description="YYYY-MM-DDTHH:MM in the contact's timezone"),
        Column("expires_at", "TIMESTAMP"),
        Column("collapse_key", "STRING"),
        Column("priority", "STRING"),
        Column("created_at", "TIMESTAMP"),
        Column("requested_at", "TIMESTAMP", description="Pub/Sub publish time of the request: the newest one wins"),
        Column("request_line", "INTEGER", description="line of the request in its message: a later line wins"),
        Column("campaign", "STRING", description="the campaign that scheduled it (its texts are Liquid templates)"),
        Column("launch_id", "STRING", description="the campaign launch that inserted it (counts once committed)"),
        Column("chunk", "STRING", description="claimed and sent together with the other messages of its chunk"),
    )

    @property
    def insert_id(self) -> str:
        return f"{self.message_id}|{_ts(self.requested_at or self.created_at)}|{self.request_line}"


@dataclass(slots=True, frozen=True)
class SendRow(Row):
    """One attempt's outcome (``message_sends``): sent, failed, deferred or skipped."""

    message_id: str
    contact_id: str
    status: str
    attempt_id: str
    at: datetime
    provider: str | None = None
    reason: str | None = None
    provider_message_id: str | None = None
    retry_at: datetime | None = None

    table = "message_sends"
    columns = (
        Column("message_id", "STRING", required=True),
        Column("contact_id", "STRING"),
        Column("provider", "STRING"),
        Column("status", "STRING", required=True),
        Column("reason", "STRING"),
        Column("provider_message_id", "STRING"),
        Column("attempt_id", "STRING"),
        Column("retry_at", "TIMESTAMP"),
        Column("at", "TIMESTAMP"),
    )

    @property
    def insert_id(self) -> str:
        return f"{self.message_id}|{self.attempt_id}|{self.status}"


@dataclass(slots=True, frozen=True)
class InvalidTokenRow(Row):
    """A token the provider reported dead; it is not used again unless the contact sends it anew later."""

    contact_id: str
    push_token: str
    provider: str
    reason: str
    invalidated_at: datetime

    table = "invalid_tokens"
    columns = (
        Column("contact_id", "STRING", required=True),
        Column("push_token", "STRING", required=True),
        Column("provider", "STRING"),
        Column("reason", "STRING"),
        Column("invalidated_at", "TIMESTAMP"),
    )

    @property
    def insert_id(self) -> str:
        return hashlib.sha256(f"{self.contact_id}|{self.push_token}|{self.provider}".encode()).hexdigest()[:40]


@dataclass(slots=True, frozen=True)
class AudienceRow(Row):
    """One version of an audience definition (``shared/campaigns/audience.py``); the newest row per name wins."""

    name: str
    definition: str  # the validated definition as JSON text, read back whole by the same model
    created_at: datetime

    table = "audiences"
    columns = (
        Column("name", "STRING", required=True),
        Column("definition", "STRING", required=True, description="the audience definition as JSON"),
        Column("created_at", "TIMESTAMP", required=True),
    )

    @property
    def insert_id(self) -> str:
        return hashlib.sha256(f"{self.name}|{self.definition}|{_ts(self.created_at)}".encode()).hexdigest()[:40]


@dataclass(slots=True, frozen=True)
class CampaignRow(Row):
    """One version of a campaign definition (``shared/campaigns/campaign.py``); the newest row per name wins."""

    name: str
    definition: str  # the validated definition as JSON text
    created_at: datetime
    launch_at: datetime | None = None  # when the send tick launches it by itself (None: `campaign launch` does)

    table = "campaigns"
    columns = (
        Column("name", "STRING", required=True),
        Column("definition", "STRING", required=True, description="the campaign definition as JSON"),
        Column("created_at", "TIMESTAMP", required=True),
        Column("launch_at", "TIMESTAMP", description="the tick launches the campaign once this time has come"),
    )

    @property
    def insert_id(self) -> str:
        return hashlib.sha256(f"{self.name}|{self.definition}|{_ts(self.created_at)}".encode()).hexdigest()[:40]


@dataclass(slots=True, frozen=True)
class CampaignLaunchRow(Row):
    """The commit marker of one launch, written after its assignments and schedule rows: rows of a launch without
    this marker (it failed half-way) are invisible; the first committed launch of a campaign is the one that counts."""

    campaign: str
    launch_id: str
    launched_at: datetime
    definition: str  # the definition this launch expanded
    audience_size: int
    scheduled: int
    wave: int | None = None  # campaigns sent in waves: which one (0 first); else null
    shares: dict[str, dict[str, float]] | None = None  # waves: each activity level's arm shares in this wave

    table = "campaign_launches"
    columns = (
        Column("campaign", "STRING", required=True),
        Column("launch_id", "STRING", required=True),
        Column("launched_at", "TIMESTAMP", required=True),
        Column("definition", "STRING", description="the campaign definition the launch expanded, as JSON"),
        Column("audience_size", "INT64"),
        Column("scheduled", "INT64", description="message_schedule rows it inserted (the holdout has none)"),
        Column("wave", "INT64", description="campaigns sent in waves: the wave this launch is (0 first); else null"),
        Column("shares", "JSON",
               description="campaigns sent in waves: {activity level: {arm: share}} this wave was assigned with"),
    )

    @property
    def insert_id(self) -> str:
        return self.launch_id


@dataclass(slots=True, frozen=True)
class CampaignAssignmentRow(Row):
    """Which arm (a variant or ``holdout``) a member got and when it is (or, for the holdout, would have been) sent.
    Written by the launch's INSERT ... SELECT, never row by row; declared here for the table's schema."""

    campaign: str
    launch_id: str
    contact_id: str
    arm: str
    stratum: str
    assigned_at: datetime
    message_id: str
    planned_send_at: datetime | None
    activity: str | None = None
    send_reason: str | None = None
    wave: int | None = None

    table = "campaign_assignments_all"
    columns = (
        Column("campaign", "STRING", required=True),
        Column("launch_id", "STRING", required=True),
        Column("contact_id", "STRING", required=True),
        Column("arm", "STRING", required=True, description="a variant id, or holdout (assigned, never sent)"),
        Column("stratum", "STRING", description="the member's values of the campaign's stratify_by properties"),
        Column("assigned_at", "TIMESTAMP"),
        Column("message_id", "STRING", description="message_schedule / message_sends id (also for the holdout)"),
        Column("planned_send_at", "TIMESTAMP"),
        Column("activity", "STRING", description="the member's activity level at launch: results by activity level"),
        Column("send_reason", "STRING",
               description="best_time campaigns: why this time (profile, fallback or exploration); else null"),
        Column("wave", "INT64", description="campaigns sent in waves: the member's wave (0 first); else null"),
    )

    @property
    def insert_id(self) -> str:
        return f"{self.launch_id}|{self.contact_id}"


# Every table the writer writes, in the dataset's order.
ROW_TYPES: tuple[type[Row], ...] = (
    EventRow, UserPropertiesRow, RejectedRow, FileLedgerRow, ScheduleRow, SendRow, InvalidTokenRow, AudienceRow,
    CampaignRow, CampaignLaunchRow, CampaignAssignmentRow,
)

"""Typed rows, one class per table. Producers (ingest ledger, loader, push) build these; the writer serialises them.

Plain slotted dataclasses rather than pydantic models: they are built once per input line on the hot path, after
validation already happened, so a second validation pass would only cost time.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

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


@dataclass(slots=True, frozen=True)
class Lineage:
    """Where a row came from: ``origin`` = ``gs://bucket/object#generation`` (or ``pubsub://topic/message-id``)."""

    source_format: str
    origin: str | None = None
    line_number: int | None = None
    received_at: datetime | None = None


@dataclass(slots=True, frozen=True)
class EventRow:
    contact_id: str
    timestamp: datetime
    event_name: str
    event_instance_id: str
    lineage: Lineage
    timezone: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    table = "events"

    @property
    def insert_id(self) -> str:
        return position_insert_id(self.event_instance_id, self.lineage)

    def to_bq(self, loaded_at: datetime) -> dict[str, Any]:
        # Hot path (once per event): times the loader built are already in datetime.UTC, so skip astimezone.
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
class UserPropertiesRow:
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

    @property
    def insert_id(self) -> str:
        return position_insert_id(self.event_instance_id, self.lineage)

    def to_bq(self, loaded_at: datetime) -> dict[str, Any]:
        lineage = self.lineage
        ts = self.updated_at
        received = lineage.received_at
        return {
            "contact_id": self.contact_id,
            "updated_at": ts.isoformat() if ts.tzinfo is UTC else _ts(ts),
            "event_instance_id": self.event_instance_id,
            "country": self.country,
            "timezone": self.timezone,
            "push_token": self.push_token,
            "phone_number": self.phone_number,
            "email_address": self.email_address,
            "properties": self.properties,
            "source_format": lineage.source_format,
            "origin": lineage.origin,
            "line_number": lineage.line_number,
            "received_at": received.isoformat() if received is not None and received.tzinfo is UTC else _ts(received),
            "loaded_at": loaded_at.isoformat() if loaded_at.tzinfo is UTC else _ts(loaded_at),
        }


@dataclass(slots=True, frozen=True)
class RejectedRow:
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

    @property
    def insert_id(self) -> str:
        return self.rejected_id

    def to_bq(self, loaded_at: datetime) -> dict[str, Any]:
        return {
            "rejected_id": self.rejected_id,
            "schema_version": self.schema_version,
            "reason_code": self.reason_code,
            "message": self.message,
            "processor_name": self.processor_name,
            "processor_version": self.processor_version,
            "payload": self.payload,
            "source_format": self.lineage.source_format,
            "origin": self.lineage.origin,
            "line_number": self.lineage.line_number,
            "received_at": _ts(self.lineage.received_at),
            "rejected_at": _ts(loaded_at),
        }


@dataclass(slots=True, frozen=True)
class FileLedgerRow:
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

    @property
    def insert_id(self) -> str:
        return f"{self.origin}/{self.attempt_id}/{self.status}"

    def to_bq(self, loaded_at: datetime) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "bucket": self.bucket,
            "object_name": self.object_name,
            "generation": self.generation,
            "status": self.status,
            "attempt_id": self.attempt_id,
            "bytes_read": self.bytes_read,
            "lines": self.lines,
            "batches": self.batches,
            "encoding": self.encoding,
            "error": self.error,
            "started_at": _ts(self.started_at),
            "finished_at": _ts(self.finished_at),
            "recorded_at": _ts(loaded_at),
        }


@dataclass(slots=True, frozen=True)
class ScheduleRow:
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

    table = "message_schedule"

    @property
    def insert_id(self) -> str:
        return f"{self.message_id}|{_ts(self.requested_at or self.created_at)}|{self.request_line}"

    def to_bq(self, loaded_at: datetime) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "contact_id": self.contact_id,
            "channel": self.channel,
            "provider": self.provider,
            "title": self.title,
            "body": self.body,
            "data": self.data,
            "deep_link": self.deep_link,
            "send_at": _ts(self.send_at),
            "local_send_time": self.local_send_time,
            "expires_at": _ts(self.expires_at),
            "collapse_key": self.collapse_key,
            "priority": self.priority,
            "created_at": _ts(self.created_at),
            "requested_at": _ts(self.requested_at),
            "request_line": self.request_line,
        }


@dataclass(slots=True, frozen=True)
class SendRow:
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

    @property
    def insert_id(self) -> str:
        return f"{self.message_id}|{self.attempt_id}|{self.status}"

    def to_bq(self, loaded_at: datetime) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "contact_id": self.contact_id,
            "provider": self.provider,
            "status": self.status,
            "reason": self.reason,
            "provider_message_id": self.provider_message_id,
            "attempt_id": self.attempt_id,
            "retry_at": _ts(self.retry_at),
            "at": _ts(self.at),
        }


@dataclass(slots=True, frozen=True)
class InvalidTokenRow:
    """A token the provider reported dead; it is not used again unless the contact sends it anew later."""

    contact_id: str
    push_token: str
    provider: str
    reason: str
    invalidated_at: datetime

    table = "invalid_tokens"

    @property
    def insert_id(self) -> str:
        return hashlib.sha256(f"{self.contact_id}|{self.push_token}|{self.provider}".encode()).hexdigest()[:40]

    def to_bq(self, loaded_at: datetime) -> dict[str, Any]:
        return {
            "contact_id": self.contact_id,
            "push_token": self.push_token,
            "provider": self.provider,
            "reason": self.reason,
            "invalidated_at": _ts(self.invalidated_at),
        }

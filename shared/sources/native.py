"""The product's own data model (``native``), for publishers that write to ``raw-events`` directly (no Segment in
between), and its mapping (``NativeFormat``; ``native_row`` also maps CSV files, which hold native records).
Native records come only as messages, never as files in a bucket: the format has no layout root.

Two record kinds share the topic, told apart by ``kind``. ``kind`` may be left out: a record with an ``event_name``
is an event, one with only profile fields is a user-properties record, so simple publishers need not know it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Tag, TypeAdapter

from shared.sources.common import NonBlankStr, Timestamp, content_hash, to_utc, validate_record
from shared.sources.format import Format
from shared.warehouse.rows import EventRow, UserPropertiesRow

if TYPE_CHECKING:
    from shared.sources.format import MappingContext, Row
    from shared.warehouse.rows import Lineage

_PROFILE_FIELDS = ("country", "push_token", "phone_number", "email_address", "properties", "updated_at")


class NativeEvent(BaseModel):
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True, frozen=True)

    kind: Literal["event"] = "event"
    contact_id: NonBlankStr
    event_name: NonBlankStr
    timestamp: Timestamp
    event_instance_id: str | None = None
    timezone: str | None = None
    metadata: dict[str, Any] | None = None

    @property
    def instance_id(self) -> str:
        """The publisher's id, else a content hash, so a redelivered event gets the same id and dedups."""
        if self.event_instance_id:
            return self.event_instance_id
        return content_hash(
            {
                "contact_id": self.contact_id,
                "event_name": self.event_name,
                "timestamp": to_utc(self.timestamp).isoformat(),
                "metadata": self.metadata or {},
            }
        )


class NativeUserProperties(BaseModel):
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True, frozen=True)

    kind: Literal["user_properties"] = "user_properties"
    contact_id: NonBlankStr
    country: str | None = None
    timezone: str | None = None
    push_token: str | None = None
    phone_number: str | None = None
    email_address: str | None = None
    properties: dict[str, Any] | None = None
    updated_at: Timestamp | None = None

    @property
    def instance_id(self) -> str:
        """Content hash of the record (times in UTC): the same update published twice dedups."""
        body = self.model_dump(exclude_none=True)
        if self.updated_at is not None:
            body["updated_at"] = to_utc(self.updated_at).isoformat()
        return content_hash(body)


def _native_kind(value: Any) -> str | None:
    """Explicit ``kind`` wins; else event_name means event; profile-only fields mean user_properties."""
    if not isinstance(value, dict):
        return None
    kind = value.get("kind")
    if kind is not None:
        return kind if isinstance(kind, str) else str(kind)
    if "event_name" in value:
        return "event"
    if any(f in value for f in _PROFILE_FIELDS):
        return "user_properties"
    return "event"  # so a record without either says "missing event_name", the likelier mistake


NativeRecord = Annotated[
    Annotated[NativeEvent, Tag("event")] | Annotated[NativeUserProperties, Tag("user_properties")],
    Discriminator(_native_kind),
]
NATIVE_ADAPTER: TypeAdapter[NativeEvent | NativeUserProperties] = TypeAdapter(NativeRecord)


def native_row(rec: NativeEvent | NativeUserProperties, lineage: Lineage, ctx: MappingContext) -> Row:
    """A validated native record (a direct publisher's JSON or a CSV line) -> its row."""
    if isinstance(rec, NativeEvent):
        ts = to_utc(rec.timestamp)
        iid = rec.instance_id
        ctx.check_future(ts, lineage.received_at, iid)
        md = ctx.scrubber.scrub(rec.metadata) if rec.metadata else {}
        return EventRow(rec.contact_id, ts, rec.event_name, iid, lineage, rec.timezone, md)
    updated = rec.updated_at
    if updated is not None:
        updated = to_utc(updated)
        ctx.check_future(updated, lineage.received_at, None)
    else:
        updated = lineage.received_at or ctx.now
    return UserPropertiesRow(
        contact_id=rec.contact_id,
        updated_at=updated,
        event_instance_id=rec.instance_id,
        lineage=lineage,
        country=rec.country,
        timezone=rec.timezone,
        push_token=rec.push_token,
        phone_number=rec.phone_number,
        email_address=rec.email_address,
        properties=rec.properties or {},
    )


class NativeFormat(Format):
    """JSON records published to ``raw-events.<tenant>``; the default ``format`` of a message."""

    name = "native"

    def map(self, raw: bytes, lineage: Lineage, ctx: MappingContext) -> Row:
        return native_row(validate_record(NATIVE_ADAPTER, raw, "kind"), lineage, ctx)


FORMAT = NativeFormat()

"""The product's own data model, for publishers that write to ``raw-events`` directly (no Segment in between).

Two record kinds share the topic, told apart by ``kind``. ``kind`` may be left out: a record with an ``event_name``
is an event, one with only profile fields is a user-properties record, so simple publishers need not know it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Tag, TypeAdapter

from shared.sources.common import NonBlankStr, Timestamp, content_hash, to_utc

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

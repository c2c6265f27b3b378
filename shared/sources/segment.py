"""Segment's message spec (https://segment.com/docs/connections/spec/common/) as pydantic models.

One model per call type, joined by a discriminated union on ``type`` so a line is validated in one Rust pass
(``SEGMENT_ADAPTER.validate_json``) without building a throwaway dict first. ``type`` is case-sensitive, as in the
spec: ``"Track"`` is an unknown type. Unknown fields are ignored, not rejected: Segment adds fields over time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from shared.sources.common import NonBlankStr, Timestamp, present, to_utc

if TYPE_CHECKING:
    from datetime import datetime

SEGMENT_TYPES = ("track", "identify", "page", "screen", "group", "alias")


class SegmentMessage(BaseModel):
    """Fields common to every call. Identity and time rules that span fields live in ``contact_id``/``event_time``."""

    # numbers as ids (some libraries send numeric userIds) become strings rather than rejections
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True, frozen=True)

    messageId: str | None = None
    userId: str | None = None
    anonymousId: str | None = None
    timestamp: Timestamp | None = None
    originalTimestamp: Timestamp | None = None
    sentAt: Timestamp | None = None
    receivedAt: Timestamp | None = None
    context: dict[str, Any] | None = None
    integrations: dict[str, Any] | None = None
    version: int | str | None = None
    channel: str | None = None

    @property
    def contact_id(self) -> str | None:
        """userId, else anonymousId; null and blank strings mean absent. None: the call names nobody."""
        return present(self.userId) or present(self.anonymousId)

    @property
    def event_time(self) -> datetime | None:
        """Segment's skew-corrected ``timestamp``, else ``originalTimestamp``, else ``receivedAt``; in UTC."""
        ts = self.timestamp or self.originalTimestamp or self.receivedAt
        return None if ts is None else to_utc(ts)


class Track(SegmentMessage):
    type: Literal["track"]
    event: NonBlankStr
    properties: dict[str, Any] | None = None


class Identify(SegmentMessage):
    type: Literal["identify"]
    traits: dict[str, Any] | None = None


class Page(SegmentMessage):
    type: Literal["page"]
    name: str | None = None
    category: str | None = None
    properties: dict[str, Any] | None = None


class Screen(SegmentMessage):
    type: Literal["screen"]
    name: str | None = None
    category: str | None = None
    properties: dict[str, Any] | None = None


class Group(SegmentMessage):
    type: Literal["group"]
    groupId: NonBlankStr
    traits: dict[str, Any] | None = None


class Alias(SegmentMessage):
    """alias needs both ids: the new ``userId`` and the ``previousId`` it replaces."""

    type: Literal["alias"]
    userId: NonBlankStr  # required here, optional elsewhere
    previousId: NonBlankStr


SegmentCall = Annotated[Track | Identify | Page | Screen | Group | Alias, Field(discriminator="type")]
# Built once: constructing a TypeAdapter compiles the validator, far too slow to do per line.
SEGMENT_ADAPTER: TypeAdapter[Track | Identify | Page | Screen | Group | Alias] = TypeAdapter(SegmentCall)

"""Segment: its message spec (https://segment.com/docs/connections/spec/common/) as pydantic models, where its
files live (``segment-logs/<source-id>/<day-ms>/<file>``, reference: the README's "Layout of a tenant bucket"), and
how a call becomes an event or user properties (``SegmentFormat``).

One model per call type, joined by a discriminated union on ``type`` so a line is validated in one Rust pass
(``SEGMENT_ADAPTER.validate_json``) without building a throwaway dict first. ``type`` is case-sensitive, as in the
spec: ``"Track"`` is an unknown type. Unknown fields are ignored, not rejected: Segment adds fields over time.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from shared.sources.common import (
    NonBlankStr,
    Rejection,
    RejectReason,
    Timestamp,
    content_hash,
    has_non_finite,
    invalid_record,
    out_of_range_time,
    present,
    to_utc,
)
from shared.sources.format import Format, ObjectLayout, dict_or_empty, event_row, ignored, text_value
from shared.warehouse.rows import UserPropertiesRow

if TYPE_CHECKING:
    from collections.abc import Sequence

    from shared.sources.format import MappingContext, Row
    from shared.warehouse.rows import Lineage

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


# -- where Segment's files live -------------------------------------------------------------------------------------
SEGMENT_ROOT = "segment-logs"
BAD_DAY = "bad_day"
# Transport fields that differ between two deliveries of the same call: left out of the content hash.
_TRANSPORT_FIELDS = ("receivedAt", "sentAt")


def _day_of(day_ms: str) -> date | None:
    """UTC day of an epoch-ms segment. 13 digits per the S3 docs; any all-ASCII-digit value is accepted."""
    if not (day_ms.isascii() and day_ms.isdigit()):
        return None
    try:
        return datetime.fromtimestamp(int(day_ms) / 1000, tz=UTC).date()
    except (OverflowError, OSError, ValueError):
        return None


class SegmentFormat(Format):
    """Segment's S3/GCS destination files: ``[any/]segment-logs/<source-id>/<day-ms>/<file>``, NDJSON, one call a
    line. The root may sit below other folders (customers point Segment at a sub-folder); file names are
    undocumented, so the file part is never parsed."""

    name = "segment"
    layout_root = SEGMENT_ROOT

    def locate(self, parts: Sequence[str]) -> ObjectLayout | None:
        if len(parts) < 4 or parts[-4] != SEGMENT_ROOT:
            return None
        day = _day_of(parts[-2])
        if day is None:
            return ignored(BAD_DAY)
        return ObjectLayout(kind=self.name, source_id=parts[-3], day=day)

    def map(self, raw: bytes, lineage: Lineage, ctx: MappingContext) -> Row:
        """identify -> user properties; track/page/screen/group/alias -> an event. Contact: userId else anonymousId;
        time: timestamp else originalTimestamp else receivedAt; id: messageId else a content hash."""
        try:
            msg = _validate(raw)
        except ValidationError as exc:
            raise invalid_record(raw, exc, "type") from None
        # NaN/Infinity: pydantic's parser accepts them, strict JSON does not. A memchr for a rare capital first; the
        # substring search and the rare stdlib re-parse (the word may sit inside a string) only on a hit.
        suspect = (raw.find(b"N") >= 0 and b"NaN" in raw) or (raw.find(b"I") >= 0 and b"Infinity" in raw)
        if suspect and has_non_finite(raw):
            raise Rejection(RejectReason.INVALID_JSON, "NaN/Infinity are not JSON")
        d = msg.__dict__  # one dict read per field instead of an attribute lookup through the model class
        mid = d["messageId"]
        if mid is not None and (not mid or mid.isspace()):
            mid = None
        contact = d["userId"]
        if not contact or contact.isspace():
            contact = d["anonymousId"]
            if not contact or contact.isspace():
                raise Rejection(RejectReason.MISSING_IDENTITY, "neither userId nor anonymousId is set", mid)
        received = d["receivedAt"]
        ts = d["timestamp"] or d["originalTimestamp"] or received
        if ts is None:
            raise Rejection(
                RejectReason.MISSING_TIMESTAMP, "none of timestamp, originalTimestamp, receivedAt is set", mid
            )
        # to_utc inlined: pydantic hands back its own zero-offset tzinfo for "Z"
        if not ts.utcoffset():
            ts = ts.replace(tzinfo=UTC)
        else:
            try:
                ts = ts.astimezone(UTC)
            except OverflowError:  # year 1 or 9999 with an offset: outside the datetime range in UTC
                raise out_of_range_time(ts) from None
        ref = received or lineage.received_at or ctx.now
        if ref.tzinfo is None or ts - ref > ctx.skew:  # the common case is one subtraction and one comparison
            ctx.check_future(ts, ref, mid)
        if not mid:
            mid = _line_hash(raw)
        c = d["context"]
        tz = None
        if c:
            tz = c.get("timezone")
            if type(tz) is not str:
                tz = None
        scrubber = ctx.scrubber
        t = type(msg)
        if t is Identify:
            return _identify(cast("Identify", msg), contact, ts, mid, tz, c or {}, lineage)
        md: dict[str, Any]
        if t is Track:
            name = d["event"]
            props = d["properties"]
            md = scrubber.scrub(props) if props else {}
        elif t is Page or t is Screen:
            name = "page_viewed" if t is Page else "screen_viewed"
            props = d["properties"]
            md = scrubber.scrub(props) if props else {}
            for key in ("name", "category"):
                value = d[key]
                if value and not scrubber.is_pii_value(value):
                    md[key] = value
        elif t is Group:
            name = "group"
            md = scrubber.scrub({"group_id": d["groupId"]})  # an email as group id: hashed or dropped (privacy.py)
            if d["traits"]:
                md["traits"] = scrubber.scrub(d["traits"])
        elif t is Alias:
            name = "alias"
            md = scrubber.scrub({"previous_id": d["previousId"]})
        else:  # pragma: no cover - the union is closed
            raise Rejection(RejectReason.UNKNOWN_TYPE, f"unmapped type {t.__name__}", mid)
        if c:
            scrubbed = scrubber.scrub_context(c)
            if scrubbed:
                md["context"] = scrubbed
        return event_row(contact, ts, name, mid, lineage, tz, md)


_validate = SEGMENT_ADAPTER.validate_json


def _identify(
    msg: Identify, contact: str, ts: datetime, mid: str, tz: str | None, ctx: dict[str, Any], lineage: Lineage
) -> UserPropertiesRow:
    """identify: traits (the call's over context.traits) as properties, with the address columns pulled out."""
    traits = dict(dict_or_empty(ctx.get("traits")))
    if msg.traits:
        traits.update(msg.traits)
    email = text_value(traits.get("email"))
    if email is not None:
        del traits["email"]
    phone = text_value(traits.get("phone"))
    if phone is not None:
        del traits["phone"]
    trait_tz = text_value(traits.get("timezone"))
    if trait_tz is not None:
        del traits["timezone"]
    country = text_value(dict_or_empty(traits.get("address")).get("country"))
    if country is None:
        country = text_value(traits.get("country"))
        if country is not None:
            del traits["country"]
    if country is None:
        country = text_value(dict_or_empty(ctx.get("location")).get("country"))
    token = text_value(dict_or_empty(ctx.get("device")).get("token"))
    return UserPropertiesRow(
        contact_id=contact,
        updated_at=ts,
        event_instance_id=mid,
        lineage=lineage,
        country=country,
        timezone=tz or trait_tz,
        push_token=token,
        phone_number=phone,
        email_address=email,
        properties=traits,
    )


def _line_hash(raw: bytes) -> str:
    """Content hash of the canonical call, minus fields that change per delivery (rare: messageId is standard)."""
    value = json.loads(raw)
    for key in _TRANSPORT_FIELDS:
        value.pop(key, None)
    return content_hash(value)


FORMAT = SegmentFormat()

"""Mixpanel raw event exports (Raw Export API, raw Data Pipelines to Cloud Storage) as pydantic models.

What the exporter writes (researched, not guessed):

* One event per line, NDJSON, gzipped: ``{"event": "Signed up", "properties": {"time": 1602611311,
  "distinct_id": "...", "$insert_id": "...", "mp_processing_time_ms": 1602625711874, ...}}``. Every property,
  the identity and the time included, sits under ``properties``.
  https://docs.mixpanel.com/reference/raw-event-export (example response; ``openapi/src/export.openapi.yaml`` of
  github.com/mixpanel/docs)
* ``time`` is epoch *seconds* in the raw export; the import API also takes milliseconds (its examples send
  ``1618716477000``), so both occur in files people assemble. Exported timestamps are UTC.
  https://docs.mixpanel.com/reference/import-events, https://docs.mixpanel.com/docs/data-pipelines ("What timezone
  is used for my event exports?")
* Default properties: ``$device_id``, ``$user_id`` (set by identify), ``$insert_id``, ``mp_lib``, ``$lib_version``,
  ``$os``, ``$os_version``, ``$browser``, ``$app_version_string``, ``$model``...; geolocation from the IP:
  ``$city``, ``$region``, ``mp_country_code`` (the IP itself is not stored).
  https://docs.mixpanel.com/docs/data-structure/property-reference/default-properties
* Raw pipelines write ``<bucket>/<prefix>/<project id>/<YYYY>/<MM>/<DD>/<HH or full_day>/<files>`` and an empty
  ``complete`` object when a period is done. https://docs.mixpanel.com/docs/data-pipelines (overview: "Raw").
  Profile updates (``$set``) are a separate export (people), not in event files: not handled here.

Mapping (``MixpanelFormat``): contact_id = ``$user_id`` (the identified user) else ``distinct_id``
(Mixpanel's own "who did it", ``$device:<id>`` while anonymous); event_instance_id = ``$insert_id`` else a content
hash; event_name = ``event``; metadata = the other properties, minus identity, device ids and location (dropped in
both privacy modes), scrubbed by the tenant's policy.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, TypeAdapter

from shared.sources.common import (
    NonBlankStr,
    Rejection,
    RejectReason,
    content_hash,
    present,
    validate_export_record,
)
from shared.sources.format import EXPORT_MARKER, Format, ObjectLayout, event_row, ignored, short_repr

if TYPE_CHECKING:
    from collections.abc import Sequence

    from shared.sources.format import MappingContext, Row
    from shared.warehouse.rows import Lineage

MIXPANEL_COMPLETE_MARKER = "complete"

# Epoch values at or above this are milliseconds: 1e11 s is the year 5138, 1e11 ms is March 1973.
MS_THRESHOLD = 100_000_000_000

# Properties never copied into event metadata, in either privacy mode (a hashed device id still tracks a device):
# identity aliases (the identity is contact_id), ad and device ids, the IP and everything located from it, and the
# project token. (``$user_id``, ``$device_id``, ``distinct_id``, ``$insert_id``, ``time``, ``$timezone`` are fields
# below, so they are never extras.)
DROPPED_PROPERTIES: frozenset[str] = frozenset(
    {
        "$distinct_id_before_identity", "$anon_id", "$anon_distinct_id", "$identified_id", "$distinct_id",
        "$ios_ifa", "$ios_idfa", "$android_advertising_id", "$ios_vendor_id",
        "ip", "$ip", "$city", "$region", "mp_country_code", "$country_code", "$geo_source",
        "$latitude", "$longitude", "token",
    }
)  # fmt: skip

# Which reason a validation error at a location means (the rest: ``common.reason_from_validation``).
FIELD_REASONS: dict[tuple[str, ...], RejectReason] = {
    ("event",): RejectReason.MISSING_EVENT_NAME,
    ("properties", "time"): RejectReason.INVALID_TIMESTAMP,
    ("properties", "mp_processing_time_ms"): RejectReason.INVALID_TIMESTAMP,
    ("properties", "distinct_id"): RejectReason.MISSING_IDENTITY,
    ("properties", "$user_id"): RejectReason.MISSING_IDENTITY,
}


class MixpanelProperties(BaseModel):
    """The ``properties`` object. Named fields are the ones mapping reads; every other property is kept as an
    extra (``extra="allow"``): here the extras *are* the payload, not noise."""

    # numeric ids (distinct_id 12345) become strings rather than rejections
    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True, frozen=True)

    time: StrictInt | StrictFloat | None = None
    distinct_id: str | None = None
    user_id: str | None = Field(None, alias="$user_id")
    device_id: str | None = Field(None, alias="$device_id")
    insert_id: str | None = Field(None, alias="$insert_id")
    processing_time_ms: StrictInt | StrictFloat | None = Field(None, alias="mp_processing_time_ms")
    timezone: str | None = Field(None, alias="$timezone")


class MixpanelEvent(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    event: NonBlankStr
    properties: MixpanelProperties | None = None


def epoch_to_utc(value: float) -> datetime | None:
    """Mixpanel ``time``: epoch seconds, or milliseconds (see ``MS_THRESHOLD``). None if not a usable instant."""
    try:  # an int beyond float64 (10**400) overflows already in isfinite or the division
        if not math.isfinite(value) or value <= 0:
            return None
        seconds = value / 1000 if value >= MS_THRESHOLD else value
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


# Built once: constructing a TypeAdapter compiles the validator, far too slow to do per line.
MIXPANEL_ADAPTER: TypeAdapter[MixpanelEvent] = TypeAdapter(MixpanelEvent)


class MixpanelFormat(Format):
    """Raw event exports under ``mixpanel/<project-id>/...`` (NDJSON, gzipped or not); the empty ``complete`` marker
    of a finished period is ignored."""

    name = "mixpanel"
    layout_root = "mixpanel"

    def locate(self, parts: Sequence[str]) -> ObjectLayout | None:
        found = super().locate(parts)
        if found is not None and parts[-1] == MIXPANEL_COMPLETE_MARKER:
            return ignored(EXPORT_MARKER)
        return found

    def map(self, raw: bytes, lineage: Lineage, ctx: MappingContext) -> Row:
        """One export line -> an event."""
        msg: MixpanelEvent = validate_export_record(MIXPANEL_ADAPTER, raw, FIELD_REASONS)
        props = msg.properties
        if props is None:
            raise Rejection(RejectReason.MISSING_IDENTITY, "no properties: neither $user_id nor distinct_id is set")
        iid = present(props.insert_id)
        contact = present(props.user_id) or present(props.distinct_id)
        if contact is None:
            raise Rejection(
                RejectReason.MISSING_IDENTITY, "neither properties.$user_id nor properties.distinct_id is set", iid
            )
        if props.time is None:
            raise Rejection(RejectReason.MISSING_TIMESTAMP, "properties.time is not set", iid)
        ts = epoch_to_utc(props.time)
        if ts is None:
            raise Rejection(
                RejectReason.INVALID_TIMESTAMP,
                f"properties.time {short_repr(props.time)} is not a positive epoch in seconds or milliseconds",
                iid,
            )
        # Mixpanel's processing time plays Segment's receivedAt: the same line always gets the same verdict.
        processed = epoch_to_utc(props.processing_time_ms) if props.processing_time_ms is not None else None
        ctx.check_future(ts, processed or lineage.received_at, iid)
        if iid is None:
            iid = content_hash(json.loads(raw))
        extra = props.model_extra or {}
        if not DROPPED_PROPERTIES.isdisjoint(extra):
            extra = {k: v for k, v in extra.items() if k not in DROPPED_PROPERTIES}
        md = ctx.scrubber.scrub(extra) if extra else {}
        return event_row(contact, ts, msg.event, iid, lineage, present(props.timezone), md)


FORMAT = MixpanelFormat()

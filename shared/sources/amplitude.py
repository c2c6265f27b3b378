"""Amplitude raw event exports (Export API, Cloud Storage / S3 export) as pydantic models.

What the exporter writes (researched, not guessed):

* One event per line, NDJSON, gzipped; top-level fields ``event_type``, ``user_id``, ``device_id``, ``event_time``,
  ``client_event_time``, ``server_received_time``, ``server_upload_time``, ``$insert_id``, ``uuid``,
  ``event_properties``, ``user_properties``, ``platform``, ``os_name``, ``os_version``, ``version_name``,
  ``language``, ``library``, ``device_*``, ``session_id``, and the personal ones ``ip_address``, ``idfa``, ``adid``,
  ``city``, ``region``, ``country``, ``dma``, ``location_lat``/``location_lng``, ``amplitude_id``.
  https://amplitude.com/docs/apis/analytics/export (response schema),
  https://amplitude.com/docs/data/destination-catalog/google-cloud-storage (same schema, file layout)
* Times are UTC without a zone: ``"2020-02-15 01:00:00.123456"`` in exports (the S3 schema shows
  ``2015-08-10T12:00:00.000000``): both separators are accepted, a naive time means UTC, an explicit zone is
  honoured. ``event_time`` is ``client_event_time`` corrected by the client/server clock difference.
  https://amplitude.com/docs/data/destination-catalog/amazon-s3 (column descriptions)
* ``$identify`` lines (``event_type`` ``"$identify"``) carry user property updates, not an action: they become
  user_properties rows. ``user_properties`` holds the properties as values; Identify API operations (``$set``,
  ``$setOnce``) are unwrapped if a file still has them, other operations (``$add``, ``$unset``...) are not values.
  https://amplitude.com/docs/apis/analytics/identify
* Cloud Storage export objects: ``{prefix}/{projectId}/{projectId}_{yyyy-MM-dd}_{H}#{partition}.json.gz`` (hour of
  ``server_upload_time``); the "merged Amplitude IDs" export writes ``{prefix}/-{orgId}/-{orgId}_...json.gz``,
  which holds id merges, not events (ignored: ``AmplitudeFormat.locate``).

Identity: contact_id = ``user_id`` (the customer's own id for a known user: the id the rest of the product, its
schedules and its profiles, knows the person by), else ``device_id`` (the anonymous visitor, like Segment's
anonymousId). Not ``amplitude_id``: Amplitude's internal number, which the customer's systems never see, so nothing
could be sent to it. event_instance_id = ``$insert_id`` (the sender's dedup key) else ``uuid`` (Amplitude's id of the
stored event, stable across re-exports) else a content hash.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, Strict, TypeAdapter

from shared.sources.common import (
    NonBlankStr,
    Rejection,
    RejectReason,
    content_hash,
    present,
    to_utc,
    validate_export_record,
)
from shared.sources.format import NOT_EVENT_EXPORT, Format, ObjectLayout, event_row, ignored, text_value
from shared.warehouse.rows import UserPropertiesRow

if TYPE_CHECKING:
    from collections.abc import Sequence

    from shared.sources.format import MappingContext, Row
    from shared.warehouse.rows import Lineage

IDENTIFY = "$identify"

# Non-personal descriptive fields copied into event metadata (under ``context``), with Amplitude's names. Never
# ip_address, idfa, adid, device_id, amplitude_id, city, region, country, dma, location_lat/lng, user_properties.
CONTEXT_FIELDS: tuple[str, ...] = (
    "platform", "os_name", "os_version", "version_name", "start_version", "language", "library", "device_type",
    "device_family", "device_brand", "device_manufacturer", "device_model", "device_carrier", "session_id",
)  # fmt: skip

# Identify API operations that carry values to keep (``$setOnce`` only where no value is known yet).
SET_OPERATIONS = ("$set", "$setOnce")

# Which reason a validation error at a location means (the rest: ``common.reason_from_validation``).
FIELD_REASONS: dict[tuple[str, ...], RejectReason] = {
    ("event_type",): RejectReason.MISSING_EVENT_NAME,
    ("user_id",): RejectReason.MISSING_IDENTITY,
    ("device_id",): RejectReason.MISSING_IDENTITY,
    ("event_time",): RejectReason.INVALID_TIMESTAMP,
    ("client_event_time",): RejectReason.INVALID_TIMESTAMP,
    ("server_received_time",): RejectReason.INVALID_TIMESTAMP,
    ("server_upload_time",): RejectReason.INVALID_TIMESTAMP,
}

# ``2020-02-15 01:00:00.123456`` (UTC) or ISO-8601 with ``T`` and an optional zone. Strict: an epoch number is not
# what the export writes, so it is an invalid timestamp rather than a guess.
AmplitudeTime = Annotated[datetime, Strict()]


class AmplitudeEvent(BaseModel):
    """One exported line. Unknown fields are ignored: Amplitude adds columns over time."""

    # numeric ids (user_id 12345) become strings rather than rejections
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True, frozen=True)

    event_type: NonBlankStr
    user_id: str | None = None
    device_id: str | None = None
    event_time: AmplitudeTime | None = None
    client_event_time: AmplitudeTime | None = None
    server_received_time: AmplitudeTime | None = None
    server_upload_time: AmplitudeTime | None = None
    insert_id: str | None = Field(None, alias="$insert_id")
    uuid: str | None = None
    event_properties: dict[str, Any] | None = None
    user_properties: dict[str, Any] | None = None
    country: str | None = None
    # descriptive (CONTEXT_FIELDS)
    platform: str | None = None
    os_name: str | None = None
    os_version: str | None = None
    version_name: str | None = None
    start_version: str | None = None
    language: str | None = None
    library: str | None = None
    device_type: str | None = None
    device_family: str | None = None
    device_brand: str | None = None
    device_manufacturer: str | None = None
    device_model: str | None = None
    device_carrier: str | None = None
    session_id: int | None = None


def user_property_values(props: dict[str, Any]) -> dict[str, Any]:
    """``user_properties`` as plain values: ``$set`` applied, ``$setOnce`` where unset, other operations dropped."""
    if not any(key.startswith("$") for key in props):
        return dict(props)
    out = {k: v for k, v in props.items() if not k.startswith("$")}
    for op in SET_OPERATIONS:
        values = props.get(op)
        if type(values) is dict:
            if op == "$set":
                out.update(values)
            else:
                for k, v in values.items():
                    out.setdefault(k, v)
    return out


# Built once: constructing a TypeAdapter compiles the validator, far too slow to do per line.
AMPLITUDE_ADAPTER: TypeAdapter[AmplitudeEvent] = TypeAdapter(AmplitudeEvent)


class AmplitudeFormat(Format):
    """Cloud Storage exports under ``amplitude/<project-id>/...`` (NDJSON, gzipped); the "merged Amplitude IDs"
    export (``-<org-id>_<yyyy-MM-dd>_<H>.json.gz``) holds id merges, not events: ignored."""

    name = "amplitude"
    layout_root = "amplitude"

    def locate(self, parts: Sequence[str]) -> ObjectLayout | None:
        found = super().locate(parts)
        if found is not None and parts[-1].startswith("-"):
            return ignored(NOT_EVENT_EXPORT)
        return found

    def map(self, raw: bytes, lineage: Lineage, ctx: MappingContext) -> Row:
        """One export line -> an event, or user properties for ``$identify``."""
        msg: AmplitudeEvent = validate_export_record(AMPLITUDE_ADAPTER, raw, FIELD_REASONS)
        iid = present(msg.insert_id) or present(msg.uuid)
        contact = present(msg.user_id) or present(msg.device_id)
        if contact is None:
            raise Rejection(RejectReason.MISSING_IDENTITY, "neither user_id nor device_id is set", iid)
        ts = msg.event_time or msg.client_event_time or msg.server_received_time or msg.server_upload_time
        if ts is None:
            raise Rejection(
                RejectReason.MISSING_TIMESTAMP,
                "none of event_time, client_event_time, server_received_time, server_upload_time is set",
                iid,
            )
        ts = to_utc(ts)  # a naive export time is UTC
        received = msg.server_received_time or msg.server_upload_time
        ctx.check_future(ts, to_utc(received) if received is not None else lineage.received_at, iid)
        if iid is None:
            iid = content_hash(json.loads(raw))
        if msg.event_type == IDENTIFY:
            return _identify(msg, contact, ts, iid, lineage)
        scrubber = ctx.scrubber
        props = msg.event_properties
        md = scrubber.scrub(props) if props else {}
        d = msg.__dict__
        context = {name: d[name] for name in CONTEXT_FIELDS if d[name] is not None}
        if context:
            context = scrubber.scrub(context)
            if context:
                md["context"] = context
        return event_row(contact, ts, msg.event_type, iid, lineage, None, md)


def _identify(msg: AmplitudeEvent, contact: str, ts: datetime, iid: str, lineage: Lineage) -> UserPropertiesRow:
    """``$identify``: user properties, with the addresses pulled out as in Segment's identify mapping."""
    traits = user_property_values(msg.user_properties or {})
    found: dict[str, str | None] = {}
    for column, keys in (
        ("email", ("email",)),
        ("phone", ("phone", "phone_number")),
        ("timezone", ("timezone",)),
        ("country", ("country",)),
    ):
        found[column] = None
        for key in keys:
            value = text_value(traits.get(key))
            if value is not None:
                del traits[key]
                found[column] = value
                break
    return UserPropertiesRow(
        contact_id=contact,
        updated_at=ts,
        event_instance_id=iid,
        lineage=lineage,
        country=found["country"] or present(msg.country),
        timezone=found["timezone"],
        push_token=None,
        phone_number=found["phone"],
        email_address=found["email"],
        properties=traits,
    )


FORMAT = AmplitudeFormat()

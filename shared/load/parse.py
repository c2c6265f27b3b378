"""Raw line -> validated, mapped, PII-free row (or a rejected row that says why). Pure: no I/O, no clock unless asked.

Every input line ends as exactly one row: an ``EventRow``, a ``UserPropertiesRow`` or a ``RejectedRow``. Nothing is
dropped and nothing raises for bad data, so the caller can ack the message after writing what comes back.

Speed matters (a 1 GB file is ~1.5 M lines): one ``validate_json`` pass over the bytes does parsing and validation in
Rust; Python only maps fields. Slow diagnosis (why exactly a line is bad) runs only for lines that failed.

One line can never fail its neighbours: bad data raises ``Rejection`` (a precise reason), and any other exception
while mapping a line (a bug, a value no rule foresaw) becomes that line's rejection with reason ``internal_error`` and
the exception's type, instead of failing the batch (which would retry and dead-letter up to 999 good lines). Only
``MemoryError`` propagates: it is the process's state, not the line's, and a retry may succeed. The catch-all is a
``try`` around the per-line call, which costs nothing until something raises. Bounds on untrusted values (times
outside year 1..9999 in UTC, JSON nested too deeply, numbers beyond float64 or int64) live in
``shared.sources.common``; a UTF-8 BOM at the start of a line (a mid-file line of concatenated exports) is ignored.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from pydantic import ValidationError

from shared import __version__
from shared.privacy import DEFAULT_POLICY, PrivacyPolicy
from shared.sources import amplitude, mixpanel
from shared.sources.amplitude import AMPLITUDE_ADAPTER, AmplitudeEvent, user_property_values
from shared.sources.common import (
    Rejection,
    RejectReason,
    bounded_numbers,
    content_hash,
    has_non_finite,
    has_odd_numbers,
    out_of_range_time,
    present,
    reason_from_validation,
    to_utc,
)
from shared.sources.csv_export import CsvHeader, HeaderError, parse_header
from shared.sources.mixpanel import MIXPANEL_ADAPTER, MixpanelEvent, epoch_to_utc
from shared.sources.native import NATIVE_ADAPTER, NativeEvent, NativeUserProperties
from shared.sources.segment import SEGMENT_ADAPTER, Alias, Group, Identify, Page, Screen, Track
from shared.warehouse.rows import EventRow, Lineage, RejectedRow, UserPropertiesRow

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

PROCESSOR_NAME = "landline.load"
FORMATS = ("segment", "native", "mixpanel", "amplitude", "csv")
MAX_LINE_BYTES = 1_000_000  # Segment caps a call at 32 KB; far beyond that is a broken file, not an event
MAX_PAYLOAD_BYTES = 100_000  # what a rejected row keeps of the original line
MAX_MESSAGE_CHARS = 500  # what a rejected row's message keeps of an exception's text
UTF8_BOM = b"\xef\xbb\xbf"
# Transport fields that differ between two deliveries of the same call: left out of the content hash.
_TRANSPORT_FIELDS = ("receivedAt", "sentAt")

Row = EventRow | UserPropertiesRow


@dataclass(slots=True)
class ParsedBatch:
    rows: list[Row] = field(default_factory=list)
    rejected: list[RejectedRow] = field(default_factory=list)

    def reasons(self) -> dict[str, int]:
        """Rejections per reason code, for logs and the file ledger."""
        counts: dict[str, int] = {}
        for r in self.rejected:
            counts[r.reason_code] = counts.get(r.reason_code, 0) + 1
        return counts


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _text(value: Any) -> str | None:
    """A scalar trait as a non-blank string, else None (dicts/lists stay in properties)."""
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _short(value: Any, limit: int = 40) -> str:
    """A value for a message: its repr, cut (an untrusted number may have thousands of digits)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def _dict(value: Any) -> dict[str, Any]:
    return value if type(value) is dict else {}


# -- fast row construction ------------------------------------------------------------------------------------------
# ``EventRow``/``Lineage`` are frozen slotted dataclasses: their generated ``__init__`` sets every field through
# ``object.__setattr__`` by name (~0.1 µs a field, ~1.3 µs per row for the two). The hot path fills the slots through
# their descriptors instead (same object, same field values, half the cost). If the classes ever gain or reorder
# fields, the builders fall back to the constructors, so this can never build a half-filled row.
_new = object.__new__


def _slot_setters(cls: type, names: tuple[str, ...]) -> tuple[Any, ...] | None:
    if tuple(f.name for f in fields(cls)) != names or getattr(cls, "__post_init__", None) is not None:
        return None
    return tuple(getattr(cls, name).__set__ for name in names)


_LINEAGE_SET = _slot_setters(Lineage, ("source_format", "origin", "line_number", "received_at"))
_EVENT_SET = _slot_setters(
    EventRow, ("contact_id", "timestamp", "event_name", "event_instance_id", "lineage", "timezone", "metadata")
)


def _lineage(source_format: str, origin: str | None, number: int | None, received_at: datetime | None) -> Lineage:
    if _LINEAGE_SET is None:  # pragma: no cover - only if Lineage changes shape
        return Lineage(source_format, origin, number, received_at)
    row = _new(Lineage)
    s0, s1, s2, s3 = _LINEAGE_SET
    s0(row, source_format)
    s1(row, origin)
    s2(row, number)
    s3(row, received_at)
    return row


def _event_row(
    contact: str, ts: datetime, name: str, iid: str, lineage: Lineage, tz: str | None, md: dict[str, Any]
) -> EventRow:
    if _EVENT_SET is None:  # pragma: no cover - only if EventRow changes shape
        return EventRow(contact, ts, name, iid, lineage, tz, md)
    row = _new(EventRow)
    s0, s1, s2, s3, s4, s5, s6 = _EVENT_SET
    s0(row, contact)
    s1(row, ts)
    s2(row, name)
    s3(row, iid)
    s4(row, lineage)
    s5(row, tz)
    s6(row, md)
    return row


def rejected_row(
    raw: bytes, lineage: Lineage, reason: RejectReason, message: str, message_id: str | None = None
) -> RejectedRow:
    """A rejected row whose id is stable across redeliveries: the line's position in its origin, else its content."""
    if lineage.origin is not None and lineage.line_number is not None:
        key = f"{lineage.origin}:{lineage.line_number}"
    elif message_id:
        key = f"{lineage.origin}:message:{message_id}"
    else:
        key = f"{lineage.origin}:content:{hashlib.sha256(raw).hexdigest()}"
    return RejectedRow(
        rejected_id=_sha(key),
        reason_code=str(reason),
        message=message,
        payload=raw[:MAX_PAYLOAD_BYTES].decode("utf-8", errors="replace"),
        lineage=lineage,
        processor_name=PROCESSOR_NAME,
        processor_version=__version__,
    )


def internal_error(raw: bytes, lineage: Lineage, exc: BaseException) -> RejectedRow:
    """The rejection of a line whose mapping raised something other than ``Rejection``: a bug or an unforeseen
    value. The message names the exception type, so such rows can be found, fixed and replayed."""
    try:
        text = str(exc)
    except Exception:  # an exception whose __str__ fails still names its type
        text = ""
    message = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return rejected_row(raw, lineage, RejectReason.INTERNAL_ERROR, message[:MAX_MESSAGE_CHARS])


def _with_bounded_numbers(row: Row, checked: dict[int, Any]) -> Row:
    """``row``, with the JSON it stores (metadata or properties) bounded: ``shared.sources.common.bounded_numbers``."""
    if type(row) is EventRow:
        md = row.metadata
        if md and has_odd_numbers(md, checked):
            return replace(row, metadata=bounded_numbers(md, "metadata"))
        return row
    props = cast("UserPropertiesRow", row).properties
    if props and has_odd_numbers(props, checked):
        return replace(row, properties=bounded_numbers(props, "properties"))
    return row


class LineParser:
    """Holds the per-batch settings so the per-line path does no setup work."""

    __slots__ = (
        "_clean",
        "_csv_header",
        "_fn",
        "_validate_segment",
        "fmt",
        "max_line_bytes",
        "now",
        "policy",
        "scrubber",
        "skew",
    )

    def __init__(
        self,
        fmt: str,
        policy: PrivacyPolicy = DEFAULT_POLICY,
        max_future_skew_hours: float = 24.0,
        now: datetime | None = None,
        max_line_bytes: int = MAX_LINE_BYTES,
        csv_header: bytes | None = None,
    ) -> None:
        self.fmt = fmt
        self.policy = policy
        self.scrubber = policy.scrubber
        self.skew = timedelta(hours=max_future_skew_hours)
        self.now = to_utc(now) if now is not None else datetime.now(UTC)
        self.max_line_bytes = max_line_bytes
        self._fn = {
            "segment": self._segment,
            "native": self._native,
            "mixpanel": self._mixpanel,
            "amplitude": self._amplitude,
            "csv": self._csv,
        }.get(fmt)
        # csv: the header is read once per batch; a bad one (or none) rejects every line with the reason
        self._csv_header: CsvHeader | str | None = None
        if fmt == "csv":
            if csv_header is None:
                self._csv_header = "no CSV header row came with this line"
            else:
                try:
                    self._csv_header = parse_header(csv_header)
                except HeaderError as exc:
                    self._csv_header = f"{exc.reason}: {exc.message}"
        self._validate_segment = SEGMENT_ADAPTER.validate_json
        self._clean: dict[int, Any] = {}  # dicts found free of odd numbers (shared.sources.common.has_odd_numbers)

    def parse(self, raw: bytes, lineage: Lineage) -> Row | RejectedRow:
        """One line -> its row, or its rejected row; never raises for anything about the line (see the module doc)."""
        try:
            if self._fn is None:
                raise Rejection(RejectReason.UNKNOWN_FORMAT, f"unknown format {self.fmt!r}; expected one of {FORMATS}")
            if len(raw) > self.max_line_bytes:
                raise Rejection(RejectReason.LINE_TOO_LARGE, f"{len(raw)} bytes > {self.max_line_bytes}")
            return _with_bounded_numbers(self._fn(raw, lineage), self._clean)
        except Rejection as rej:
            if raw[:3] == UTF8_BOM:  # a BOM starting a mid-file line (concatenated exports): the rest decides
                return self.parse(raw[3:], lineage)
            return rejected_row(raw, lineage, rej.reason, rej.message, rej.message_id)
        except MemoryError:
            raise
        except Exception as exc:  # a bug or an unforeseen value: this line's rejection, never its batch's failure
            return internal_error(raw, lineage, exc)

    def parse_batch(self, lines: Iterable[tuple[int, bytes]], lineage: Lineage) -> ParsedBatch:
        """Every ``(line_number, raw)`` pair -> one row or one rejected row, with ``lineage``'s origin.

        ``parse`` inlined (this loop is the stage's hot path); a line that starts with a BOM and fails goes through
        ``parse`` again without it.
        """
        batch = ParsedBatch()
        rows, rejected = batch.rows, batch.rejected
        add_row, add_rejected = rows.append, rejected.append
        fmt_name, origin, received_at = lineage.source_format, lineage.origin, lineage.received_at
        fn, limit = self._fn, self.max_line_bytes
        bounded, clean = _with_bounded_numbers, self._clean
        for number, raw in lines:
            line_lineage = _lineage(fmt_name, origin, number, received_at)
            try:
                if fn is None:
                    raise Rejection(
                        RejectReason.UNKNOWN_FORMAT, f"unknown format {self.fmt!r}; expected one of {FORMATS}"
                    )
                if len(raw) > limit:
                    raise Rejection(RejectReason.LINE_TOO_LARGE, f"{len(raw)} bytes > {limit}")
                add_row(bounded(fn(raw, line_lineage), clean))
            except Rejection as rej:
                if raw[:3] == UTF8_BOM:
                    outcome = self.parse(raw[3:], line_lineage)
                    if type(outcome) is RejectedRow:
                        add_rejected(outcome)
                    else:
                        add_row(cast("Row", outcome))
                else:
                    add_rejected(rejected_row(raw, line_lineage, rej.reason, rej.message, rej.message_id))
            except MemoryError:
                raise
            except Exception as exc:  # see parse
                add_rejected(internal_error(raw, line_lineage, exc))
        return batch

    # -- shared ----------------------------------------------------------------------------------------------------
    @staticmethod
    def _invalid(adapter: Any, raw: bytes, exc: ValidationError, kind_field: str) -> Rejection:
        reason, message = reason_from_validation(raw, exc, kind_field)
        if reason is RejectReason.UNKNOWN_TYPE and not raw.lstrip().startswith(b"{"):
            reason, message = RejectReason.NOT_AN_OBJECT, "top-level JSON value is not an object"
        return Rejection(reason, message)

    def _validate(self, adapter: Any, raw: bytes, kind_field: str) -> Any:
        try:
            value = adapter.validate_json(raw)
        except ValidationError as exc:
            raise self._invalid(adapter, raw, exc, kind_field) from None
        if has_non_finite(raw):  # checked after parsing: a byte search, and the rare re-parse only on a hit
            raise Rejection(RejectReason.INVALID_JSON, "NaN/Infinity are not JSON")
        return value

    def _check_future(self, ts: datetime, reference: datetime | None, message_id: str | None) -> None:
        ref = reference or self.now
        if ref.tzinfo is None:  # a caller's naive received_at means UTC
            ref = ref.replace(tzinfo=UTC)
        ref = to_utc(ref)  # a reference outside year 1..9999 in UTC is an invalid time, not a verdict on ts
        if ts - ref > self.skew:
            raise Rejection(
                RejectReason.FUTURE_TIMESTAMP,
                f"timestamp {ts.isoformat()} is more than {self.skew} after {ref.isoformat()}",
                message_id,
            )

    # -- segment ---------------------------------------------------------------------------------------------------
    def _segment(self, raw: bytes, lineage: Lineage) -> Row:
        try:
            msg = self._validate_segment(raw)
        except ValidationError as exc:
            raise self._invalid(SEGMENT_ADAPTER, raw, exc, "type") from None
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
        ref = received or lineage.received_at or self.now
        if ref.tzinfo is None or ts - ref > self.skew:  # the common case is one subtraction and one comparison
            self._check_future(ts, ref, mid)
        if not mid:
            mid = self._line_hash(raw)
        ctx = d["context"]
        tz = None
        if ctx:
            tz = ctx.get("timezone")
            if type(tz) is not str:
                tz = None
        scrubber = self.scrubber
        t = type(msg)
        if t is Identify:
            return self._identify(cast("Identify", msg), contact, ts, mid, tz, ctx or {}, lineage)
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
        if ctx:
            c = scrubber.scrub_context(ctx)
            if c:
                md["context"] = c
        return _event_row(contact, ts, name, mid, lineage, tz, md)

    @staticmethod
    def _identify(
        msg: Identify, contact: str, ts: datetime, mid: str, tz: str | None, ctx: dict[str, Any], lineage: Lineage
    ) -> UserPropertiesRow:
        traits = dict(_dict(ctx.get("traits")))
        if msg.traits:
            traits.update(msg.traits)
        email = _text(traits.get("email"))
        if email is not None:
            del traits["email"]
        phone = _text(traits.get("phone"))
        if phone is not None:
            del traits["phone"]
        trait_tz = _text(traits.get("timezone"))
        if trait_tz is not None:
            del traits["timezone"]
        country = _text(_dict(traits.get("address")).get("country"))
        if country is None:
            country = _text(traits.get("country"))
            if country is not None:
                del traits["country"]
        if country is None:
            country = _text(_dict(ctx.get("location")).get("country"))
        token = _text(_dict(ctx.get("device")).get("token"))
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

    @staticmethod
    def _line_hash(raw: bytes) -> str:
        """Content hash of the canonical call, minus fields that change per delivery (rare: messageId is standard)."""
        value = json.loads(raw)
        for key in _TRANSPORT_FIELDS:
            value.pop(key, None)
        return content_hash(value)

    # -- native ----------------------------------------------------------------------------------------------------
    def _native(self, raw: bytes, lineage: Lineage) -> Row:
        rec = self._validate(NATIVE_ADAPTER, raw, "kind")
        return self._native_row(rec, lineage)

    def _native_row(self, rec: NativeEvent | NativeUserProperties, lineage: Lineage) -> Row:
        """A validated native record (a direct publisher's JSON or a CSV line) -> its row."""
        if isinstance(rec, NativeEvent):
            ts = to_utc(rec.timestamp)
            iid = rec.instance_id
            self._check_future(ts, lineage.received_at, iid)
            md = self.scrubber.scrub(rec.metadata) if rec.metadata else {}
            return EventRow(rec.contact_id, ts, rec.event_name, iid, lineage, rec.timezone, md)
        updated = rec.updated_at
        if updated is not None:
            updated = to_utc(updated)
            self._check_future(updated, lineage.received_at, None)
        else:
            updated = lineage.received_at or self.now
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

    # -- csv -------------------------------------------------------------------------------------------------------
    def _csv(self, raw: bytes, lineage: Lineage) -> Row:
        """A data line of a CSV export (``shared.sources.csv_export``): a native record, mapped as ``_native`` does."""
        header = self._csv_header
        if not isinstance(header, CsvHeader):
            raise Rejection(RejectReason.INVALID_CSV, str(header))
        try:
            rec = header.record(raw)
        except ValidationError as exc:
            reason, message = reason_from_validation(raw, exc, "kind")
            if any(e["type"] == "missing" and e["loc"] == ("timestamp",) for e in exc.errors(include_url=False)):
                reason = RejectReason.MISSING_TIMESTAMP  # an empty timestamp cell: absent, not malformed
            raise Rejection(reason, message) from None
        return self._native_row(rec, lineage)

    # -- exporter files: mixpanel, amplitude -----------------------------------------------------------------------
    def _export_record(self, adapter: Any, raw: bytes, field_reasons: Mapping[tuple[str, ...], RejectReason]) -> Any:
        try:
            value = adapter.validate_json(raw)
        except ValidationError as exc:
            raise Rejection(*_export_reason(raw, exc, field_reasons)) from None
        if has_non_finite(raw):
            raise Rejection(RejectReason.INVALID_JSON, "NaN/Infinity are not JSON")
        return value

    def _mixpanel(self, raw: bytes, lineage: Lineage) -> Row:
        """A Mixpanel export line (``shared.sources.mixpanel``) -> an event."""
        msg: MixpanelEvent = self._export_record(MIXPANEL_ADAPTER, raw, mixpanel.FIELD_REASONS)
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
                f"properties.time {_short(props.time)} is not a positive epoch in seconds or milliseconds",
                iid,
            )
        # Mixpanel's processing time plays Segment's receivedAt: the same line always gets the same verdict.
        processed = epoch_to_utc(props.processing_time_ms) if props.processing_time_ms is not None else None
        self._check_future(ts, processed or lineage.received_at, iid)
        if iid is None:
            iid = content_hash(json.loads(raw))
        extra = props.model_extra or {}
        dropped = mixpanel.DROPPED_PROPERTIES
        if not dropped.isdisjoint(extra):
            extra = {k: v for k, v in extra.items() if k not in dropped}
        md = self.scrubber.scrub(extra) if extra else {}
        return _event_row(contact, ts, msg.event, iid, lineage, present(props.timezone), md)

    def _amplitude(self, raw: bytes, lineage: Lineage) -> Row:
        """An Amplitude export line (``shared.sources.amplitude``) -> an event, or user properties for ``$identify``."""
        msg: AmplitudeEvent = self._export_record(AMPLITUDE_ADAPTER, raw, amplitude.FIELD_REASONS)
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
        self._check_future(ts, to_utc(received) if received is not None else lineage.received_at, iid)
        if iid is None:
            iid = content_hash(json.loads(raw))
        if msg.event_type == amplitude.IDENTIFY:
            return self._amplitude_identify(msg, contact, ts, iid, lineage)
        scrubber = self.scrubber
        props = msg.event_properties
        md = scrubber.scrub(props) if props else {}
        d = msg.__dict__
        context = {name: d[name] for name in amplitude.CONTEXT_FIELDS if d[name] is not None}
        if context:
            context = scrubber.scrub(context)
            if context:
                md["context"] = context
        return _event_row(contact, ts, msg.event_type, iid, lineage, None, md)

    @staticmethod
    def _amplitude_identify(
        msg: AmplitudeEvent, contact: str, ts: datetime, iid: str, lineage: Lineage
    ) -> UserPropertiesRow:
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
                value = _text(traits.get(key))
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


def _export_reason(
    raw: bytes, exc: ValidationError, field_reasons: Mapping[tuple[str, ...], RejectReason]
) -> tuple[RejectReason, str]:
    """An exporter model's validation error -> one reason. The source module's table says what a field means (its
    fields sit at other places than Segment's); the rules are ``reason_from_validation``'s: a missing, null or blank
    name or id is ``missing_*``, one of the wrong type is ``invalid_field``. Anything else is left to it."""
    found: list[tuple[RejectReason, str]] = []
    for err in exc.errors(include_url=False):
        loc = tuple(str(p) for p in err["loc"])
        key = loc[:2] if loc[:2] in field_reasons else loc[:1]
        reason = field_reasons.get(key)
        if reason is None:
            continue
        etype = err["type"]
        if reason in (RejectReason.MISSING_IDENTITY, RejectReason.MISSING_EVENT_NAME) and not (
            etype in ("missing", "string_pattern_mismatch") or (etype == "string_type" and err.get("input") is None)
        ):
            reason = RejectReason.INVALID_FIELD
        found.append((reason, f"{'.'.join(key)}: {err['msg']}"))
    if not found:
        return reason_from_validation(raw, exc, "event")
    order = (
        RejectReason.MISSING_IDENTITY,
        RejectReason.MISSING_EVENT_NAME,
        RejectReason.INVALID_TIMESTAMP,
        RejectReason.INVALID_FIELD,
    )
    return min(found, key=lambda rm: order.index(rm[0]))


def parse_line(
    raw: bytes,
    *,
    fmt: str,
    lineage: Lineage,
    policy: PrivacyPolicy = DEFAULT_POLICY,
    max_future_skew_hours: float = 24.0,
    now: datetime | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
    csv_header: bytes | None = None,
) -> Row | RejectedRow:
    """One raw line (bytes, without its ``\\n``) -> one row. ``lineage`` is used as given (line number included).
    ``csv_header``: the header row of the file a ``csv`` line comes from."""
    return LineParser(fmt, policy, max_future_skew_hours, now, max_line_bytes, csv_header).parse(raw, lineage)


def parse_lines(
    lines: Iterable[tuple[int, bytes]],
    *,
    fmt: str,
    lineage: Lineage,
    policy: PrivacyPolicy = DEFAULT_POLICY,
    max_future_skew_hours: float = 24.0,
    now: datetime | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
    csv_header: bytes | None = None,
) -> ParsedBatch:
    """``(line_number, raw)`` pairs -> rows and rejected rows. ``lineage`` carries origin/received_at for the batch;
    each row gets its own line number. ``now`` is read once per batch (the future-timestamp reference when a record
    has no receivedAt and the batch has no received_at). ``csv_header``: the header row of a ``csv`` batch."""
    return LineParser(fmt, policy, max_future_skew_hours, now, max_line_bytes, csv_header).parse_batch(lines, lineage)

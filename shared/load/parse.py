"""Raw line -> validated, mapped, PII-free row (or a rejected row that says why). Pure: no I/O, no clock unless asked.

Every input line ends as exactly one row: an ``EventRow``, a ``UserPropertiesRow`` or a ``RejectedRow``. Nothing is
dropped and nothing raises for bad data, so the caller can ack the message after writing what comes back.

Speed matters (a 1 GB file is ~1.5 M lines): one ``validate_json`` pass over the bytes does parsing and validation in
Rust; Python only maps fields. Slow diagnosis (why exactly a line is bad) runs only for lines that failed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from shared import __version__
from shared.privacy import DEFAULT_POLICY, PrivacyPolicy
from shared.sources.common import Rejection, RejectReason, content_hash, has_non_finite, reason_from_validation, to_utc
from shared.sources.native import NATIVE_ADAPTER, NativeEvent
from shared.sources.segment import SEGMENT_ADAPTER, Alias, Group, Identify, Page, Screen, Track
from shared.warehouse.rows import EventRow, Lineage, RejectedRow, UserPropertiesRow

if TYPE_CHECKING:
    from collections.abc import Iterable

PROCESSOR_NAME = "landline.load"
FORMATS = ("segment", "native")
MAX_LINE_BYTES = 1_000_000  # Segment caps a call at 32 KB; far beyond that is a broken file, not an event
MAX_PAYLOAD_BYTES = 100_000  # what a rejected row keeps of the original line
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


def _dict(value: Any) -> dict[str, Any]:
    return value if type(value) is dict else {}


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


class LineParser:
    """Holds the per-batch settings so the per-line path does no setup work."""

    __slots__ = ("_fn", "fmt", "max_line_bytes", "now", "policy", "scrubber", "skew")

    def __init__(
        self,
        fmt: str,
        policy: PrivacyPolicy = DEFAULT_POLICY,
        max_future_skew_hours: float = 24.0,
        now: datetime | None = None,
        max_line_bytes: int = MAX_LINE_BYTES,
    ) -> None:
        self.fmt = fmt
        self.policy = policy
        self.scrubber = policy.scrubber
        self.skew = timedelta(hours=max_future_skew_hours)
        self.now = to_utc(now) if now is not None else datetime.now(UTC)
        self.max_line_bytes = max_line_bytes
        self._fn = {"segment": self._segment, "native": self._native}.get(fmt)

    def parse(self, raw: bytes, lineage: Lineage) -> Row | RejectedRow:
        try:
            if self._fn is None:
                raise Rejection(RejectReason.UNKNOWN_FORMAT, f"unknown format {self.fmt!r}; expected one of {FORMATS}")
            if len(raw) > self.max_line_bytes:
                raise Rejection(RejectReason.LINE_TOO_LARGE, f"{len(raw)} bytes > {self.max_line_bytes}")
            return self._fn(raw, lineage)
        except Rejection as rej:
            return rejected_row(raw, lineage, rej.reason, rej.message, rej.message_id)

    # -- shared ----------------------------------------------------------------------------------------------------
    def _validate(self, adapter: Any, raw: bytes, kind_field: str) -> Any:
        try:
            value = adapter.validate_json(raw)
        except ValidationError as exc:
            reason, message = reason_from_validation(raw, exc, kind_field)
            if reason is RejectReason.UNKNOWN_TYPE and not raw.lstrip().startswith(b"{"):
                reason, message = RejectReason.NOT_AN_OBJECT, "top-level JSON value is not an object"
            raise Rejection(reason, message) from None
        if has_non_finite(raw):  # checked after parsing: a byte search, and the rare re-parse only on a hit
            raise Rejection(RejectReason.INVALID_JSON, "NaN/Infinity are not JSON")
        return value

    def _check_future(self, ts: datetime, reference: datetime | None, message_id: str | None) -> None:
        ref = reference or self.now
        if ref.tzinfo is None:  # a caller's naive received_at means UTC
            ref = ref.replace(tzinfo=UTC)
        if ts - ref > self.skew:
            raise Rejection(
                RejectReason.FUTURE_TIMESTAMP,
                f"timestamp {ts.isoformat()} is more than {self.skew} after {ref.isoformat()}",
                message_id,
            )

    # -- segment ---------------------------------------------------------------------------------------------------
    def _segment(self, raw: bytes, lineage: Lineage) -> Row:
        msg = self._validate(SEGMENT_ADAPTER, raw, "type")
        mid = msg.messageId
        if mid is not None and (not mid or mid.isspace()):
            mid = None
        contact = msg.userId
        if not contact or contact.isspace():
            contact = msg.anonymousId
            if not contact or contact.isspace():
                contact = None
        if contact is None:
            raise Rejection(RejectReason.MISSING_IDENTITY, "neither userId nor anonymousId is set", mid)
        ts = msg.timestamp or msg.originalTimestamp or msg.receivedAt
        if ts is None:
            raise Rejection(
                RejectReason.MISSING_TIMESTAMP, "none of timestamp, originalTimestamp, receivedAt is set", mid
            )
        ts = to_utc(ts)
        self._check_future(ts, msg.receivedAt or lineage.received_at, mid)
        if not mid:
            mid = self._line_hash(raw)
        ctx = msg.context or {}
        tz = ctx.get("timezone")
        if type(tz) is not str:
            tz = None
        policy = self.scrubber
        t = type(msg)
        if t is Identify:
            return self._identify(msg, contact, ts, mid, tz, ctx, lineage)
        md: dict[str, Any]
        if t is Track:
            name = msg.event
            md = policy.scrub(msg.properties) if msg.properties else {}
        elif t is Page or t is Screen:
            name = "page_viewed" if t is Page else "screen_viewed"
            md = policy.scrub(msg.properties) if msg.properties else {}
            for key in ("name", "category"):
                value = getattr(msg, key)
                if value and not policy.is_pii_value(value):
                    md[key] = value
        elif t is Group:
            name = "group"
            md = {"group_id": msg.groupId}
            if msg.traits:
                md["traits"] = policy.scrub(msg.traits)
        elif t is Alias:
            name = "alias"
            md = {"previous_id": msg.previousId}
        else:  # pragma: no cover - the union is closed
            raise Rejection(RejectReason.UNKNOWN_TYPE, f"unmapped type {t.__name__}", mid)
        if ctx:
            c = policy.scrub_context(ctx)
            if c:
                md["context"] = c
        return EventRow(contact, ts, name, mid, lineage, tz, md)

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
        if type(rec) is NativeEvent:
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


def parse_line(
    raw: bytes,
    *,
    fmt: str,
    lineage: Lineage,
    policy: PrivacyPolicy = DEFAULT_POLICY,
    max_future_skew_hours: float = 24.0,
    now: datetime | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> Row | RejectedRow:
    """One raw line (bytes, without its ``\\n``) -> one row. ``lineage`` is used as given (line number included)."""
    return LineParser(fmt, policy, max_future_skew_hours, now, max_line_bytes).parse(raw, lineage)


def parse_lines(
    lines: Iterable[tuple[int, bytes]],
    *,
    fmt: str,
    lineage: Lineage,
    policy: PrivacyPolicy = DEFAULT_POLICY,
    max_future_skew_hours: float = 24.0,
    now: datetime | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> ParsedBatch:
    """``(line_number, raw)`` pairs -> rows and rejected rows. ``lineage`` carries origin/received_at for the batch;
    each row gets its own line number. ``now`` is read once per batch (the future-timestamp reference when a record
    has no receivedAt and the batch has no received_at)."""
    parser = LineParser(fmt, policy, max_future_skew_hours, now, max_line_bytes)
    batch = ParsedBatch()
    rows, rejected = batch.rows, batch.rejected
    fmt_name, origin, received_at = lineage.source_format, lineage.origin, lineage.received_at
    for number, raw in lines:
        row = parser.parse(raw, Lineage(fmt_name, origin, number, received_at))
        if isinstance(row, RejectedRow):
            rejected.append(row)
        else:
            rows.append(row)
    return batch

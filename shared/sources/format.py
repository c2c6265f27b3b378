"""What an input format is: the ``Format`` interface every format module implements, the ``MappingContext`` its mapper
receives, and the row builders and value helpers mappers share.

A format owns everything about itself in its one module (``shared.sources.<format>``): its pydantic models, where its
files live in a tenant's bucket (``locate``), how its files are read (``reader``: NDJSON or CSV text), its framing (a
header row that travels in front of every batch, ``header``/``read_header``) and how one line becomes one row
(``map``). ``shared.sources.registry`` lists the formats; ingest (``shared.ingest.layout``, ``shared.ingest.pipeline``)
and load (``shared.load.parse``, ``shared.load.pipeline``) read only the registry, never a format's name.

``map`` is the hot path (a 1 GB file is ~1.5 M lines): it gets the raw bytes of one line, that line's ``Lineage`` and
the batch's ``MappingContext`` (built once per batch, so a line does no setup work), and returns a row or raises
``Rejection``. Anything else it raises becomes the line's ``internal_error`` rejection in ``shared.load.parse``,
which also owns the per-line rules every format shares (size cap, BOM retry, bounded numbers).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from shared.privacy import DEFAULT_POLICY, PrivacyPolicy, Scrubber
from shared.sources.common import Rejection, RejectReason, to_utc
from shared.warehouse.rows import EventRow, Lineage, UserPropertiesRow

if TYPE_CHECKING:
    from collections.abc import Sequence

Row = EventRow | UserPropertiesRow
Reader = Literal["ndjson", "csv"]  # how a file's bytes are checked and split into lines (``shared.ingest.decode``)

# Reasons of ignored objects (machine-readable, for logs and the ledger). Generic ones are ``shared.ingest.layout``'s.
EXPORT_MARKER = "export_marker"
NOT_EVENT_EXPORT = "not_event_export"


@dataclass(frozen=True, slots=True)
class ObjectLayout:
    """What an object is: data of one format (``kind`` is the format's name; Segment adds source and UTC received
    day) or ``"ignored"`` with a reason."""

    kind: str
    source_id: str | None = None
    day: date | None = None
    reason: str | None = None

    @property
    def is_data(self) -> bool:
        return self.kind != "ignored"


def ignored(reason: str) -> ObjectLayout:
    return ObjectLayout(kind="ignored", reason=reason)


class HeaderError(ValueError):
    """A file's header row cannot describe records: ``reason`` is machine-readable (the ledger's), the message names
    the columns. Ingest rejects the whole file with it; the loader rejects every line of a message that carries it."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class MappingContext:
    """What a mapper may know besides its line, fixed for one batch: the tenant's privacy policy, the clock, the
    future-skew rule and, for a format with a header row, the parsed header (or why there is none)."""

    now: datetime  # the future-skew reference of a record without one (read once per batch)
    policy: PrivacyPolicy = DEFAULT_POLICY
    skew: timedelta = timedelta(hours=24)
    header: Any = None  # what ``Format.read_header`` returned for this batch's header row
    header_problem: str | None = None  # why ``header`` is None for a format that has one
    scrubber: Scrubber = field(init=False)  # the policy's, as a slot: read once per line

    def __post_init__(self) -> None:
        object.__setattr__(self, "scrubber", self.policy.scrubber)

    def check_future(self, ts: datetime, reference: datetime | None, message_id: str | None) -> None:
        """``Rejection(FUTURE_TIMESTAMP)`` if ``ts`` is more than the skew after ``reference`` (else after now)."""
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


class Format(ABC):
    """One input format. Subclass it in the format's own module, set the class attributes, implement ``map``, and
    add the instance to ``shared.sources.registry`` (README, "Add a format")."""

    name: ClassVar[str]  # ``format`` attribute of raw-events messages, ``source_format`` of rows
    layout_root: ClassVar[str | None] = None  # top-level folder (after the tenant's prefix) of its files; None: none
    reader: ClassVar[Reader] = "ndjson"
    header: ClassVar[bool] = False  # the first line of each file is a header row, sent in front of every batch

    @abstractmethod
    def map(self, raw: bytes, lineage: Lineage, ctx: MappingContext) -> Row:
        """One line (bytes, without its newline) -> its row; ``Rejection`` for a record that can never load."""

    def locate(self, parts: Sequence[str]) -> ObjectLayout | None:
        """Whether an object (its name after the tenant's prefix, split on ``/``) is one of this format's files:
        ``None`` if not; else its layout, which may say ``ignored`` (an exporter's marker). The default: any object
        below ``layout_root/`` is data, the folder under it the ``source_id``."""
        if self.layout_root is None or len(parts) < 2 or parts[0] != self.layout_root:
            return None
        return ObjectLayout(kind=self.name, source_id=parts[1] if len(parts) >= 3 else None)

    def read_header(self, raw: bytes) -> Any:
        """The parsed header row (``header`` formats only; a UTF-8 BOM is allowed), or ``HeaderError``."""
        raise NotImplementedError(f"format {self.name!r} has no header row")


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


def line_lineage(source_format: str, origin: str | None, number: int | None, received_at: datetime | None) -> Lineage:
    """``Lineage(...)``, built at half the cost (see above): the loader makes one per line."""
    if _LINEAGE_SET is None:  # pragma: no cover - only if Lineage changes shape
        return Lineage(source_format, origin, number, received_at)
    row = _new(Lineage)
    s0, s1, s2, s3 = _LINEAGE_SET
    s0(row, source_format)
    s1(row, origin)
    s2(row, number)
    s3(row, received_at)
    return row


def event_row(
    contact: str, ts: datetime, name: str, iid: str, lineage: Lineage, tz: str | None, md: dict[str, Any]
) -> EventRow:
    """``EventRow(...)``, built at half the cost (see above)."""
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


# -- values mappers pull out of records -----------------------------------------------------------------------------
def text_value(value: Any) -> str | None:
    """A scalar trait as a non-blank string, else None (dicts/lists stay in properties)."""
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def short_repr(value: Any, limit: int = 40) -> str:
    """A value for a message: its repr, cut (an untrusted number may have thousands of digits)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def dict_or_empty(value: Any) -> dict[str, Any]:
    return value if type(value) is dict else {}

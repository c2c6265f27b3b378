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

How a line of a given format maps is that format's (``Format.map`` in ``shared/sources/<format>.py``, found through
``shared.sources.registry``); this module is the driver every format shares: the bounds, the catch-all, the BOM
retry and the bounded numbers, around one ``map`` call per line bound once per batch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from shared import __version__
from shared.privacy import DEFAULT_POLICY, PrivacyPolicy
from shared.sources import registry
from shared.sources.common import (
    Rejection,
    RejectReason,
    bounded_numbers,
    has_odd_numbers,
    to_utc,
)
from shared.sources.format import HeaderError, MappingContext, Row, line_lineage
from shared.warehouse.rows import EventRow, Lineage, RejectedRow, UserPropertiesRow

if TYPE_CHECKING:
    from collections.abc import Iterable

    from shared.sources.format import Format

PROCESSOR_NAME = "landline.load"
MAX_LINE_BYTES = 1_000_000  # Segment caps a call at 32 KB; far beyond that is a broken file, not an event
MAX_PAYLOAD_BYTES = 100_000  # what a rejected row keeps of the original line
MAX_MESSAGE_CHARS = 500  # what a rejected row's message keeps of an exception's text
UTF8_BOM = b"\xef\xbb\xbf"

__all__ = ["LineParser", "ParsedBatch", "Row", "internal_error", "parse_line", "parse_lines", "rejected_row"]


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


def mapping_context(
    fmt: Format | None,
    policy: PrivacyPolicy = DEFAULT_POLICY,
    max_future_skew_hours: float = 24.0,
    now: datetime | None = None,
    header: bytes | None = None,
) -> MappingContext:
    """A batch's context; for a format with a header row, the header read once (a bad one, or none, rejects every
    line with the reason: the format's ``map`` says so)."""
    parsed: Any = None
    problem: str | None = None
    if fmt is not None and fmt.header and header is not None:
        try:
            parsed = fmt.read_header(header)
        except HeaderError as exc:
            problem = f"{exc.reason}: {exc.message}"
    return MappingContext(
        policy=policy,
        now=to_utc(now) if now is not None else datetime.now(UTC),
        skew=timedelta(hours=max_future_skew_hours),
        header=parsed,
        header_problem=problem,
    )


class LineParser:
    """Holds the per-batch settings so the per-line path does no setup work: the format's ``map``, bound once, and
    its ``MappingContext``."""

    __slots__ = ("_clean", "_map", "_unknown", "context", "fmt", "max_line_bytes")

    def __init__(
        self,
        fmt: str,
        policy: PrivacyPolicy = DEFAULT_POLICY,
        max_future_skew_hours: float = 24.0,
        now: datetime | None = None,
        max_line_bytes: int = MAX_LINE_BYTES,
        csv_header: bytes | None = None,
    ) -> None:
        """``csv_header``: the header row of the file the lines come from, for a format with one (``csv``)."""
        self.fmt = fmt
        found = registry.get(fmt)
        self._map = found.map if found is not None else None
        # a message of a format nobody reads: each line rejected as it came (replayable once the format exists)
        self._unknown = (
            None
            if found is not None
            else Rejection(RejectReason.UNKNOWN_FORMAT, f"unknown format {fmt!r}; expected one of {registry.names()}")
        )
        self.context = mapping_context(found, policy, max_future_skew_hours, now, csv_header)
        self.max_line_bytes = max_line_bytes
        self._clean: dict[int, Any] = {}  # dicts found free of odd numbers (shared.sources.common.has_odd_numbers)

    def parse(self, raw: bytes, lineage: Lineage) -> Row | RejectedRow:
        """One line -> its row, or its rejected row; never raises for anything about the line (see the module doc)."""
        if self._map is None:
            return self._unknown_format(raw, lineage)
        try:
            if len(raw) > self.max_line_bytes:
                raise Rejection(RejectReason.LINE_TOO_LARGE, f"{len(raw)} bytes > {self.max_line_bytes}")
            return _with_bounded_numbers(self._map(raw, lineage, self.context), self._clean)
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
        fn, ctx, limit = self._map, self.context, self.max_line_bytes
        if fn is None:
            rejected.extend(
                self._unknown_format(raw, line_lineage(fmt_name, origin, n, received_at)) for n, raw in lines
            )
            return batch
        bounded, clean = _with_bounded_numbers, self._clean
        for number, raw in lines:
            line = line_lineage(fmt_name, origin, number, received_at)
            try:
                if len(raw) > limit:
                    raise Rejection(RejectReason.LINE_TOO_LARGE, f"{len(raw)} bytes > {limit}")
                add_row(bounded(fn(raw, line, ctx), clean))
            except Rejection as rej:
                if raw[:3] == UTF8_BOM:
                    outcome = self.parse(raw[3:], line)
                    if type(outcome) is RejectedRow:
                        add_rejected(outcome)
                    else:
                        add_row(cast("Row", outcome))
                else:
                    add_rejected(rejected_row(raw, line, rej.reason, rej.message, rej.message_id))
            except MemoryError:
                raise
            except Exception as exc:  # see parse
                add_rejected(internal_error(raw, line, exc))
        return batch

    def _unknown_format(self, raw: bytes, lineage: Lineage) -> RejectedRow:
        rej = cast("Rejection", self._unknown)
        return rejected_row(raw, lineage, rej.reason, rej.message)


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
    ``csv_header``: the header row of the file a line comes from, for a format with one (``csv``)."""
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

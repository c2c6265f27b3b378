"""CSV exports in the product's native data model: a header row of column names, then one record per line.

Named ``csv_export`` so that it does not shadow the stdlib ``csv`` module it uses.

The rules (the README, "Other exporters", says the same to the people who write the files):

* The first line of a file is its header: column names, not a record. Names are trimmed; an empty or duplicate name
  rejects the whole file.
* A header with ``event_name`` holds events: ``contact_id``, ``event_name`` and ``timestamp`` are required,
  ``event_instance_id`` and ``timezone`` are optional. A header without ``event_name`` but with a profile column
  (``country``, ``push_token``, ``phone_number``, ``email_address``, ``updated_at``) holds user properties
  (``contact_id`` required, ``timezone`` optional). Any other header is read as events, so it says which event
  columns are missing.
* Every other column is a string in the event's ``metadata`` (scrubbed of PII like every event's) or the user's
  ``properties``. An empty cell is an absent value.
* Cells are split by the stdlib ``csv`` module (``,`` delimiter, ``"`` quoting, ``""`` for a quote inside a quoted
  field). Files are split on ``\\n`` before any CSV parsing, so a field must not contain a newline: a quoted field
  that spans lines leaves an odd number of quotes on each of its lines, and such a line is rejected as
  ``invalid_csv``, as is a line whose field count differs from the header's.

Records are validated by the native pydantic models (``shared.sources.native``), so timestamps follow the same rules
(ISO-8601 with a zone) and ids the same non-blank rule, and mapped as native records are (``native_row``).

Framing (``CsvFormat.header``), the rule every stage follows: the header row is not a record. Ingest checks it before
publishing anything (a bad one rejects the whole file, naming the columns) and sends it in front of every batch's
payload, so each message is a small CSV file the loader reads alone; ``first_line``/``last_line`` number the data
lines with their real line numbers; the ledger's ``lines`` count data lines only, so ``lines == events +
user_property_rows + rejected_lines + duplicates`` keeps holding; a rejected line keeps the header in its payload,
so a replay republishes a one-line CSV file.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import ValidationError

from shared.sources.common import Rejection, RejectReason, reason_from_validation
from shared.sources.format import Format, HeaderError
from shared.sources.native import NativeEvent, NativeUserProperties, native_row

if TYPE_CHECKING:
    from shared.sources.format import MappingContext, Row
    from shared.warehouse.rows import Lineage

__all__ = ["FORMAT", "CsvFormat", "CsvHeader", "HeaderError", "parse_header", "split_line"]

EVENT_FIELDS = ("contact_id", "event_name", "timestamp", "event_instance_id", "timezone")
EVENT_REQUIRED = ("contact_id", "event_name", "timestamp")
USER_FIELDS = ("contact_id", "country", "timezone", "push_token", "phone_number", "email_address", "updated_at")
USER_REQUIRED = ("contact_id",)
PROFILE_COLUMNS = ("country", "push_token", "phone_number", "email_address", "updated_at")
# A header longer than this is not a header (and would crowd out the batch it is prepended to).
MAX_HEADER_BYTES = 65_536

Kind = Literal["event", "user_properties"]


def _cells(text: str) -> list[str]:
    """One physical line -> its fields, or ``Rejection(INVALID_CSV)``."""
    if text.count('"') % 2:
        raise Rejection(
            RejectReason.INVALID_CSV, "unbalanced quote (a quoted field spanning lines? CSV fields must not contain newlines)"
        )
    try:
        rows = list(csv.reader([text], strict=True))
    except csv.Error as exc:
        raise Rejection(RejectReason.INVALID_CSV, f"not a CSV line: {exc}") from None
    return rows[0] if rows else []


@dataclass(frozen=True, slots=True)
class CsvHeader:
    """A validated header: the column names in order and what the records are."""

    columns: tuple[str, ...]
    kind: Kind

    @property
    def model_fields(self) -> tuple[str, ...]:
        return EVENT_FIELDS if self.kind == "event" else USER_FIELDS

    def record(self, raw: bytes) -> NativeEvent | NativeUserProperties:
        """One data line -> the validated native record. Raises ``Rejection`` (invalid_csv, invalid_utf8) or
        ``pydantic.ValidationError`` (the caller names the field)."""
        try:
            text = raw.decode("utf-8").removeprefix("\ufeff")  # a BOM starting a line of concatenated exports
        except UnicodeDecodeError as exc:
            raise Rejection(RejectReason.INVALID_UTF8, f"invalid UTF-8 at byte {exc.start}") from None
        cells = _cells(text)
        if len(cells) != len(self.columns):
            raise Rejection(
                RejectReason.INVALID_CSV, f"{len(cells)} fields, but the header has {len(self.columns)} columns"
            )
        own = self.model_fields
        body: dict[str, object] = {}
        extra: dict[str, str] = {}
        for name, value in zip(self.columns, cells, strict=True):
            if value == "":
                continue  # an empty cell is an absent value
            if name in own:
                body[name] = value
            else:
                extra[name] = value
        if self.kind == "event":
            if extra:
                body["metadata"] = extra
            # JSON mode: the models' timestamps are strict, and only JSON mode reads them from strings
            return NativeEvent.model_validate_json(json.dumps(body))
        if extra:
            body["properties"] = extra
        return NativeUserProperties.model_validate_json(json.dumps(body))


def split_line(raw: bytes) -> list[str]:
    """The fields of one CSV line (for tests and diagnostics); ``Rejection(INVALID_CSV)`` if it is not one."""
    return _cells(raw.decode("utf-8"))


def parse_header(raw: bytes) -> CsvHeader:
    """The header line (bytes, without its newline; a UTF-8 BOM is allowed) -> ``CsvHeader``, or ``HeaderError``."""
    if len(raw) > MAX_HEADER_BYTES:
        raise HeaderError("csv_header_too_long", f"the header line is {len(raw)} bytes, more than {MAX_HEADER_BYTES}")
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff").removesuffix("\r")
    except UnicodeDecodeError as exc:
        raise HeaderError("invalid_csv_header", f"the header is not UTF-8 (byte {exc.start})") from None
    try:
        names = [c.strip() for c in _cells(text)]
    except Rejection as rej:
        raise HeaderError("invalid_csv_header", f"the header row is not a CSV line: {rej.message}") from None
    problems: list[str] = []
    empty = [str(i + 1) for i, name in enumerate(names) if not name]
    if empty:
        problems.append(f"empty column name at position(s) {', '.join(empty)}")
    dups = sorted(name for name, n in Counter(names).items() if n > 1 and name)
    if dups:
        problems.append(f"duplicate column(s): {', '.join(dups)}")
    kind: Kind = "event"
    if "event_name" not in names and any(c in names for c in PROFILE_COLUMNS):
        kind = "user_properties"
    required = EVENT_REQUIRED if kind == "event" else USER_REQUIRED
    missing = [c for c in required if c not in names]
    if missing:
        what = "events" if kind == "event" else "user properties"
        problems.append(f"missing required column(s) {', '.join(missing)} ({what} need {', '.join(required)})")
    if problems:
        raise HeaderError("invalid_csv_header", f"{'; '.join(problems)}; the header is: {', '.join(names)[:300]}")
    return CsvHeader(tuple(names), kind)


class CsvFormat(Format):
    """CSV files in the native data model under ``csv/<source>/...`` (plain or gzipped), header row first."""

    name = "csv"
    layout_root = "csv"
    reader = "csv"
    header = True

    def read_header(self, raw: bytes) -> CsvHeader:
        return parse_header(raw)

    def map(self, raw: bytes, lineage: Lineage, ctx: MappingContext) -> Row:
        """A data line -> the native record its header describes -> its row."""
        header = ctx.header
        if header is None:
            raise Rejection(RejectReason.INVALID_CSV, ctx.header_problem or "no CSV header row came with this line")
        try:
            rec = header.record(raw)
        except ValidationError as exc:
            reason, message = reason_from_validation(raw, exc, "kind")
            if any(e["type"] == "missing" and e["loc"] == ("timestamp",) for e in exc.errors(include_url=False)):
                reason = RejectReason.MISSING_TIMESTAMP  # an empty timestamp cell: absent, not malformed
            raise Rejection(reason, message) from None
        return native_row(rec, lineage, ctx)


FORMAT = CsvFormat()

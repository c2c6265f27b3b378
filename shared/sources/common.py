"""Validators and helpers every source format shares: reason codes, strict timestamps, JSON diagnosis, content hashes.

The fast path is one pydantic ``validate_json`` pass per line. Everything here that is slow (re-parsing with the
stdlib, walking pydantic errors, walking a record's numbers) runs only after that pass failed, or after a cheap byte
filter said it might be needed, to name the precise reason.

Untrusted values are bounded here, so that one line can only ever be rejected, never raise: an aware time that leaves
year 1..9999 once in UTC is ``invalid_timestamp`` (``to_utc``); JSON nested deeper than the parser's limit is
``invalid_json`` (``diagnose_json``); a number that overflows a float64 (``1e400``) is ``invalid_field`` rather than a
silent ``null`` in the warehouse; an integer beyond int64 is kept exactly, as its decimal string (``bounded_numbers``:
BigQuery's JSON type would round it to a float64).
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AwareDatetime, Strict, StringConstraints, ValidationError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from pydantic import TypeAdapter


class RejectReason(StrEnum):
    """Stable, machine-readable reason codes of the ``rejected`` table. Never rename one: replays filter on them."""

    INVALID_JSON = "invalid_json"
    INVALID_UTF8 = "invalid_utf8"
    INVALID_UNICODE = "invalid_unicode"
    NOT_AN_OBJECT = "not_an_object"
    UNKNOWN_TYPE = "unknown_type"
    MISSING_IDENTITY = "missing_identity"
    MISSING_EVENT_NAME = "missing_event_name"
    MISSING_GROUP_ID = "missing_group_id"
    MISSING_PREVIOUS_ID = "missing_previous_id"
    INVALID_TIMESTAMP = "invalid_timestamp"
    MISSING_TIMESTAMP = "missing_timestamp"
    FUTURE_TIMESTAMP = "future_timestamp"
    INVALID_FIELD = "invalid_field"
    TRUNCATED_LINE = "truncated_line"
    LINE_TOO_LARGE = "line_too_large"
    UNKNOWN_FORMAT = "unknown_format"
    INVALID_CSV = "invalid_csv"  # a CSV line whose field count differs from its header's, or with an unbalanced quote
    TOO_MANY_LINES = "too_many_lines"  # a direct publish of more lines than one message may carry: rejected whole
    INTERNAL_ERROR = "internal_error"  # a bug met while mapping this line (the message names the exception type)


class Rejection(Exception):
    """A record that can never load. Raised inside mapping, turned into a ``RejectedRow`` by ``shared.load.parse``."""

    def __init__(self, reason: RejectReason, message: str, message_id: str | None = None) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.message_id = message_id


# ISO-8601 with a zone only (``Z`` or ``+hh:mm``): a naive time is ambiguous, and strict mode refuses epoch numbers.
Timestamp = Annotated[AwareDatetime, Strict()]
# Non-blank string: the regex runs in Rust; ``\S`` anywhere means "not only whitespace". The value is kept as sent.
NonBlankStr = Annotated[str, StringConstraints(pattern=r"\S")]


def present(value: str | None) -> str | None:
    """``null`` and blank strings both mean "absent" (Segment libraries send ``"userId": null`` and ``""``).

    Done in Python at mapping time rather than as a pydantic BeforeValidator: a Python callback per field per line
    costs more than this check.
    """
    return value if value and not value.isspace() else None


def to_utc(value: datetime) -> datetime:
    """Aware datetime in ``datetime.UTC`` (pydantic hands back its own fixed-offset tzinfo).

    ``Rejection(INVALID_TIMESTAMP)`` if the instant is outside what a datetime (and BigQuery) holds, year 1..9999 in
    UTC: ``0001-01-01T00:00:00+01:00`` is a valid ISO string whose UTC instant falls in year 0."""
    if value.tzinfo is UTC:
        return value
    if value.utcoffset():
        try:
            return value.astimezone(UTC)
        except OverflowError:
            raise out_of_range_time(value) from None
    return value.replace(tzinfo=UTC)


def out_of_range_time(value: datetime) -> Rejection:
    return Rejection(RejectReason.INVALID_TIMESTAMP, f"{value.isoformat()} is outside year 1..9999 once in UTC")


def canonical_json(value: Any) -> str:
    """Key-order and whitespace independent JSON, so equal content hashes equally."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def content_hash(value: Any) -> str:
    """sha256 of the canonical JSON of ``value``: a stable id for records that carry none."""
    return hashlib.sha256(canonical_json(value).encode("utf-8", "surrogatepass")).hexdigest()


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def has_non_finite(raw: bytes) -> bool:
    """True if ``raw`` holds a bare NaN/Infinity token. pydantic's parser accepts them; strict JSON does not.

    The byte search is the cheap filter; the stdlib re-parse only runs when the word appears (maybe inside a string).
    """
    # memchr for one rare capital first; the substring search only when it is there
    if not ((raw.find(b"N") >= 0 and b"NaN" in raw) or (raw.find(b"I") >= 0 and b"Infinity" in raw)):
        return False
    try:
        json.loads(raw, parse_constant=_no_constant)
    except ValueError as exc:
        return "not valid JSON" in str(exc)
    return False


# -- numbers the warehouse cannot hold as sent ----------------------------------------------------------------------
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def has_odd_numbers(value: dict[str, Any] | list[Any], checked: dict[int, Any]) -> bool:
    """True if ``value`` (a record's metadata or properties) holds an integer beyond int64 or a non-finite float.

    Runs on every stored row, so it only answers yes or no, as tightly as Python allows; ``bounded_numbers`` does the
    rare work. ``checked`` remembers dicts already found clean, by identity (holding them, so an id cannot be reused):
    the privacy scrubber hands back one shared object for a context section that repeats (``app``, ``os``,
    ``library``...), and those are most of an event's values. Cost (callgrind, bench lines): ~7k instructions a row,
    ~4% of the stage, against ~17k without ``checked`` and ~25k for a byte-level filter over the raw line."""
    items: Iterable[Any] = value.values() if isinstance(value, dict) else value
    for x in items:
        t = type(x)
        if t is str:
            continue
        if t is dict:
            if x and checked.get(id(x)) is not x:
                if has_odd_numbers(x, checked):
                    return True
                if len(checked) >= _CHECKED_LIMIT:
                    checked.clear()
                checked[id(x)] = x
        elif t is list:
            if x and has_odd_numbers(x, checked):
                return True
        elif t is float:
            if x - x != 0.0:  # inf - inf and nan - nan are nan; every finite float gives 0.0
                return True
        elif t is int and not INT64_MIN <= x <= INT64_MAX:
            return True
    return False


_CHECKED_LIMIT = 4096


def bounded_numbers(value: Any, path: str = "") -> Any:
    """``value`` (a record's metadata or properties) with every integer beyond int64 as its exact decimal string:
    BigQuery's JSON type would round it to a float64, silently. ``Rejection(INVALID_FIELD)`` for a float that
    overflowed to infinity while parsing (``1e400``): the writer would store it as ``null``, silently.

    Copy-on-write: containers are copied only along a path that changes, so the caller's objects (the privacy
    scrubber memoises context sections) are never modified."""
    t = type(value)
    if t is dict:
        out: dict[str, Any] | None = None
        for k, v in value.items():
            new = bounded_numbers(v, f"{path}.{k}" if path else str(k))
            if new is not v:
                if out is None:
                    out = dict(value)
                out[k] = new
        return value if out is None else out
    if t is list:
        copy: list[Any] | None = None
        for i, v in enumerate(value):
            new = bounded_numbers(v, f"{path}[{i}]")
            if new is not v:
                if copy is None:
                    copy = list(value)
                copy[i] = new
        return value if copy is None else copy
    if t is int:
        return value if INT64_MIN <= value <= INT64_MAX else str(value)
    if t is float and not math.isfinite(value):
        raise Rejection(
            RejectReason.INVALID_FIELD, f"{path or 'value'}: number out of range (it overflows a 64-bit float)"
        )
    return value


def diagnose_json(raw: bytes, parser_message: str) -> tuple[RejectReason, str]:
    """Name why ``raw`` is not acceptable JSON, after the fast parser said it is not."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return RejectReason.INVALID_UTF8, f"invalid UTF-8 at byte {exc.start}"
    stripped = text.strip()
    if not stripped:
        return RejectReason.INVALID_JSON, "empty line"
    if "recursion limit" in parser_message:  # re-parsing would only hit Python's own limit (RecursionError)
        return RejectReason.INVALID_JSON, f"JSON nested too deeply ({parser_message})"
    try:
        value = json.loads(stripped, parse_constant=_no_constant)
    except RecursionError:
        return RejectReason.INVALID_JSON, f"JSON nested too deeply ({parser_message})"
    except ValueError as exc:
        msg = str(exc)
        if "not valid JSON" in msg:
            return RejectReason.INVALID_JSON, msg
        if ("EOF while parsing" in parser_message or "Unterminated string" in msg) and stripped[0] in "{[":
            return RejectReason.TRUNCATED_LINE, f"line ends inside a JSON value ({parser_message})"
        return RejectReason.INVALID_JSON, parser_message
    try:
        canonical_json(value).encode("utf-8")
    except UnicodeEncodeError:
        return RejectReason.INVALID_UNICODE, "lone surrogate escape (e.g. \\ud800): not encodable as UTF-8"
    return RejectReason.INVALID_JSON, parser_message


# Which reason a pydantic error on a given field means; anything else is ``invalid_field``.
FIELD_REASONS: dict[str, RejectReason] = {
    "event": RejectReason.MISSING_EVENT_NAME,
    "event_name": RejectReason.MISSING_EVENT_NAME,
    "groupId": RejectReason.MISSING_GROUP_ID,
    "previousId": RejectReason.MISSING_PREVIOUS_ID,
    "userId": RejectReason.MISSING_IDENTITY,
    "contact_id": RejectReason.MISSING_IDENTITY,
    "timestamp": RejectReason.INVALID_TIMESTAMP,
    "originalTimestamp": RejectReason.INVALID_TIMESTAMP,
    "sentAt": RejectReason.INVALID_TIMESTAMP,
    "receivedAt": RejectReason.INVALID_TIMESTAMP,
    "updated_at": RejectReason.INVALID_TIMESTAMP,
}
_MISSING_NAMES = {
    RejectReason.MISSING_EVENT_NAME,
    RejectReason.MISSING_GROUP_ID,
    RejectReason.MISSING_PREVIOUS_ID,
    RejectReason.MISSING_IDENTITY,
}
# When several errors come back, the most specific wins.
_PRIORITY = [
    RejectReason.NOT_AN_OBJECT,
    RejectReason.UNKNOWN_TYPE,
    RejectReason.MISSING_IDENTITY,
    RejectReason.MISSING_EVENT_NAME,
    RejectReason.MISSING_GROUP_ID,
    RejectReason.MISSING_PREVIOUS_ID,
    RejectReason.INVALID_TIMESTAMP,
    RejectReason.MISSING_TIMESTAMP,
    RejectReason.INVALID_FIELD,
]
_TYPE_REASONS = {
    "dict_type": RejectReason.NOT_AN_OBJECT,
    "model_type": RejectReason.NOT_AN_OBJECT,
    "model_attributes_type": RejectReason.NOT_AN_OBJECT,
    "union_tag_invalid": RejectReason.UNKNOWN_TYPE,
    "union_tag_not_found": RejectReason.UNKNOWN_TYPE,
}


def reason_from_validation(raw: bytes, exc: ValidationError, kind_field: str) -> tuple[RejectReason, str]:
    """Map a pydantic ``ValidationError`` to one reason code and a message that names the field."""
    found: list[tuple[RejectReason, str]] = []
    for err in exc.errors(include_url=False):
        etype, loc = err["type"], err["loc"]
        if etype == "json_invalid":
            return diagnose_json(raw, err.get("ctx", {}).get("error", err["msg"]))
        if etype in _TYPE_REASONS and len(loc) == 0:
            reason = _TYPE_REASONS[etype]
            if reason is RejectReason.UNKNOWN_TYPE:
                tag = err.get("ctx", {}).get("tag")
                msg = f"unknown {kind_field} {tag!r}" if tag is not None else f"no {kind_field!r} field"
            else:
                msg = "top-level JSON value is not an object"
            found.append((reason, msg))
            continue
        field_loc = loc[1:] if len(loc) > 1 else loc  # loc[0] is the union tag
        name = str(field_loc[0]) if field_loc else ""
        reason = (
            FIELD_REASONS.get(name, RejectReason.INVALID_FIELD) if len(field_loc) == 1 else RejectReason.INVALID_FIELD
        )
        if reason in _MISSING_NAMES and not (
            etype in ("missing", "string_pattern_mismatch") or (etype == "string_type" and err.get("input") is None)
        ):
            reason = RejectReason.INVALID_FIELD  # present but of the wrong type: say which field, not "missing"
        path = ".".join(str(p) for p in field_loc)
        found.append((reason, f"{path}: {err['msg']}"))
    if not found:
        return RejectReason.INVALID_FIELD, str(exc)
    found.sort(key=lambda rm: _PRIORITY.index(rm[0]))
    return found[0]


# -- one validate_json pass per line, and the reason when it fails ---------------------------------------------------
def validate_record(adapter: TypeAdapter[Any], raw: bytes, kind_field: str) -> Any:
    """``raw`` validated by ``adapter`` in one Rust pass, or ``Rejection`` naming the reason (``kind_field``: the
    discriminator's name, for "unknown type" messages)."""
    try:
        value = adapter.validate_json(raw)
    except ValidationError as exc:
        raise invalid_record(raw, exc, kind_field) from None
    if has_non_finite(raw):  # checked after parsing: a byte search, and the rare re-parse only on a hit
        raise Rejection(RejectReason.INVALID_JSON, "NaN/Infinity are not JSON")
    return value


def invalid_record(raw: bytes, exc: ValidationError, kind_field: str) -> Rejection:
    """The rejection of a line that failed ``validate_json`` (the slow diagnosis, for failed lines only)."""
    reason, message = reason_from_validation(raw, exc, kind_field)
    if reason is RejectReason.UNKNOWN_TYPE and not raw.lstrip().startswith(b"{"):
        reason, message = RejectReason.NOT_AN_OBJECT, "top-level JSON value is not an object"
    return Rejection(reason, message)


def validate_export_record(
    adapter: TypeAdapter[Any], raw: bytes, field_reasons: Mapping[tuple[str, ...], RejectReason]
) -> Any:
    """``validate_record`` for an exporter's line, whose fields sit at other places than Segment's: the format's
    ``field_reasons`` table says which reason an error at a location means."""
    try:
        value = adapter.validate_json(raw)
    except ValidationError as exc:
        raise Rejection(*_export_reason(raw, exc, field_reasons)) from None
    if has_non_finite(raw):
        raise Rejection(RejectReason.INVALID_JSON, "NaN/Infinity are not JSON")
    return value


def _export_reason(
    raw: bytes, exc: ValidationError, field_reasons: Mapping[tuple[str, ...], RejectReason]
) -> tuple[RejectReason, str]:
    """An exporter model's validation error -> one reason. The rules are ``reason_from_validation``'s: a missing,
    null or blank name or id is ``missing_*``, one of the wrong type is ``invalid_field``. Anything the table does
    not name is left to it."""
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

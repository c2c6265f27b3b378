"""The raw-events message: the one contract between the publishers of ``raw-events.<tenant>`` and the loader.

Publishers: ``ingest_file`` (one message per batch of a file's lines), ``landline replay`` (one rejected line back at
its position), ``landline replay --dead-letters`` (a parked message as it was, see ``shared.dead_letters``) and any
direct publisher (a native event or NDJSON, with ``format`` and perhaps ``tenant``). Consumer: ``load_events``.
They all build or read a :class:`RawEventsMessage`; nothing else spells an attribute.

The wire format (kept byte for byte: messages in flight and in dead-letter topics must still load):

* data: the lines joined by ``\\n`` (a direct publisher may end them with a newline or ``\\r\\n``); a header-framed
  format's (``csv``) header row comes first, so each message is a small file the loader reads alone.
* attributes, all optional strings: ``tenant``, ``format`` (default ``native``), ``origin``
  (``gs://bucket/object#generation``; none for a direct publish, which is ``pubsub://<topic>/<message id>``),
  ``batch_index``/``batch_id``, ``first_line``/``last_line``/``line_count``/``skipped_lines`` (the payload lines'
  numbers in their file: ``5-7,10`` are blank lines skipped), ``partial_line`` (a truncated file's broken last line),
  ``oversized=true`` with ``original_bytes`` (one line too large for a message: its head, and its length),
  ``source_id`` (the bucket layout's), ``replayed_from`` (a rejected_id) and ``dead_letter_id`` (replay marks).

Any publisher can set any attribute (reliability findings 5b, 18), so :meth:`RawEventsMessage.decode` never raises on
attributes: a malformed number is absent, malformed or inconsistent line numbers are absent (lines are numbered
from 1), and :meth:`RawEventsMessage.line_numbers` checks that the declared numbers describe exactly the payload's
lines before it builds any list. The ``tenant`` attribute is only what the publisher claims; the delivering topic
names the tenant (``shared.load.pipeline.topic_tenant``). The one unusable message is one whose data is not base64
(:class:`UnusableMessage`, a bug-class failure: retried, then dead-lettered, as before).
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.sources import registry
from shared.sources.registry import DEFAULT_FORMAT

if TYPE_CHECKING:
    from collections.abc import Mapping

    from shared.envelopes import PubSubMessage

__all__ = [
    "DEFAULT_FORMAT",
    "MAX_NUMBER",
    "LineSpan",
    "RawEventsMessage",
    "UnusableMessage",
    "attribute_line_numbers",
    "direct_publish_origin",
    "header_framed",
    "int_attribute",
    "origin_bucket",
    "split_framing",
]

MAX_NUMBER = 10**15 - 1  # line numbers and sizes: far beyond any real file, and at most 15 digits on the wire
_NUMBER = re.compile(r"[0-9]{1,15}")

# attribute names, in the order ingest has always written them
TENANT, FORMAT, ORIGIN, BATCH_INDEX, BATCH_ID = "tenant", "format", "origin", "batch_index", "batch_id"
FIRST_LINE, LAST_LINE, LINE_COUNT, SKIPPED_LINES = "first_line", "last_line", "line_count", "skipped_lines"
PARTIAL_LINE, OVERSIZED, ORIGINAL_BYTES = "partial_line", "oversized", "original_bytes"
SOURCE_ID, REPLAYED_FROM, DEAD_LETTER_ID = "source_id", "replayed_from", "dead_letter_id"


class UnusableMessage(ValueError):
    """A message nothing can be read from (its data is not base64): not a rejected line, a broken delivery."""


def int_attribute(value: str | None) -> int | None:
    """A non-negative integer attribute as sent by any publisher, or ``None`` if absent or malformed (``x``, ``1e9``,
    ``-3``, a thousand digits): the caller falls back to what it can tell from the payload."""
    if value is None or not _NUMBER.fullmatch(value):
        return None
    return int(value)


def header_framed(fmt: str) -> bool:
    """Whether messages of format ``fmt`` start with its header row (the format's framing, from the registry)."""
    found = registry.get(fmt)
    return found is not None and found.header


def direct_publish_origin(topic: str, message_id: str) -> str:
    """The origin of a message published without one: stable across redeliveries and dead-letter replays."""
    return f"pubsub://{topic}/{message_id}"


def origin_bucket(origin: str | None) -> str | None:
    """The bucket of a ``gs://bucket/object#generation`` origin; ``None`` for any other origin."""
    if not origin or not origin.startswith("gs://"):
        return None
    return origin.removeprefix("gs://").partition("/")[0]


@dataclass(frozen=True, slots=True)
class LineSpan:
    """The physical line numbers of a message's lines: ``first``..``last`` without the blank ``skipped`` ranges."""

    first: int
    last: int
    skipped: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        if not 1 <= self.first <= self.last <= MAX_NUMBER:
            raise ValueError(f"line numbers must satisfy 1 <= first <= last <= {MAX_NUMBER}: {self.first}, {self.last}")
        previous = self.first  # each range lies strictly inside first..last, after the previous one and a line
        for lo, hi in self.skipped:
            if not previous < lo <= hi < self.last:
                raise ValueError(f"skipped range {lo}-{hi} is not inside {self.first}..{self.last} after {previous}")
            previous = hi + 1

    @property
    def count(self) -> int:
        """How many lines the span numbers (computed, never listed)."""
        return self.last - self.first + 1 - sum(hi - lo + 1 for lo, hi in self.skipped)

    def numbers(self) -> list[int]:
        """Every number, in order: ``count`` of them (compare ``count`` first when the span is any publisher's)."""
        out: list[int] = []
        start = self.first
        for lo, hi in self.skipped:
            out.extend(range(start, lo))
            start = hi + 1
        out.extend(range(start, self.last + 1))
        return out

    def attributes(self) -> dict[str, str]:
        attributes = {FIRST_LINE: str(self.first), LAST_LINE: str(self.last), LINE_COUNT: str(self.count)}
        if self.skipped:
            attributes[SKIPPED_LINES] = ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in self.skipped)
        return attributes

    @classmethod
    def from_attributes(cls, attributes: Mapping[str, str]) -> LineSpan | None:
        """The span the attributes declare, or ``None`` if any part is absent, malformed or out of order, or the
        declared ``line_count`` disagrees (the cost is bounded by the attributes' size, never by their numbers)."""
        first, last = int_attribute(attributes.get(FIRST_LINE)), int_attribute(attributes.get(LAST_LINE))
        if first is None or last is None:
            return None
        skipped: list[tuple[int, int]] = []
        for part in filter(None, attributes.get(SKIPPED_LINES, "").split(",")):
            lo_text, _, hi_text = part.partition("-")
            lo, hi = int_attribute(lo_text), int_attribute(hi_text or lo_text)
            if lo is None or hi is None:
                return None
            skipped.append((lo, hi))
        try:
            span = cls(first, last, tuple(skipped))
        except ValueError:  # out of order: the same rules a producer's span must follow
            return None
        declared = attributes.get(LINE_COUNT)
        if declared is not None and int_attribute(declared) != span.count:
            return None
        return span


def attribute_line_numbers(attributes: Mapping[str, str], count: int) -> list[int] | None:
    """Line number of each of ``count`` payload lines as the attributes declare them, or ``None`` if they are absent,
    malformed or do not describe exactly ``count`` lines (checked before any list is built)."""
    span = LineSpan.from_attributes(attributes)
    return span.numbers() if span is not None and span.count == count else None


def split_framing(data: bytes, fmt: str) -> tuple[bytes | None, bytes]:
    """(header row, lines) of published ``data``: a header-framed format's first line is its header row (its line
    ending, ``\\r`` included, is not part of it); any other format has none."""
    if not header_framed(fmt):
        return None, data
    header, _, payload = data.partition(b"\n")
    return header.rstrip(b"\r"), payload


@dataclass(frozen=True, slots=True)
class RawEventsMessage:
    """One raw-events message, typed. ``payload`` is the lines (without a header row), ``header`` the header row of a
    header-framed format (and ``None`` for any other), ``span`` the declared line numbers (``None``: from 1)."""

    payload: bytes = b""
    format: str = DEFAULT_FORMAT
    header: bytes | None = None
    origin: str | None = None
    tenant: str | None = None  # what the publisher claims; the topic decides
    span: LineSpan | None = None
    partial_line: int | None = None
    oversized: bool = False
    original_bytes: int | None = None
    batch_index: int | None = None
    batch_id: str | None = None
    source_id: str | None = None
    replayed_from: str | None = None
    dead_letter_id: str | None = None

    def __post_init__(self) -> None:
        framed = header_framed(self.format)
        if framed != (self.header is not None):
            raise ValueError(f"a {self.format!r} message {'needs' if framed else 'has no'} header row")
        if self.header is not None and (b"\n" in self.header or self.header.endswith(b"\r")):
            raise ValueError("a header row holds no line ending")
        if self.origin == "":
            raise ValueError("an origin is a non-empty string or None (a direct publish)")
        for name in ("partial_line", "original_bytes", "batch_index"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= MAX_NUMBER:
                raise ValueError(f"{name} must be within 0..{MAX_NUMBER}: {value}")

    @classmethod
    def decode(cls, data: bytes, attributes: Mapping[str, str]) -> RawEventsMessage:
        """Any publisher's data and attributes -> the message; never raises (what is malformed is absent)."""
        fmt = attributes.get(FORMAT, DEFAULT_FORMAT)
        header, payload = split_framing(data, fmt)
        return cls(
            payload=payload,
            format=fmt,
            header=header,
            origin=attributes.get(ORIGIN) or None,
            tenant=attributes.get(TENANT),
            span=LineSpan.from_attributes(attributes),
            partial_line=int_attribute(attributes.get(PARTIAL_LINE)),
            oversized=attributes.get(OVERSIZED) == "true",
            original_bytes=int_attribute(attributes.get(ORIGINAL_BYTES)),
            batch_index=int_attribute(attributes.get(BATCH_INDEX)),
            batch_id=attributes.get(BATCH_ID),
            source_id=attributes.get(SOURCE_ID),
            replayed_from=attributes.get(REPLAYED_FROM),
            dead_letter_id=attributes.get(DEAD_LETTER_ID),
        )

    @classmethod
    def from_pubsub(cls, message: PubSubMessage) -> RawEventsMessage:
        """A delivered message -> the message; :class:`UnusableMessage` if its data is not base64."""
        try:
            data = message.decoded()
        except (binascii.Error, ValueError) as exc:
            raise UnusableMessage(f"message {message.message_id}: its data is not base64 ({exc})") from exc
        return cls.decode(data, message.attributes)

    def encode(self) -> tuple[bytes, dict[str, str]]:
        """(data, attributes) to publish; ``decode`` gives this message back."""
        data = self.payload if self.header is None else b"\n".join((self.header, self.payload))
        attributes: dict[str, str] = {}
        if self.tenant is not None:
            attributes[TENANT] = self.tenant
        attributes[FORMAT] = self.format
        if self.origin is not None:
            attributes[ORIGIN] = self.origin
        if self.batch_index is not None:
            attributes[BATCH_INDEX] = str(self.batch_index)
        if self.batch_id is not None:
            attributes[BATCH_ID] = self.batch_id
        if self.span is not None:
            attributes.update(self.span.attributes())
        if self.partial_line is not None:
            attributes[PARTIAL_LINE] = str(self.partial_line)
        if self.oversized:
            attributes[OVERSIZED] = "true"
        for key, value in (
            (ORIGINAL_BYTES, self.original_bytes),
            (SOURCE_ID, self.source_id),
            (REPLAYED_FROM, self.replayed_from),
            (DEAD_LETTER_ID, self.dead_letter_id),
        ):
            if value is not None:
                attributes[key] = str(value)
        return data, attributes

    @property
    def size(self) -> int:
        """Bytes of the published data."""
        return len(self.payload) if self.header is None else len(self.header) + 1 + len(self.payload)

    def line_numbers(self, count: int) -> list[int]:
        """The numbers of the payload's ``count`` lines: the declared span if it numbers exactly ``count`` lines
        (checked before any list is built), else 1..count (a direct publish, or attributes that do not fit)."""
        if self.span is not None and self.span.count == count:
            return self.span.numbers()
        return list(range(1, count + 1))

    @property
    def origin_bucket(self) -> str | None:
        return origin_bucket(self.origin)


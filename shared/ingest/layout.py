"""Object name -> Segment layout ``[prefix/]segment-logs/<source-id>/<day-ms>/<file>`` (reference/segment.md).

Why it looks like this: a bucket also receives things that are not data (Segment's ``dummy-object.txt`` access
check, folder placeholders, other tenants' prefixes). Those are *ignored with a reason* -- logged, never failed --
so the function acks them. Names are plain strings, never filesystem paths: a ``..`` segment is ignored, not
resolved. File names are undocumented, so the file part is never parsed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Literal

__all__ = ["SEGMENT_ROOT", "ObjectLayout", "classify_object"]

SEGMENT_ROOT = "segment-logs"
DUMMY_OBJECT = "dummy-object.txt"

# Reasons of ignored objects (machine-readable, for logs and the ledger).
DIRECTORY_PLACEHOLDER = "directory_placeholder"
DUMMY = "dummy_object"
OUTSIDE_PREFIX = "outside_tenant_prefix"
UNSAFE_NAME = "unsafe_name"
NOT_SEGMENT_LAYOUT = "not_segment_layout"
BAD_DAY = "bad_day"

Kind = Literal["segment", "ignored"]


@dataclass(frozen=True, slots=True)
class ObjectLayout:
    """What an object is: ``kind == "segment"`` carries source and UTC received day; ``"ignored"`` a reason."""

    kind: Kind
    source_id: str | None = None
    day: date | None = None
    reason: str | None = None

    @property
    def is_data(self) -> bool:
        return self.kind == "segment"


def _ignored(reason: str) -> ObjectLayout:
    return ObjectLayout(kind="ignored", reason=reason)


def _day_of(day_ms: str) -> date | None:
    """UTC day of an epoch-ms segment. 13 digits per the S3 docs; any all-ASCII-digit value is accepted."""
    if not (day_ms.isascii() and day_ms.isdigit()):
        return None
    try:
        return datetime.fromtimestamp(int(day_ms) / 1000, tz=UTC).date()
    except (OverflowError, OSError, ValueError):
        return None


def classify_object(name: str, tenant_prefix: str = "") -> ObjectLayout:
    """Classify an object name; ``tenant_prefix`` (e.g. ``"acme"`` or ``"acme/"``) is where the tenant's data lives."""
    if not name or name.endswith("/"):
        return _ignored(DIRECTORY_PLACEHOLDER)
    rest = name
    prefix = tenant_prefix.strip("/")
    if prefix:
        if not name.startswith(prefix + "/"):
            return _ignored(OUTSIDE_PREFIX)
        rest = name[len(prefix) + 1 :]
    parts = rest.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return _ignored(UNSAFE_NAME)
    if parts[-1] == DUMMY_OBJECT:
        return _ignored(DUMMY)
    if len(parts) < 4 or parts[-4] != SEGMENT_ROOT:
        return _ignored(NOT_SEGMENT_LAYOUT)
    source_id, day_ms = parts[-3], parts[-2]
    day = _day_of(day_ms)
    if day is None:
        return _ignored(BAD_DAY)
    return ObjectLayout(kind="segment", source_id=source_id, day=day)

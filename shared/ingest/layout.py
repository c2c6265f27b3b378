"""Object name -> what the object is: a data file of one exporter's format, or ignored with a reason.

Layouts (after the tenant's optional prefix):

* Segment: ``[any/]segment-logs/<source-id>/<day-ms>/<file>`` (reference/segment.md). Segment's file names are
  undocumented, so the file part is never parsed.
* Mixpanel: ``mixpanel/<anything>/<file>``. Point a raw Data Pipeline (or your own upload of Raw Export API output)
  at the prefix ``mixpanel`` (or ``<tenant-prefix>/mixpanel``); Mixpanel then writes
  ``mixpanel/<project-id>/<YYYY>/<MM>/<DD>/<HH or full_day>/<file>``. Its empty ``complete`` marker is ignored.
* Amplitude: ``amplitude/<anything>/<file>``. Point the Cloud Storage export at the folder ``amplitude`` (or
  ``<tenant-prefix>/amplitude``); Amplitude then writes ``amplitude/<project-id>/<project-id>_<yyyy-MM-dd>_<H>#<n>.json.gz``.
  Its "merged Amplitude IDs" export (``-<org-id>/-<org-id>_...``) holds id merges, not events: ignored.
* CSV in the product's native data model: ``csv/<source>/<anything>.csv`` (or ``.csv.gz``; gzip is sniffed from the
  bytes, never from the name, so any file name works). The first line of every file is its header row; the ledger's
  ``lines`` of a CSV file counts its data lines only (the header is not a record), so the stats equation holds
  (``shared.ingest.pipeline``).

For Mixpanel and Amplitude the folder right under ``mixpanel/``/``amplitude/`` is the exporter's project id (for CSV,
whatever source name the team chose), kept as ``source_id`` when there is one; the rest of the path is not parsed. A
top-level ``mixpanel/``, ``amplitude/`` or ``csv/`` folder only counts when the name is not already a Segment path, so
Segment's layout is unchanged.

Why it looks like this: a bucket also receives things that are not data (Segment's ``dummy-object.txt`` access
check, folder placeholders, other tenants' prefixes, export markers). Those are *ignored with a reason* -- logged,
never failed -- so the function acks them. Names are plain strings, never filesystem paths: a ``..`` segment is
ignored, not resolved.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Literal

__all__ = ["EXPORTER_ROOTS", "SEGMENT_ROOT", "ObjectLayout", "classify_object"]

SEGMENT_ROOT = "segment-logs"
DUMMY_OBJECT = "dummy-object.txt"

# Reasons of ignored objects (machine-readable, for logs and the ledger).
DIRECTORY_PLACEHOLDER = "directory_placeholder"
DUMMY = "dummy_object"
OUTSIDE_PREFIX = "outside_tenant_prefix"
UNSAFE_NAME = "unsafe_name"
NOT_SEGMENT_LAYOUT = "not_segment_layout"
BAD_DAY = "bad_day"
EXPORT_MARKER = "export_marker"
NOT_EVENT_EXPORT = "not_event_export"

Kind = Literal["segment", "mixpanel", "amplitude", "csv", "ignored"]

# Top-level folder (after the tenant prefix) -> format of the files below it.
EXPORTER_ROOTS: dict[str, Kind] = {"mixpanel": "mixpanel", "amplitude": "amplitude", "csv": "csv"}
MIXPANEL_COMPLETE_MARKER = "complete"


@dataclass(frozen=True, slots=True)
class ObjectLayout:
    """What an object is: a data kind (its format; Segment adds source and UTC received day) or ``"ignored"`` with a
    reason."""

    kind: Kind
    source_id: str | None = None
    day: date | None = None
    reason: str | None = None

    @property
    def is_data(self) -> bool:
        return self.kind != "ignored"


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
        kind = EXPORTER_ROOTS.get(parts[0]) if len(parts) >= 2 else None
        if kind is not None:
            return _exporter_object(kind, parts)
        return _ignored(NOT_SEGMENT_LAYOUT)
    source_id, day_ms = parts[-3], parts[-2]
    day = _day_of(day_ms)
    if day is None:
        return _ignored(BAD_DAY)
    return ObjectLayout(kind="segment", source_id=source_id, day=day)


def _exporter_object(kind: Kind, parts: list[str]) -> ObjectLayout:
    """``mixpanel/...``, ``amplitude/...`` or ``csv/...``: data, except the exporters' own non-event objects."""
    file_name = parts[-1]
    if kind == "mixpanel" and file_name == MIXPANEL_COMPLETE_MARKER:
        return _ignored(EXPORT_MARKER)
    if kind == "amplitude" and file_name.startswith("-"):
        return _ignored(NOT_EVENT_EXPORT)  # merged Amplitude IDs: -<org-id>_<yyyy-MM-dd>_<H>.json.gz
    return ObjectLayout(kind=kind, source_id=parts[1] if len(parts) >= 3 else None)

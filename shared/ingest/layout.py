"""Object name -> what the object is: a data file of one format, or ignored with a reason.

Which files are whose is each format's own rule (``Format.locate`` in ``shared/sources/<format>.py``: Segment's
``[any/]segment-logs/<source-id>/<day-ms>/<file>``, then the top-level ``mixpanel/``, ``amplitude/`` and ``csv/``
folders, after the tenant's optional prefix), asked in the registry's order (``shared.sources.registry``), so a
Segment path stays Segment's whatever its first folder. This module holds what is true of every name.

Why it looks like this: a bucket also receives things that are not data (Segment's ``dummy-object.txt`` access
check, folder placeholders, other tenants' prefixes, export markers). Those are *ignored with a reason* -- logged,
never failed -- so the function acks them. Names are plain strings, never filesystem paths: a ``..`` segment is
ignored, not resolved.
"""

from __future__ import annotations

from shared.sources import registry
from shared.sources.format import ObjectLayout, ignored
from shared.sources.segment import SEGMENT_ROOT

__all__ = ["SEGMENT_ROOT", "ObjectLayout", "classify_object"]

DUMMY_OBJECT = "dummy-object.txt"

# Reasons of ignored objects (machine-readable, for logs and the ledger); formats add their own (``bad_day``,
# ``export_marker``, ``not_event_export``).
DIRECTORY_PLACEHOLDER = "directory_placeholder"
DUMMY = "dummy_object"
OUTSIDE_PREFIX = "outside_tenant_prefix"
UNSAFE_NAME = "unsafe_name"
NOT_SEGMENT_LAYOUT = "not_segment_layout"  # no format claims the object (the name predates other formats)


def classify_object(name: str, tenant_prefix: str = "") -> ObjectLayout:
    """Classify an object name; ``tenant_prefix`` (e.g. ``"acme"`` or ``"acme/"``) is where the tenant's data lives."""
    if not name or name.endswith("/"):
        return ignored(DIRECTORY_PLACEHOLDER)
    rest = name
    prefix = tenant_prefix.strip("/")
    if prefix:
        if not name.startswith(prefix + "/"):
            return ignored(OUTSIDE_PREFIX)
        rest = name[len(prefix) + 1 :]
    parts = rest.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return ignored(UNSAFE_NAME)
    if parts[-1] == DUMMY_OBJECT:
        return ignored(DUMMY)
    found = registry.locate(parts)
    return found if found is not None else ignored(NOT_SEGMENT_LAYOUT)

"""Helpers the exporter-format tests share: captured lines with edits, and the loader on one line."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.load import parse_line
from shared.warehouse.rows import EventRow, Lineage, RejectedRow, UserPropertiesRow

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

EVENTS = Path(__file__).resolve().parents[1] / "events"
Parsed = EventRow | UserPropertiesRow | RejectedRow


def captured_line(fmt: str, n: int, changes: dict[str, Any] | None = None, *, inside: str | None = None) -> dict[str, Any]:
    """Line ``n`` (1-based) of ``tests/events/<fmt>.ndjson`` with ``changes`` applied to the line (or to its object
    ``inside``); a value of ``...`` removes the field."""
    lines = (EVENTS / f"{fmt}.ndjson").read_text().splitlines()
    line: dict[str, Any] = copy.deepcopy(json.loads(lines[n - 1]))
    target = line[inside] if inside else line
    for key, value in (changes or {}).items():
        if value is ...:
            target.pop(key, None)
        else:
            target[key] = value
    return line


def line_parsers(
    fmt: str, lineage: Lineage, now: datetime
) -> tuple[Callable[..., Parsed], Callable[..., EventRow]]:
    """``parse(raw_or_dict, **kw)`` -> any row, and ``event(...)`` -> an event row (asserted), for format ``fmt``."""

    def parse(raw: bytes | dict[str, Any], **kw: Any) -> Parsed:
        if isinstance(raw, dict):
            raw = json.dumps(raw).encode()
        return parse_line(raw, fmt=fmt, lineage=kw.pop("lineage", lineage), now=now, **kw)

    def event(raw: bytes | dict[str, Any], **kw: Any) -> EventRow:
        row = parse(raw, **kw)
        assert isinstance(row, EventRow), row
        return row

    return parse, event

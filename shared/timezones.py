"""A contact's timezone as the product reads it everywhere (send tick, campaign planning): its IANA name, or UTC
when it has none or an unknown one, so a bad value in the data never fails a query or a send."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name) if name else ZoneInfo("UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")

"""Sending policy, decided per message before any claim or provider call: opt-out, missing or dead token, quiet hours
in the contact's timezone, and a per-contact frequency cap. Pure functions: the tick gathers the facts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, Literal

from shared.timezones import zone

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

    from shared.config import PushPolicy


@dataclass(frozen=True, slots=True)
class Decision:
    action: Literal["send", "skip", "defer"]
    reason: str | None = None
    until: datetime | None = None


SEND = Decision("send")


@dataclass(slots=True)
class ContactFacts:
    """What the tick knows about a contact: from users_latest, invalid_tokens and message_sends."""

    contact_id: str
    push_token: str | None = None
    token_dead: bool = False
    timezone: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    recent_sends: list[datetime] = field(default_factory=list)  # successful sends inside the cap window


def _hhmm(value: str) -> time:
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


def in_quiet_hours(t: time, policy: PushPolicy) -> bool:
    """Whether the local clock time ``t`` is inside the policy's quiet hours (which may wrap past midnight)."""
    if not policy.quiet_hours_start or not policy.quiet_hours_end:
        return False
    start, end = _hhmm(policy.quiet_hours_start), _hhmm(policy.quiet_hours_end)
    return (start <= t or t < end) if start > end else (start <= t < end)


def quiet_until(now: datetime, policy: PushPolicy, tz: ZoneInfo) -> datetime | None:
    """End of the quiet period containing ``now`` (UTC), or None when ``now`` is outside quiet hours."""
    if not policy.quiet_hours_start or not policy.quiet_hours_end:
        return None
    end = _hhmm(policy.quiet_hours_end)
    local = now.astimezone(tz)
    t = local.timetz().replace(tzinfo=None)
    if not in_quiet_hours(t, policy):
        return None
    end_day = local.date() if t < end else local.date() + timedelta(days=1)
    # fold=0 and zoneinfo resolve a DST gap to a valid instant; the next tick re-checks anyway
    return datetime.combine(end_day, end, tzinfo=tz).astimezone(UTC)


def local_send_time_utc(local_send_time: str, tz: ZoneInfo) -> datetime:
    """``YYYY-MM-DDTHH:MM`` in the contact's timezone -> UTC."""
    return datetime.fromisoformat(local_send_time).replace(tzinfo=tz).astimezone(UTC)


def decide(facts: ContactFacts, policy: PushPolicy, now: datetime, sent_this_tick: int = 0) -> Decision:
    if any(_truthy(facts.properties.get(key)) for key in policy.opt_out_properties):
        return Decision("skip", "opted_out")
    if not facts.push_token:
        return Decision("skip", "no_token")
    if facts.token_dead:
        return Decision("skip", "token_invalid")
    until = quiet_until(now, policy, zone(facts.timezone))
    if until is not None:
        return Decision("defer", "quiet_hours", until)
    window = timedelta(hours=policy.frequency_window_hours)
    recent = sorted(t for t in facts.recent_sends if t > now - window)
    if len(recent) + sent_this_tick >= policy.frequency_cap:
        oldest = recent[0] if recent else now
        return Decision("defer", "frequency_cap", oldest + window)
    return SEND


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"true", "1", "yes"}
    return bool(value)

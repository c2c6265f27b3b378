"""The best-time model of shared/campaigns/send_time.py written out in Python, for two uses: the stack test proves the
SQL chooses what this chooses (tests/integration/test_send_time.py), and the simulator (bench/learning/best_time.py)
runs this on populations too large to push through the emulator in a benchmark."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from shared.campaigns.send_time import HOURS_OF_WEEK, SendTimeModel


def hour_of_week(at: datetime, tz: str | None) -> int:
    """BigQuery's ``(DAYOFWEEK - 1) * 24 + HOUR`` in the zone (Sunday 0:00 is 0)."""
    local = at.astimezone(ZoneInfo(tz or "UTC"))
    return (local.isoweekday() % 7) * 24 + local.hour


@dataclass
class Slot:
    k: int
    at: datetime
    how: int
    local_hour: int
    score: float
    p_t: float
    hash: str


@dataclass
class Choice:
    contact: str
    slots: list[Slot]  # the allowed ones
    events: int
    explore: bool
    chosen: Slot | None
    min_events: int

    @property
    def reason(self) -> str:
        return "exploration" if self.explore else "profile" if self.events >= self.min_events else "fallback"


def choose(
    contacts: dict[str, tuple[str | None, list[datetime]]],
    activity: dict[str, str],
    *,
    start: datetime,
    hours: int,
    allowed: list[int],
    now: datetime,
    seed: str,
    model: SendTimeModel,
) -> dict[str, Choice]:
    """``contacts``: id -> (timezone, event times). The same computation as the SQL, contact by contact."""
    since = now - timedelta(days=model.lookback_days)
    own = {cid: Counter(hour_of_week(e, tz) for e in events if since <= e < now) for cid, (tz, events) in contacts.items()}
    level: dict[str, Counter[int]] = {}
    for cid, counts in own.items():
        level.setdefault(activity[cid], Counter()).update(counts)
    tenant: Counter[int] = Counter()
    for counts in own.values():
        tenant.update(counts)
    n_t = sum(tenant.values())
    ppm = round(model.explore * 1_000_000)
    out = {}
    for cid, (tz, _events) in contacts.items():
        lv = level.get(activity[cid], Counter())
        n_l, n_c = sum(lv.values()), sum(own[cid].values())
        slots = []
        for k in range(hours):
            at = start + timedelta(hours=k)
            local_hour = at.astimezone(ZoneInfo(tz or "UTC")).hour
            if local_hour not in allowed:
                continue
            h = hour_of_week(at, tz)
            p_t = (tenant[h] + 1) / (n_t + HOURS_OF_WEEK)
            p_l = (lv[h] + model.level_strength * p_t) / (n_l + model.level_strength)
            score = p_t if n_c == 0 else (own[cid][h] + model.contact_strength * p_l) / (n_c + model.contact_strength)
            digest = hashlib.sha256(f"{seed}|slot|{cid}|{k}".encode()).hexdigest()
            slots.append(Slot(k, at, h, local_hour, score, p_t, digest))
        explore = int(hashlib.sha256(f"{seed}|explore|{cid}".encode()).hexdigest()[:8], 16) % 1_000_000 < ppm
        chosen = None
        if slots:
            chosen = min(slots, key=lambda s: s.hash) if explore else min(slots, key=lambda s: (-s.score, s.k))
        out[cid] = Choice(cid, slots, n_c, explore, chosen, model.min_events)
    return out

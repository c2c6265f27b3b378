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
    hash: str


@dataclass
class Choice:
    contact: str
    slots: list[Slot]  # the allowed ones
    events: int
    explore: bool
    chosen: Slot | None
    min_events: int
    lag_weights: list[float]  # the look-ahead's weight by hours after the send, the tenant's (read_lag)

    @property
    def reason(self) -> str:
        return "exploration" if self.explore else "profile" if self.events >= self.min_events else "fallback"


def choose(
    contacts: dict[str, tuple[str | None, list[tuple[datetime, bool]]]],
    activity: dict[str, str],
    *,
    start: datetime,
    hours: int,
    allowed: list[int],
    now: datetime,
    seed: str,
    model: SendTimeModel,
    sends: dict[str, list[tuple[datetime, datetime | None]]] | None = None,
) -> dict[str, Choice]:
    """``contacts``: id -> (timezone, [(event time, whether it is a conversion event)]); ``sends``: id -> earlier
    pushes as (sent at, first tapped at or None). The same computation as the SQL (shared/campaigns/send_time.py's
    docstring has the formulas), contact by contact."""
    since = now - timedelta(days=model.lookback_days)
    sessions: dict[str, Counter[int]] = {}
    buys: dict[str, Counter[int]] = {}
    for cid, (tz, events) in contacts.items():
        n: Counter[int] = Counter()
        x: Counter[int] = Counter()
        for at, conversion in events:
            if since <= at < now:
                (x if conversion else n)[hour_of_week(at, tz)] += 1
        sessions[cid], buys[cid] = n, x
    level_n: dict[str, Counter[int]] = {}
    level_x: dict[str, Counter[int]] = {}
    tenant_n: Counter[int] = Counter()
    tenant_x: Counter[int] = Counter()
    for cid in contacts:
        level_n.setdefault(activity[cid], Counter()).update(_by_hour_of_day(sessions[cid]))
        level_x.setdefault(activity[cid], Counter()).update(_by_hour_of_day(buys[cid]))
        tenant_n.update(sessions[cid])
        tenant_x.update(buys[cid])
    n_t = sum(tenant_n.values())
    tenant_hod_n, tenant_hod_x = _by_hour_of_day(tenant_n), _by_hour_of_day(tenant_x)
    r_t = {d: min((tenant_hod_x[d] + 1) / (tenant_hod_n[d] + 20), 1.0) for d in range(24)}
    p_t_hod = {d: (tenant_hod_n[d] + 7) / (n_t + HOURS_OF_WEEK) for d in range(24)}
    levels: dict[str, tuple[dict[int, float], dict[int, float]]] = {}
    for level in set(activity.values()):
        ln, lx = level_n.get(level, Counter()), level_x.get(level, Counter())
        n_l = sum(ln.values())
        p_l = {d: (ln[d] + model.level_strength * p_t_hod[d]) / (n_l + model.level_strength) for d in range(24)}
        r_l = {d: min((lx[d] + model.rate_strength * r_t[d]) / (ln[d] + model.rate_strength), 1.0) for d in range(24)}
        levels[level] = (p_l, r_l)
    presences: dict[str, list[float]] = {}
    theres: dict[str, list[float]] = {}
    counts: dict[str, int] = {}
    for cid in contacts:
        p_l, r_l = levels[activity[cid]]
        own_n, own_x = sessions[cid], buys[cid]
        hod_n, hod_x = _by_hour_of_day(own_n), _by_hour_of_day(own_x)
        n_c = sum(own_n.values())
        events = n_c + sum(own_x.values())
        # per hour of the week (its hour of the day d = h % 24): how likely the contact is around, and around and
        # not buying
        presence, there = [], []
        for h in range(HOURS_OF_WEEK):
            d = h % 24
            if events == 0:
                presence.append((tenant_n[h] + 1) / (n_t + HOURS_OF_WEEK))
                there.append(presence[-1] * (1 - r_t[d]))
                continue
            q_c = (hod_n[d] + model.contact_strength * p_l[d]) / (n_c + model.contact_strength)
            near_n, near_x = _near(hod_n, d, model.rate_reach), _near(hod_x, d, model.rate_reach)
            r_c = min((near_x + model.rate_strength * r_l[d]) / (near_n + model.rate_strength), 1.0)
            presence.append((own_n[h] + model.week_strength * q_c / 7) / (n_c + model.week_strength))
            there.append(presence[-1] * (1 - r_c))
        presences[cid], theres[cid], counts[cid] = presence, there, events
    weights = read_lag({cid: tz for cid, (tz, _) in contacts.items()}, presences, sends or {}, now=now, model=model)
    ppm = round(model.explore * 1_000_000)
    out = {}
    for cid, (tz, _events) in contacts.items():
        there, events = theres[cid], counts[cid]
        slots = []
        for k in range(hours):
            at = start + timedelta(hours=k)
            local_hour = at.astimezone(ZoneInfo(tz or "UTC")).hour
            if local_hour not in allowed:
                continue
            score = sum(weights[j] * there[hour_of_week(at + timedelta(hours=j), tz)] for j in range(model.ahead_hours))
            if events == 0 and local_hour == model.fallback_hour:
                score += 1
            digest = hashlib.sha256(f"{seed}|slot|{cid}|{k}".encode()).hexdigest()
            slots.append(Slot(k, at, hour_of_week(at, tz), local_hour, score, digest))
        explore = int(hashlib.sha256(f"{seed}|explore|{cid}".encode()).hexdigest()[:8], 16) % 1_000_000 < ppm
        chosen = None
        if slots:
            chosen = min(slots, key=lambda s: s.hash) if explore else min(slots, key=lambda s: (-s.score, s.k))
        out[cid] = Choice(cid, slots, events, explore, chosen, model.min_events, weights)
    return out


def read_lag(
    zones: dict[str, str | None],
    presences: dict[str, list[float]],
    sends: dict[str, list[tuple[datetime, datetime | None]]],
    *,
    now: datetime,
    model: SendTimeModel,
) -> list[float]:
    """The look-ahead's weight for each hour after a send: the tenant's taps that many hours after a push, per unit of
    the contacts' expected presence then (so that a lag is not credited for the hours people happen to be around),
    shrunk toward the prior ``2^(-j / half_life)`` by ``lag_taps`` pseudo-taps; the largest is 1, as the prior's."""
    prior = [0.5 ** (j / model.half_life_hours) for j in range(model.ahead_hours)]
    taps = [0.0] * model.ahead_hours
    exposure = [0.0] * model.ahead_hours
    since = now - timedelta(days=model.lookback_days)
    for cid, pushes in sends.items():
        if cid not in presences:
            continue
        tz = zones[cid]
        for sent, tapped in pushes:
            if not (since <= sent and sent + timedelta(hours=model.ahead_hours) <= now):
                continue
            for j in range(model.ahead_hours):
                exposure[j] += presences[cid][hour_of_week(sent + timedelta(hours=j), tz)]
            if tapped is not None and timedelta(0) <= tapped - sent < timedelta(hours=model.ahead_hours):
                taps[int((tapped - sent).total_seconds() // 3600)] += 1
    total_taps = sum(taps)
    if not total_taps or model.lag_taps is None:
        return prior
    # a pseudo-tap's exposure: the prior's shape at the taps' own rate, so that with no data each weight is the prior's
    per_exposure = sum(w * e for w, e in zip(prior, exposure, strict=True)) / (sum(prior) * total_taps)
    weights = [(t + model.lag_taps * w / sum(prior)) / (e + model.lag_taps * per_exposure)
               for t, e, w in zip(taps, exposure, prior, strict=True)]  # fmt: skip
    return [w / max(weights) for w in weights]


def _by_hour_of_day(counts: Counter[int]) -> Counter[int]:
    out: Counter[int] = Counter()
    for how, n in counts.items():
        out[how % 24] += n
    return out


def _near(counts: Counter[int], hour: int, reach: int) -> float:
    """``counts`` at ``hour`` of the day and its neighbours up to ``reach`` hours either side, half as much per hour
    away."""
    return sum(0.5 ** abs(o) * counts[(hour + o) % 24] for o in range(-reach, reach + 1))

"""Each contact's best send time within a window, from its own behaviour in its own timezone, in one query.

**Profile.** Every event of the last ``lookback_days`` falls in one of the 168 hours of the week, in its contact's
timezone (``users_latest.timezone``; UTC when missing). Three profiles are kept, each shrunk toward the next when it
is thin (pseudo-counts, the empirical-Bayes way):

- the tenant's: ``p_t(h) = (n_t(h) + 1) / (n_t + 168)`` (Laplace: an hour nobody was active in is still possible);
- the contact's activity level's (``contact_activity``): ``p_l(h) = (n_l(h) + k_l p_t(h)) / (n_l + k_l)``;
- the contact's: ``p_c(h) = (n_c(h) + k_c p_l(h)) / (n_c + k_c)``.

A contact without any event in the lookback scores every hour by the tenant's profile: a new contact gets the
tenant's best hour, never a random one (its level, dormant, would speak for other contacts' old habits).

**Choice.** The window's hourly slots (``start`` + 0..``hours``-1 h) are scored by the contact's profile at the
slot's local hour of the week; slots at a local hour outside ``allowed_hours`` (quiet hours) are never chosen; the
best slot wins, the earliest on a tie. A share ``explore`` of contacts (a seeded hash of ``seed`` and contact) gets a
uniformly random allowed slot instead, so what the model did not choose can be measured against what it did. Each
row says why: ``profile`` (at least ``min_events`` events in the lookback), ``fallback`` (fewer: mostly its level's
or the tenant's profile) or ``exploration``.

Events are read with ``EXTRACT(... FROM timestamp AT TIME ZONE tz)``: per row, DST included, and accepted by the
local emulator with a column for the zone (``DATETIME(timestamp, tz)`` is not).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from shared.campaigns.audience import CompiledQuery
from shared.push.policy import in_quiet_hours

if TYPE_CHECKING:
    from shared.config import PushPolicy

HOURS_OF_WEEK = 168


@dataclass(frozen=True)
class SendTimeModel:
    lookback_days: int = 56
    contact_strength: float = 10.0  # k_c: pseudo-events of the level's profile added to a contact's
    level_strength: float = 200.0  # k_l: pseudo-events of the tenant's profile added to a level's
    min_events: int = 5  # fewer events than this in the lookback: the reason is "fallback"
    explore: float = 0.1  # share of contacts sent at a random allowed slot


_SQL = """
WITH people AS (
  SELECT u.contact_id, IFNULL(u.timezone, 'UTC') AS tz, a.activity
  FROM users_latest AS u JOIN contact_activity AS a ON a.contact_id = u.contact_id
), per_contact AS (
  SELECT e.contact_id,
         (EXTRACT(DAYOFWEEK FROM e.timestamp AT TIME ZONE p.tz) - 1) * 24
           + EXTRACT(HOUR FROM e.timestamp AT TIME ZONE p.tz) AS how,
         COUNT(*) AS n
  FROM events_deduped AS e JOIN people AS p ON p.contact_id = e.contact_id
  WHERE e.timestamp >= @bt_since AND e.timestamp < @bt_until
  GROUP BY 1, 2
), contact_total AS (
  SELECT contact_id, SUM(n) AS total FROM per_contact GROUP BY 1
), per_level AS (
  SELECT p.activity, c.how, SUM(c.n) AS n FROM per_contact AS c JOIN people AS p ON p.contact_id = c.contact_id
  GROUP BY 1, 2
), level_total AS (
  SELECT activity, SUM(n) AS total FROM per_level GROUP BY 1
), per_tenant AS (
  SELECT how, SUM(n) AS n FROM per_contact GROUP BY 1
), tenant_total AS (
  SELECT IFNULL(SUM(n), 0) AS total FROM per_contact
), members AS (
  SELECT p.contact_id, p.tz, p.activity FROM people AS p
  WHERE p.contact_id IN (SELECT contact_id FROM ({members}))
), slots AS (
  SELECT k, TIMESTAMP_ADD(@bt_start, INTERVAL k HOUR) AS at FROM UNNEST(GENERATE_ARRAY(0, @bt_hours - 1)) AS k
), candidates AS (
  SELECT m.contact_id, m.activity, s.k, s.at,
         (EXTRACT(DAYOFWEEK FROM s.at AT TIME ZONE m.tz) - 1) * 24 + EXTRACT(HOUR FROM s.at AT TIME ZONE m.tz) AS how,
         EXTRACT(HOUR FROM s.at AT TIME ZONE m.tz) AS local_hour,
         MOD(CAST(CONCAT('0x', SUBSTR(TO_HEX(SHA256(CONCAT(@bt_seed, '|explore|', m.contact_id))), 1, 8)) AS INT64),
             1000000) < @bt_explore_ppm AS explore,
         TO_HEX(SHA256(CONCAT(@bt_seed, '|slot|', m.contact_id, '|', CAST(s.k AS STRING)))) AS slot_hash
  FROM members AS m CROSS JOIN slots AS s
), allowed AS (
  SELECT * FROM candidates WHERE local_hour IN UNNEST(@bt_allowed_hours)
), tenant_scored AS (
  SELECT c.*, (IFNULL(t.n, 0) + 1) / (tt.total + 168) AS p_t
  FROM allowed AS c CROSS JOIN tenant_total AS tt LEFT JOIN per_tenant AS t ON t.how = c.how
), level_scored AS (
  SELECT c.*, (IFNULL(l.n, 0) + @bt_k_level * c.p_t) / (IFNULL(lt.total, 0) + @bt_k_level) AS p_l
  FROM tenant_scored AS c
  LEFT JOIN per_level AS l ON l.activity = c.activity AND l.how = c.how
  LEFT JOIN level_total AS lt ON lt.activity = c.activity
), scored AS (
  SELECT c.*, IFNULL(ct.total, 0) AS events,
         IF(ct.total IS NULL, c.p_t, (IFNULL(pc.n, 0) + @bt_k_contact * c.p_l) / (ct.total + @bt_k_contact)) AS score
  FROM level_scored AS c
  LEFT JOIN per_contact AS pc ON pc.contact_id = c.contact_id AND pc.how = c.how
  LEFT JOIN contact_total AS ct ON ct.contact_id = c.contact_id
)
SELECT contact_id, activity, at AS send_at, how AS hour_of_week, local_hour, score, events,
       CASE WHEN explore THEN 'exploration' WHEN events >= @bt_min_events THEN 'profile' ELSE 'fallback' END AS reason
FROM scored
WHERE TRUE
QUALIFY ROW_NUMBER() OVER (PARTITION BY contact_id ORDER BY IF(explore, slot_hash, ''), score DESC, k) = 1
"""


def allowed_hours(policy: PushPolicy) -> list[int]:
    """The local hours a best-time slot may start at: those whose start is outside the tenant's quiet hours (the
    send tick would defer a message planned inside them)."""
    return [h for h in range(24) if not in_quiet_hours(time(h), policy)]


def best_time_query(
    members: CompiledQuery,
    *,
    start: datetime,
    hours: int = 24,
    allowed_hours: list[int] | None = None,
    now: datetime,
    seed: str,
    model: SendTimeModel | None = None,
) -> CompiledQuery:
    """One row per member (``members``: a query with a ``contact_id`` column): ``send_at``, ``hour_of_week`` and
    ``local_hour`` of the chosen slot, its ``score``, the member's ``events`` and the ``reason``. ``seed``: the
    campaign, so exploration is the same on every run. A member all of whose slots are outside ``allowed_hours`` gets
    no row (nothing in the window may be sent)."""
    model = model or SendTimeModel()
    if not 1 <= hours <= 24 * 7:
        raise ValueError("a best-time window is 1 to 168 hours")
    allowed = sorted(set(range(24) if allowed_hours is None else allowed_hours))
    if not allowed or not all(0 <= h < 24 for h in allowed):
        raise ValueError("allowed_hours: local hours 0-23, at least one")
    params: dict[str, Any] = {
        **members.params,
        "bt_since": now - timedelta(days=model.lookback_days),
        "bt_until": now,
        "bt_start": start,
        "bt_hours": hours,
        "bt_allowed_hours": allowed,
        "bt_k_level": float(model.level_strength),
        "bt_k_contact": float(model.contact_strength),
        "bt_min_events": model.min_events,
        "bt_explore_ppm": round(model.explore * 1_000_000),
        "bt_seed": seed,
    }
    return CompiledQuery(_SQL.format(members=members.sql), params)

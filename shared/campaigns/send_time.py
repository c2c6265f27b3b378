"""Each contact's best send time within a window, from its own behaviour in its own timezone, in one query.

**Activity profile.** Every event of the last ``lookback_days`` falls in one of the 168 hours of the week, in its
contact's timezone (``users_latest.timezone``; UTC when missing). Events that are the campaign's conversion events
are counted apart (below). Profiles are shrunk toward the next coarser one when thin (pseudo-counts, the
empirical-Bayes way), and a contact's hours of the week lean on its hours of the day, which hold seven times the
data (most people keep a daily rhythm; the simulator's contacts shift an hour at weekends):

- the tenant's: ``p_t(h) = (n_t(h) + 1) / (n_t + 168)`` (Laplace: an hour nobody was active in is still possible);
- the activity level's hours of the day (``contact_activity``):
  ``P_l(d) = (n_l(d) + k_l (n_t(d) + 7) / (n_t + 168)) / (n_l + k_l)``;
- the contact's hours of the day: ``q_c(d) = (n_c(d) + k_c P_l(d)) / (n_c + k_c)``;
- the contact's hours of the week: ``p_c(h) = (n_c(h) + k_w q_c(d(h)) / 7) / (n_c + k_w)``.

**Conversions anyway.** A push can only cause a conversion in a session that would not have converted without it:
a contact who comes to buy at 19:00 every day gains nothing from a push at 19:00 (the trap of naive send-time
models, which pick exactly those hours). So each hour of the day has a conversion rate per session, the contact's
shrunk toward its level's and that toward the tenant's: ``r_t(d) = (x_t(d) + 1) / (n_t(d) + 20)``,
``r_l(d) = (x_l(d) + k_r r_t(d)) / (n_l(d) + k_r)``, ``r_c(d) = (x̃_c(d) + k_r r_l(d)) / (ñ_c(d) + k_r)`` (each at
most 1), where the contact's counts borrow from its neighbouring hours, ``ñ_c(d) = Σ_{|o|<=2} 2^-|o| n_c(d + o)``
(its few sessions at 19:00 say it buys at 20:00 too; without this the trap's hour next door was chosen 9.6% of
the time, against 6.0% with it and 7.1% for a random slot, on seeds 0-2). ``p_c(h) (1 - r_c(d))`` is how likely
the contact is there and not converting anyway at hour ``h``. Without conversion events (a campaign without
``conversion``) every rate is the prior's small one and this is the activity profile.

A contact without any event in the lookback takes the tenant's profile, ``p_t(h) (1 - r_t(d))``: a new contact
gets the tenant's best hour, never a random one (its level, dormant, would speak for other contacts' old habits).

**Look-ahead.** A push is read in the hours after it arrives, not only in its own: delivery can lag, and across
more than 2 billion messages Blueshift found "the open rate is the highest in the first two hours after the send"
(blueshift.com/blog/send-time-optimization-or-engage-time-optimization).
So a slot at hour ``h`` scores ``Σ_{j<8} w_j p_c(h + j) (1 - r_c(d(h + j)))``: the next ``ahead_hours`` (8), with
weights learned from the tenant's taps ("Read lag") and, before any, halving every ``half_life_hours`` (2, from that
figure, not tuned). Scoring the hour alone sends at the peak of
activity, when the push arrives as the visit ends; on the simulator, whose pushes arrive up to two hours late and
pull for a half-life of one to four hours by level, that captured 0.34 of the oracle's gain after 28 days,
against 0.69 with the look-ahead (seeds 0-2; BENCHMARKS.md, "Best time").

**Read lag.** How long after the send a push is read is the tenant's own, and it matters: on the simulator, a world
whose pushes arrive up to three hours late took the 2-hour prior from 0.69 of the oracle's gain to 0.54, below the
best fixed hour (BENCHMARKS.md, "Best time"). So the look-ahead's weights are learned from the tenant's sends and taps:
every push sent (``message_sends``, the first ``sent``) in the lookback, at least ``ahead_hours`` before now, and its
first "Push Notification Tapped" event (matched by the message id in its metadata, as the report matches opens).
``T_j`` counts taps ``j`` whole hours after the send; ``E_j = Σ_sends p_c(h_s + j)`` is how much each send's contact
was expected to be around then, so that a lag is credited for itself and not for the hours people happen to be
around (taps come as ``λ_j p_c(h + j)``; ``T_j / E_j`` estimates ``λ_j``). Shrunk toward the prior ``π_j = 2^(-j/2)``
by ``lag_taps`` pseudo-taps (50), spread as the prior and priced at the taps' own rate per exposure:
``w_j = (T_j + L π_j / Σπ) / (E_j + L Σ_j(π_j E_j) / (Σπ · ΣT))``. With no taps the weights are the prior's; with
many, the data's; the largest is scaled to 1, as the prior's is, so that ``fallback_hour``'s 1 still outweighs any
profile. One tenant-wide kernel (not per level): a tenant's taps are few, and the kernel's shape, not its
size, decides the slot.

A campaign may name the hour for contacts without any event (``fallback_hour``; the launch refuses one inside
quiet hours): their slots at that local hour score 1 more, so it wins wherever the window holds it, and the profile
decides where it does not. The tenant's best hour and the audience's truly best one can differ by less than any
test could tell (BENCHMARKS.md); a team that has measured its hour keeps it this way.

**Choice.** The window's hourly slots (``start`` + 0..``hours``-1 h) are scored from the slot's local hour on; slots at a
local hour outside ``allowed_hours`` (quiet hours) are never chosen; the best slot wins, the earliest on a tie. A
share ``explore`` of contacts (a seeded hash of ``seed`` and contact) gets a uniformly random allowed slot instead,
so what the model did not choose can be measured against what it did. Each row says why: ``profile`` (at least
``min_events`` events in the lookback), ``fallback`` (fewer: mostly its level's or the tenant's profile) or
``exploration``. The Python twin bench/learning/send_time_model.py computes the same (tests/integration/
test_send_time.py proves it), and bench/learning/best_time.py measures it on a simulator with known truth.

Events are read with ``EXTRACT(... FROM timestamp AT TIME ZONE tz)``: per row, DST included, and accepted by the
local emulator with a column for the zone (``DATETIME(timestamp, tz)`` is not).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from shared.campaigns.audience import CompiledQuery
from shared.push.policy import in_quiet_hours
from shared.push.schedule import MESSAGE_ID_DATA_KEY, OPENED_EVENT

if TYPE_CHECKING:
    from shared.config import PushPolicy

HOURS_OF_WEEK = 168


@dataclass(frozen=True)
class SendTimeModel:
    lookback_days: int = 56
    contact_strength: float = 10.0  # k_c: pseudo-events of the level's hours of the day added to a contact's
    # k_w: pseudo-events of the contact's hours of the day added to its hours of the week. Large: a daily rhythm is
    # the better guess until a contact has a few hundred events (bench/learning/best_time, tuned on seeds 0-2).
    week_strength: float = 100.0
    level_strength: float = 200.0  # k_l: pseudo-events of the tenant's profile added to a level's
    rate_strength: float = 0.1  # k_r: pseudo-sessions of the coarser conversion rate added to a contact's or level's
    # a contact's conversion rate at an hour also counts its sessions this many hours either side, half as much per
    # hour away: one who buys at 19:00 buys at 20:00 too, though its few sessions may all fall at 19:00
    rate_reach: int = 2
    # a push is read in the hours after it arrives: a slot scores the next ``ahead_hours`` hours, halving every
    # ``half_life_hours`` (most opens come in the first two hours; module docstring, "Look-ahead")
    ahead_hours: int = 8
    half_life_hours: float = 2.0
    # the look-ahead's weights learned from the tenant's own sends and taps (module docstring, "Read lag"), the prior
    # above counting as this many taps; None: the prior alone
    lag_taps: float | None = 50.0
    min_events: int = 5  # fewer events than this in the lookback: the reason is "fallback"
    explore: float = 0.1  # share of contacts sent at a random allowed slot
    # the local hour for contacts without any event, when the campaign names one (as Braze's and Iterable's custom
    # fallback time): a team that knows its audience's best hour from its own tests keeps it for contacts the model
    # knows nothing about. None: the tenant's best hour by the profile.
    fallback_hour: int | None = None


_SQL = """
WITH people AS (
  SELECT u.contact_id, IFNULL(u.timezone, 'UTC') AS tz, a.activity
  FROM users_latest AS u JOIN contact_activity AS a ON a.contact_id = u.contact_id
), timed AS (
  SELECT e.contact_id, e.event_name IN UNNEST(@bt_conversions) AS conversion, e.timestamp,
         IF(e.event_name = @bt_tapped, JSON_VALUE(e.metadata, '$.{message_id_key}'), NULL) AS tapped_message_id,
         (EXTRACT(DAYOFWEEK FROM e.timestamp AT TIME ZONE p.tz) - 1) * 24
           + EXTRACT(HOUR FROM e.timestamp AT TIME ZONE p.tz) AS how
  FROM events_deduped AS e JOIN people AS p ON p.contact_id = e.contact_id
  WHERE e.timestamp >= @bt_since AND e.timestamp < @bt_until
), per_contact AS (
  SELECT contact_id, how, COUNTIF(NOT conversion) AS n, COUNTIF(conversion) AS x FROM timed GROUP BY 1, 2
), contact_total AS (
  SELECT contact_id, SUM(n) AS total, SUM(n + x) AS events FROM per_contact GROUP BY 1
), contact_hod AS (
  SELECT contact_id, MOD(how, 24) AS hod, SUM(n) AS n, SUM(x) AS x FROM per_contact GROUP BY 1, 2
), contact_near AS (
  SELECT contact_id, MOD(hod + o + 24, 24) AS hod, SUM(n * POW(0.5, ABS(o))) AS n, SUM(x * POW(0.5, ABS(o))) AS x
  FROM contact_hod CROSS JOIN UNNEST(GENERATE_ARRAY(-@bt_rate_reach, @bt_rate_reach)) AS o
  GROUP BY 1, 2
), level_hod AS (
  SELECT p.activity, MOD(c.how, 24) AS hod, SUM(c.n) AS n, SUM(c.x) AS x
  FROM per_contact AS c JOIN people AS p ON p.contact_id = c.contact_id
  GROUP BY 1, 2
), level_total AS (
  SELECT activity, SUM(n) AS total FROM level_hod GROUP BY 1
), per_tenant AS (
  SELECT how, SUM(n) AS n FROM per_contact GROUP BY 1
), tenant_hod AS (
  SELECT MOD(how, 24) AS hod, SUM(n) AS n, SUM(x) AS x FROM per_contact GROUP BY 1
), tenant_total AS (
  SELECT IFNULL(SUM(n), 0) AS total FROM per_contact
), members AS (
  SELECT p.contact_id, p.tz, p.activity FROM people AS p
  WHERE p.contact_id IN (SELECT contact_id FROM ({members}))
), slots AS (
  SELECT k, TIMESTAMP_ADD(@bt_start, INTERVAL k HOUR) AS at FROM UNNEST(GENERATE_ARRAY(0, @bt_hours - 1)) AS k
), candidates AS (
  SELECT m.contact_id, m.tz, m.activity, s.k, s.at,
         (EXTRACT(DAYOFWEEK FROM s.at AT TIME ZONE m.tz) - 1) * 24 + EXTRACT(HOUR FROM s.at AT TIME ZONE m.tz) AS how,
         EXTRACT(HOUR FROM s.at AT TIME ZONE m.tz) AS local_hour,
         MOD(CAST(CONCAT('0x', SUBSTR(TO_HEX(SHA256(CONCAT(@bt_seed, '|explore|', m.contact_id))), 1, 8)) AS INT64),
             1000000) < @bt_explore_ppm AS explore,
         TO_HEX(SHA256(CONCAT(@bt_seed, '|slot|', m.contact_id, '|', CAST(s.k AS STRING)))) AS slot_hash
  FROM members AS m CROSS JOIN slots AS s
), allowed AS (
  SELECT * FROM candidates WHERE local_hour IN UNNEST(@bt_allowed_hours)
), ahead_at AS (
  SELECT c.*, j, TIMESTAMP_ADD(c.at, INTERVAL j HOUR) AS at_j
  FROM allowed AS c CROSS JOIN UNNEST(GENERATE_ARRAY(0, @bt_ahead_hours - 1)) AS j
), ahead AS (
  SELECT c.*,
         (EXTRACT(DAYOFWEEK FROM c.at_j AT TIME ZONE c.tz) - 1) * 24 + EXTRACT(HOUR FROM c.at_j AT TIME ZONE c.tz) AS how_j
  FROM ahead_at AS c
), sent AS (
  SELECT message_id, ANY_VALUE(contact_id) AS contact_id, MIN(at) AS sent_at
  FROM message_sends
  WHERE status = 'sent' AND at >= @bt_since AND at <= TIMESTAMP_SUB(@bt_until, INTERVAL @bt_ahead_hours HOUR)
  GROUP BY 1
), tapped AS (
  SELECT tapped_message_id AS message_id, MIN(timestamp) AS tapped_at
  FROM timed WHERE tapped_message_id IS NOT NULL
  GROUP BY 1
), send_ahead AS (
  SELECT s.message_id, p.contact_id, p.tz, p.activity, j,
         DIV((TIMESTAMP_DIFF(t.tapped_at, s.sent_at, SECOND)), 3600) AS tap_lag,
         (EXTRACT(DAYOFWEEK FROM TIMESTAMP_ADD(s.sent_at, INTERVAL j HOUR) AT TIME ZONE p.tz) - 1) * 24
           + EXTRACT(HOUR FROM TIMESTAMP_ADD(s.sent_at, INTERVAL j HOUR) AT TIME ZONE p.tz) AS how_j
  FROM sent AS s JOIN people AS p ON p.contact_id = s.contact_id
  LEFT JOIN tapped AS t ON t.message_id = s.message_id AND t.tapped_at >= s.sent_at
  CROSS JOIN UNNEST(GENERATE_ARRAY(0, @bt_ahead_hours - 1)) AS j
), points AS (
  SELECT DISTINCT contact_id, tz, activity, how_j, MOD(how_j, 24) AS hod_j
  FROM (SELECT contact_id, tz, activity, how_j FROM ahead UNION ALL SELECT contact_id, tz, activity, how_j FROM send_ahead)
), tenant_scored AS (
  SELECT c.*, (IFNULL(t.n, 0) + 1) / (tt.total + 168) AS p_t,
         (IFNULL(td.n, 0) + 7) / (tt.total + 168) AS p_t_hod,
         LEAST((IFNULL(td.x, 0) + 1) / (IFNULL(td.n, 0) + 20), 1) AS r_t
  FROM points AS c CROSS JOIN tenant_total AS tt
  LEFT JOIN per_tenant AS t ON t.how = c.how_j
  LEFT JOIN tenant_hod AS td ON td.hod = c.hod_j
), level_scored AS (
  SELECT c.*,
         (IFNULL(l.n, 0) + @bt_k_level * c.p_t_hod) / (IFNULL(lt.total, 0) + @bt_k_level) AS p_l_hod,
         LEAST((IFNULL(l.x, 0) + @bt_k_rate * c.r_t) / (IFNULL(l.n, 0) + @bt_k_rate), 1) AS r_l
  FROM tenant_scored AS c
  LEFT JOIN level_hod AS l ON l.activity = c.activity AND l.hod = c.hod_j
  LEFT JOIN level_total AS lt ON lt.activity = c.activity
), contact_scored AS (
  SELECT c.*, IFNULL(ct.events, 0) AS events, IFNULL(ct.total, 0) AS total, IFNULL(pc.n, 0) AS n_how,
         (IFNULL(ch.n, 0) + @bt_k_contact * c.p_l_hod) / (IFNULL(ct.total, 0) + @bt_k_contact) AS q_c,
         LEAST((IFNULL(cn.x, 0) + @bt_k_rate * c.r_l) / (IFNULL(cn.n, 0) + @bt_k_rate), 1) AS r_c
  FROM level_scored AS c
  LEFT JOIN per_contact AS pc ON pc.contact_id = c.contact_id AND pc.how = c.how_j
  LEFT JOIN contact_hod AS ch ON ch.contact_id = c.contact_id AND ch.hod = c.hod_j
  LEFT JOIN contact_near AS cn ON cn.contact_id = c.contact_id AND cn.hod = c.hod_j
  LEFT JOIN contact_total AS ct ON ct.contact_id = c.contact_id
), presence AS (
  SELECT contact_id, how_j, events,
         IF(events = 0, p_t, (n_how + @bt_k_week * q_c / 7) / (total + @bt_k_week)) AS presence,
         IF(events = 0, 1 - r_t, 1 - r_c) AS not_buying
  FROM contact_scored
), lag_counts AS (
  SELECT j, SUM(p.presence) AS exposure, COUNTIF(s.tap_lag = j) AS taps
  FROM send_ahead AS s JOIN presence AS p ON p.contact_id = s.contact_id AND p.how_j = s.how_j
  GROUP BY 1
), lags AS (
  SELECT j, POW(0.5, j / @bt_half_life) AS prior, IFNULL(l.taps, 0) AS taps, IFNULL(l.exposure, 0) AS exposure
  FROM UNNEST(GENERATE_ARRAY(0, @bt_ahead_hours - 1)) AS j LEFT JOIN lag_counts AS l USING (j)
), lag_totals AS (
  SELECT SUM(taps) AS taps, SUM(prior * exposure) AS prior_exposure, SUM(prior) AS prior_sum FROM lags
), learned AS (
  SELECT l.j,
         IF(t.taps = 0 OR NOT @bt_learn_lag, l.prior,
            (l.taps + @bt_lag_taps * l.prior / t.prior_sum)
              / (l.exposure + @bt_lag_taps * t.prior_exposure / (t.prior_sum * t.taps))) AS w
  FROM lags AS l CROSS JOIN lag_totals AS t
), weights AS (
  SELECT j, w / MAX(w) OVER () AS w FROM learned
), scored AS (
  SELECT a.contact_id, a.activity, a.k, a.at, a.how, a.local_hour, a.explore, a.slot_hash, p.events,
         SUM(w.w * p.presence * p.not_buying) + IF(p.events = 0 AND a.local_hour = @bt_fallback_hour, 1, 0) AS score
  FROM ahead AS a
  JOIN presence AS p ON p.contact_id = a.contact_id AND p.how_j = a.how_j
  JOIN weights AS w ON w.j = a.j
  GROUP BY a.contact_id, a.activity, a.k, a.at, a.how, a.local_hour, a.explore, a.slot_hash, p.events
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
    conversions: tuple[str, ...] | list[str] = (),
) -> CompiledQuery:
    """One row per member (``members``: a query with a ``contact_id`` column): ``send_at``, ``hour_of_week`` and
    ``local_hour`` of the chosen slot, its ``score``, the member's ``events`` and the ``reason``. ``seed``: the
    campaign, so exploration is the same on every run; ``conversions``: its conversion events (module docstring,
    "Conversions anyway"). A member all of whose slots are outside ``allowed_hours`` gets no row (nothing in the
    window may be sent)."""
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
        "bt_k_week": float(model.week_strength),
        "bt_k_rate": float(model.rate_strength),
        "bt_rate_reach": model.rate_reach,
        "bt_ahead_hours": model.ahead_hours,
        "bt_half_life": float(model.half_life_hours),
        "bt_learn_lag": model.lag_taps is not None,
        "bt_lag_taps": float(model.lag_taps or 0.0),
        "bt_tapped": OPENED_EVENT,
        # an event name is never empty, so [""] matches nothing (and gives the parameter its element type)
        "bt_conversions": list(conversions) or [""],
        "bt_min_events": model.min_events,
        "bt_fallback_hour": -1 if model.fallback_hour is None else model.fallback_hour,
        "bt_explore_ppm": round(model.explore * 1_000_000),
        "bt_seed": seed,
    }
    return CompiledQuery(_SQL.format(members=members.sql, message_id_key=MESSAGE_ID_DATA_KEY), params)

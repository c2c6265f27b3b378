"""Did a campaign work? Per arm: assigned, sent, skipped, received, opened, converted, and each variant's lift over
the holdout with its 95% interval and p-value; the same by activity level, by stratum and (best-time campaigns) by
send time's reason; a sample-ratio check on the assignment; cumulative conversions over time since send. All of it
is computed by SQL in the tenant's dataset (this module builds the queries from the stored campaign; Python only
carries the numbers to the report).

Definitions (README, "Reports"):

- **Intention to treat**: every member counts in the arm it was assigned, sent or not (a skipped member of a variant
  still counts), so a variant is compared with a holdout chosen the same way.
- **Converted**: at least one of the campaign's conversion events within ``within_hours`` after the member's start:
  its send time if it was sent, otherwise (holdout, skipped) its planned send time.
- **Received / opened**: a "Push Notification Received" / "Push Notification Tapped" event (the Segment mobile spec's
  push events) whose ``landline_message_id`` property is the member's message id (every push carries it in its data
  payload, shared/push/schedule.py ``MESSAGE_ID_DATA_KEY``). A tap counts as received too.
- **Lift** (absolute): variant rate minus holdout rate, with a Wald interval from the unpooled standard error
  ``sqrt(p1(1-p1)/n1 + p0(1-p0)/n0)`` and a two-sided z-test p-value; **relative lift** ``p1/p0 - 1`` with a
  delta-method interval (the method GrowthBook's frequentist engine uses). Checked against statsmodels in the tests.
- **Sample-ratio mismatch**: Pearson's chi-square of the arms' assigned counts against their configured shares
  (``k - 1`` degrees of freedom); GrowthBook flags p < 0.001, and so does the report. And, because the assignment
  is stratified (each arm within one contact of its share in every stratum), ``strata_off``: the strata where some
  arm is further off than that, which no healthy launch produces, so any is a broken assignment, at any size.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from shared.campaigns.allocation import ArmCount, Cell, ipw_lift
from shared.campaigns.campaign import HOLDOUT, SHARE_SCALE, Campaign
from shared.campaigns.launch import launched
from shared.campaigns.stats import Z_95, chi_square_tail, two_sided_p
from shared.campaigns.status import LATEST_OUTCOME
from shared.campaigns.store import get_campaign
from shared.push.schedule import MESSAGE_ID_DATA_KEY, OPENED_EVENT, RECEIVED_EVENT
from shared.warehouse.query import run_query

SRM_ALARM_P = 0.001

# Every member with its outcome, start time and opens; then its first conversion in the window. ``{conversion}``
# is a list of parameters (never text from the campaign file).
_MEMBERS = """
WITH a AS (
  SELECT arm, IFNULL(activity, 'unknown') AS activity, IFNULL(stratum, '') AS stratum, contact_id, message_id,
         planned_send_at, IFNULL(wave, 0) AS wave, IFNULL(send_reason, '') AS send_reason
  FROM campaign_assignments WHERE campaign = @campaign
), latest AS (
  SELECT x.message_id, x.status, x.reason, x.at
  FROM message_sends AS x JOIN a ON a.message_id = x.message_id
  WHERE """ + LATEST_OUTCOME + """
), opens AS (
  SELECT JSON_VALUE(e.metadata, '$.{message_id_key}') AS message_id, MAX(IF(e.event_name = @opened, 1, 0)) AS tapped
  FROM events_deduped AS e
  WHERE e.event_name IN (@received, @opened)
  GROUP BY 1
), members AS (
  SELECT a.arm, a.activity, a.stratum, a.wave, a.send_reason, a.contact_id, a.message_id, l.status, l.reason,
         IF(l.status = 'sent', l.at, a.planned_send_at) AS start_at,
         o.message_id IS NOT NULL AS received, IFNULL(o.tapped, 0) = 1 AS opened
  FROM a
  LEFT JOIN latest AS l ON l.message_id = a.message_id
  LEFT JOIN opens AS o ON o.message_id = a.message_id
), conversions AS (
  SELECT m.message_id, MIN(e.timestamp) AS converted_at
  FROM members AS m JOIN events_deduped AS e ON e.contact_id = m.contact_id
  WHERE e.event_name IN ({conversion})
    AND e.timestamp >= m.start_at AND e.timestamp < TIMESTAMP_ADD(m.start_at, INTERVAL @window_s SECOND)
  GROUP BY m.message_id
)"""

_COUNTS = """
  SUM(assigned) AS assigned, SUM(sent) AS sent, SUM(skipped) AS skipped, SUM(failed) AS failed,
  SUM(received) AS received, SUM(opened) AS opened, SUM(converted) AS converted"""

_RESULTS = _MEMBERS + """, cells AS (
  SELECT m.arm, m.activity, m.stratum, m.wave, m.send_reason, COUNT(*) AS assigned,
         SUM(IF(m.status = 'sent', 1, 0)) AS sent, SUM(IF(m.status = 'skipped', 1, 0)) AS skipped,
         SUM(IF(m.status = 'failed', 1, 0)) AS failed, SUM(IF(m.received, 1, 0)) AS received,
         SUM(IF(m.opened, 1, 0)) AS opened, SUM(IF(c.message_id IS NULL, 0, 1)) AS converted
  FROM members AS m LEFT JOIN conversions AS c ON c.message_id = m.message_id
  GROUP BY m.arm, m.activity, m.stratum, m.wave, m.send_reason
), levels AS (
  SELECT 'overall' AS breakdown, '' AS level, arm, {counts} FROM cells GROUP BY arm
  UNION ALL SELECT 'activity', activity, arm, {counts} FROM cells GROUP BY activity, arm
  UNION ALL SELECT 'stratum', stratum, arm, {counts} FROM cells GROUP BY stratum, arm
  UNION ALL SELECT 'send_reason', send_reason, arm, {counts} FROM cells WHERE send_reason != '' GROUP BY send_reason, arm
), rates AS (
  SELECT *, converted / assigned AS rate FROM levels
), holdout AS (
  SELECT breakdown, level, assigned AS h_n, rate AS h_rate FROM rates WHERE arm = @holdout
), lifts AS (
  SELECT r.*, h.h_n, h.h_rate,
         IF(r.arm = @holdout, NULL, r.rate - h.h_rate) AS lift_abs,
         IF(r.arm = @holdout, NULL, SQRT(r.rate * (1 - r.rate) / r.assigned + h.h_rate * (1 - h.h_rate) / h.h_n))
           AS se,
         IF(r.arm = @holdout OR h.h_rate = 0, NULL, r.rate / h.h_rate - 1) AS lift_rel,
         IF(r.arm = @holdout OR h.h_rate = 0, NULL,
            SQRT(r.rate * (1 - r.rate) / r.assigned / (h.h_rate * h.h_rate)
                 + r.rate * r.rate * h.h_rate * (1 - h.h_rate) / h.h_n / (h.h_rate * h.h_rate * h.h_rate * h.h_rate)))
           AS se_rel
  FROM rates AS r LEFT JOIN holdout AS h ON h.breakdown = r.breakdown AND h.level = r.level
), expected AS (
  {expected}
), wave_strata AS (
  SELECT wave, stratum, ANY_VALUE(activity) AS activity, SUM(assigned) AS total FROM cells GROUP BY wave, stratum
), expected_strata AS (
  -- each stratum of each wave with every arm's share: its level's in that wave, else the wave's default ('*')
  SELECT w.wave, w.stratum, w.total, e.arm, e.share
  FROM wave_strata AS w JOIN expected AS e ON e.wave = w.wave AND e.level IN (w.activity, '*')
  WHERE TRUE
  QUALIFY ROW_NUMBER() OVER (PARTITION BY w.wave, w.stratum, e.arm ORDER BY IF(e.level = '*', 1, 0)) = 1
), arms_in_strata AS (
  SELECT wave, stratum, arm, SUM(assigned) AS n FROM cells GROUP BY wave, stratum, arm
), strata AS (
  SELECT x.wave, x.stratum, x.arm, x.share, x.total, IFNULL(a.n, 0) AS n
  FROM expected_strata AS x
  LEFT JOIN arms_in_strata AS a ON a.wave = x.wave AND a.stratum = x.stratum AND a.arm = x.arm
), overall AS (
  SELECT arm, SUM(total * share) AS expected_n, SUM(n) AS n FROM strata GROUP BY arm
), srm AS (
  SELECT SUM(SAFE_DIVIDE((n - expected_n) * (n - expected_n), expected_n)) AS chi2 FROM overall
), stratum_check AS (
  SELECT COUNT(DISTINCT CONCAT(CAST(wave AS STRING), '|', stratum)) AS strata_off FROM strata
  WHERE ABS(n - total * share) > 1.000001
)
SELECT breakdown, level, arm, assigned, sent, skipped, failed, received, opened, converted, rate, rate_ci_low,
       rate_ci_high, lift_abs, se, lift_ci_low, lift_ci_high, IF(se > 0, {p_value}, NULL) AS p_value, lift_rel,
       lift_rel_ci_low, lift_rel_ci_high, srm_chi2, {srm_p} AS srm_p_value, strata_off
FROM (
  SELECT l.*, ABS(SAFE_DIVIDE(l.lift_abs, l.se)) AS abs_z,
         l.rate - {z} * SQRT(l.rate * (1 - l.rate) / l.assigned) AS rate_ci_low,
         l.rate + {z} * SQRT(l.rate * (1 - l.rate) / l.assigned) AS rate_ci_high,
         l.lift_abs - {z} * l.se AS lift_ci_low, l.lift_abs + {z} * l.se AS lift_ci_high,
         l.lift_rel - {z} * l.se_rel AS lift_rel_ci_low, l.lift_rel + {z} * l.se_rel AS lift_rel_ci_high,
         s.chi2 AS srm_chi2, SQRT(s.chi2) AS srm_root, c.strata_off
  FROM lifts AS l CROSS JOIN srm AS s CROSS JOIN stratum_check AS c
)
ORDER BY breakdown, level, arm
"""

# Members and conversions per (wave, activity level, arm): what the next wave's shares learn from, and the cells of
# the inverse-propensity-weighted lifts of a campaign sent in waves (shared/campaigns/allocation.py).
_WAVE_CELLS = _MEMBERS + """
SELECT m.wave, m.activity, m.arm, COUNT(*) AS assigned, COUNTIF(c.message_id IS NOT NULL) AS converted
FROM members AS m LEFT JOIN conversions AS c ON c.message_id = m.message_id
GROUP BY m.wave, m.activity, m.arm
ORDER BY m.wave, m.activity, m.arm
"""

_SKIPS = _MEMBERS + """
SELECT arm, status, IFNULL(reason, '-') AS reason, COUNT(*) AS n FROM members
WHERE status IN ('skipped', 'failed') GROUP BY arm, status, reason ORDER BY arm, status, reason
"""

# Conversions per arm by time since the member's start (``@bucket_s`` buckets: a 48th of the window, at least a
# minute), cumulative, as a share of the arm's members; ``hours`` is the end of each bucket.
_TIMELINE = _MEMBERS + """, buckets AS (
  SELECT m.arm, DIV(TIMESTAMP_DIFF(c.converted_at, m.start_at, SECOND), @bucket_s) AS bucket, COUNT(*) AS n
  FROM members AS m JOIN conversions AS c ON c.message_id = m.message_id
  GROUP BY m.arm, bucket
), sizes AS (
  SELECT arm, COUNT(*) AS assigned FROM members GROUP BY arm
)
SELECT b.arm, (b.bucket + 1) * @bucket_s / 3600 AS hours, b.n,
       SUM(b.n) OVER (PARTITION BY b.arm ORDER BY b.bucket) AS cumulative,
       SUM(b.n) OVER (PARTITION BY b.arm ORDER BY b.bucket) / s.assigned AS cumulative_rate
FROM buckets AS b JOIN sizes AS s ON s.arm = b.arm
ORDER BY b.arm, b.bucket
"""


@dataclass
class ArmResult:
    """One arm's numbers in one breakdown (overall, an activity level, a stratum)."""

    arm: str
    assigned: int
    sent: int
    skipped: int
    failed: int
    received: int
    opened: int
    converted: int
    conversion_rate: float
    rate_ci_low: float  # the arm's own rate, Wald 95%
    rate_ci_high: float
    lift_abs: float | None = None
    lift_ci_low: float | None = None
    lift_ci_high: float | None = None
    p_value: float | None = None
    lift_rel: float | None = None
    lift_rel_ci_low: float | None = None
    lift_rel_ci_high: float | None = None
    skipped_by_reason: dict[str, int] = field(default_factory=dict)


@dataclass
class CampaignReport:
    campaign: str
    launched: bool
    conversion_events: list[str]
    window_hours: float
    arms: list[ArmResult] = field(default_factory=list)
    by_activity: list[dict[str, Any]] = field(default_factory=list)  # ArmResult fields + "activity"
    by_stratum: list[dict[str, Any]] = field(default_factory=list)  # ArmResult fields + "stratum"
    # Best-time campaigns: the lift among members sent at the model's time (profile, fallback) and among those sent
    # at a random one (exploration), each against the holdout members planned the same way; exploration is decided
    # by a hash apart from the arm's, so each comparison is randomized, and their difference checks the model.
    by_send_reason: list[dict[str, Any]] = field(default_factory=list)  # ArmResult fields + "send_reason"
    srm_chi2: float | None = None
    srm_p_value: float | None = None
    strata_off: int = 0  # strata where an arm is more than one contact off its share
    timeline: list[dict[str, Any]] = field(default_factory=list)  # arm, hours, n, cumulative, cumulative_rate
    # Campaigns sent in waves: each wave's launch time, size and shares per activity level (the allocation history),
    # and each variant's lift over the holdout weighted by the recorded shares (valid when the shares moved).
    allocation: str | None = None
    waves: list[dict[str, Any]] = field(default_factory=list)  # wave, launched_at, audience_size, shares
    weighted_lifts: list[dict[str, Any]] = field(default_factory=list)  # arm, lift, se, low, high, rate, ...
    weighted_method: str = ""
    method: str = (
        "intention to treat; absolute lift: Wald 95% interval (unpooled SE) and two-sided z-test; relative lift: "
        "delta method; sample ratio: Pearson chi-square, alarm at p < 0.001"
    )

    @property
    def srm_alarm(self) -> bool:
        return (self.srm_p_value is not None and self.srm_p_value < SRM_ALARM_P) or self.strata_off > 0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["srm_alarm"] = self.srm_alarm
        return out


def report_queries(
    campaign: Campaign, history: list[dict[str, Any]] | None = None
) -> dict[str, tuple[str, dict[str, Any]]]:
    """The report's queries (results, skips, timeline, wave cells) with their parameters. ``history``: a campaign in
    waves' committed waves (``wave_history``), whose recorded shares the assignment check expects."""
    conversion = campaign.conversion
    events = conversion.events if conversion else []
    params: dict[str, Any] = {
        "campaign": campaign.name, "holdout": HOLDOUT, "received": RECEIVED_EVENT, "opened": OPENED_EVENT,
        "window_s": round((conversion.within_hours if conversion else 0) * 3600),
    }  # fmt: skip
    params["bucket_s"] = max(60, params["window_s"] // 48)
    names = []
    for i, event in enumerate(events):
        params[f"ev{i}"] = event
        names.append(f"@ev{i}")
    members = {"conversion": ", ".join(names) if names else "CAST(NULL AS STRING)", "message_id_key": MESSAGE_ID_DATA_KEY}
    shares = campaign.arm_shares()
    expected = []
    if history:  # a campaign in waves: each wave's shares per level, as its launch marker recorded them
        rows = [(w["wave"], level, arm, share) for w in history for level, arms in w["shares"].items()
                for arm, share in arms.items()]  # fmt: skip
    else:
        rows = [(0, "*", arm, share / SHARE_SCALE) for arm, share in shares]
    for i, (wave, level, arm, share) in enumerate(rows):
        params |= {f"ew{i}": wave, f"el{i}": level, f"sa{i}": arm, f"ss{i}": float(share)}
        expected.append(f"SELECT @ew{i} AS wave, @el{i} AS level, @sa{i} AS arm, @ss{i} AS share")
    results = _RESULTS.format(
        **members, counts=_COUNTS, expected="\n  UNION ALL ".join(expected), z=repr(Z_95),
        p_value=two_sided_p("abs_z"), srm_p=chi_square_tail("srm_chi2", "srm_root", max(len(shares) - 1, 1)),
    )  # fmt: skip
    return {
        "results": (results, params),
        "skips": (_SKIPS.format(**members), params),
        "timeline": (_TIMELINE.format(**members), params),
        "wave_cells": (_WAVE_CELLS.format(**members), params),
    }


def campaign_report(tenant_name: str, name: str) -> CampaignReport:
    """The report of campaign ``name`` (its committed launch); an unlaunched campaign has no arms."""
    campaign = get_campaign(tenant_name, name).campaign
    conversion = campaign.conversion
    report = CampaignReport(
        name, launched(tenant_name, name) is not None,
        list(conversion.events) if conversion else [], conversion.within_hours if conversion else 0.0,
    )  # fmt: skip
    if not report.launched:
        return report
    history = wave_history(tenant_name, name) if campaign.waves is not None else None
    queries = report_queries(campaign, history)
    skips: dict[str, dict[str, int]] = {}
    for row in run_query(tenant_name, *queries["skips"]):
        skips.setdefault(row["arm"], {})[f"{row['status']}:{row['reason']}"] = row["n"]
    order = {arm: i for i, (arm, _) in enumerate(campaign.arm_shares())}
    for row in run_query(tenant_name, *queries["results"]):
        result = _arm(row)
        report.srm_chi2, report.srm_p_value, report.strata_off = row["srm_chi2"], row["srm_p_value"], row["strata_off"]
        if row["breakdown"] == "overall":
            result.skipped_by_reason = skips.get(result.arm, {})
            report.arms.append(result)
        elif row["breakdown"] == "activity":
            report.by_activity.append({"activity": row["level"], **asdict(result)})
        elif row["breakdown"] == "send_reason":
            report.by_send_reason.append({"send_reason": row["level"], **asdict(result)})
        else:
            report.by_stratum.append({"stratum": row["level"], **asdict(result)})
    report.arms.sort(key=lambda r: order.get(r.arm, len(order)))
    report.timeline = run_query(tenant_name, *queries["timeline"])
    if campaign.waves is not None:
        report.allocation = campaign.allocation
        report.waves = history or []
        cells = [WaveCell(**row) for row in run_query(tenant_name, *queries["wave_cells"])]
        report.weighted_lifts, left_out = weighted_lifts(cells, [v.id for v in campaign.variants])
        report.weighted_method = (
            "inverse-propensity weighting: each (wave, activity level) cell's rate weighted by the cell's size, "
            "i.e. each member by 1 / its recorded share (shared/campaigns/allocation.py); 95% Wald interval"
            + (f"; {left_out} members in cells lacking an arm are left out" if left_out else "")
        )
    return report


@dataclass(frozen=True)
class WaveCell:
    """Members and conversions of one arm in one (wave, activity level) cell."""

    wave: int
    activity: str
    arm: str
    assigned: int
    converted: int


def wave_history(tenant_name: str, name: str) -> list[dict[str, Any]]:
    """The committed waves of a campaign, first to last, with the shares each was assigned with."""
    rows = run_query(
        tenant_name,
        "SELECT IFNULL(wave, 0) AS wave, launched_at, audience_size, TO_JSON_STRING(shares) AS shares "
        "FROM campaign_launched WHERE campaign = @c ORDER BY wave",
        {"c": name},
    )
    return [{**r, "shares": json.loads(r["shares"]) if r["shares"] else {}} for r in rows]


def weighted_lifts(cells: list[WaveCell], variants: list[str]) -> tuple[list[dict[str, Any]], int]:
    """Each variant's inverse-propensity-weighted lift over the holdout from the (wave, level) cells; cells in which
    some arm has no member cannot weigh that arm and are left out (returned: how many members that is)."""
    grouped: dict[tuple[int, str], dict[str, ArmCount]] = {}
    for c in cells:
        grouped.setdefault((c.wave, c.activity), {})[c.arm] = ArmCount(c.arm, c.assigned, c.converted)
    arms = {HOLDOUT, *variants}
    usable = [Cell(sum(a.assigned for a in counts.values()), counts)
              for counts in grouped.values() if arms <= {a for a, n in counts.items() if n.assigned > 0}]  # fmt: skip
    left_out = sum(c.assigned for c in cells) - sum(c.size for c in usable)
    if not usable:
        return [], left_out
    out = []
    for arm in variants:
        lift = ipw_lift(usable, arm)
        out.append({"arm": arm, "lift_abs": lift.lift, "se": lift.se, "lift_ci_low": lift.low,
                    "lift_ci_high": lift.high, "members": sum(c.arms[arm].assigned for c in usable)})  # fmt: skip
    return out, left_out


def _arm(row: dict[str, Any]) -> ArmResult:
    def number(key: str) -> float | None:
        value = row[key]
        return None if value is None else float(value)

    return ArmResult(
        arm=row["arm"], assigned=int(row["assigned"]), sent=int(row["sent"]), skipped=int(row["skipped"]),
        failed=int(row["failed"]), received=int(row["received"]), opened=int(row["opened"]),
        converted=int(row["converted"]), conversion_rate=float(row["rate"]),
        rate_ci_low=float(row["rate_ci_low"]), rate_ci_high=float(row["rate_ci_high"]),
        lift_abs=number("lift_abs"), lift_ci_low=number("lift_ci_low"), lift_ci_high=number("lift_ci_high"),
        p_value=number("p_value"), lift_rel=number("lift_rel"), lift_rel_ci_low=number("lift_rel_ci_low"),
        lift_rel_ci_high=number("lift_rel_ci_high"),
    )  # fmt: skip

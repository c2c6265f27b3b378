"""`landline simulate`: one campaign with a known truth, through the real pipeline, compared with its report.

Synthetic contacts arrive as a Segment export in the tenant's bucket (identify calls with a token and a country, and
``Product Viewed`` events over the last 25 days, so each contact has a known activity level); an audience and a
campaign (holdout and variants ``a``, ``b``, ``c``) are saved, launched and sent by the deployed ``send_due`` to the
fake FCM; then receipts, taps and conversions arrive as a later Segment file. Each member converts with a known
probability: its level's base rate (``BASE``) plus its arm's true effect in that level (``EFFECT``) when the push was
actually sent. The report (`landline report campaign`, SQL in the tenant's dataset) must count exactly what was
dropped, per arm and per activity level, and its 95% intervals should cover the true lifts (about 19 times in 20).

The truth model lives here; ``bench/simulate`` (500 seeded runs measured by the report's SQL) uses the same one.
Generating the files is a loop over synthetic contacts (it is the test data, the product's work happens in
BigQuery); the comparison reads only the report.
"""

from __future__ import annotations

import gzip
import json
import random
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infra.local.stack_ops import drop_files, publish_tick, wait_idle

if TYPE_CHECKING:
    from collections.abc import Callable

    from infra.local.stack_config import StackConfig
    from shared.campaigns.results import CampaignReport

LEVELS = {"dormant": 0.4, "low": 0.3, "medium": 0.2, "high": 0.1}  # share of contacts
BASE = {"dormant": 0.05, "low": 0.08, "medium": 0.12, "high": 0.20}  # conversion without a message
EFFECT = {"a": dict.fromkeys(LEVELS, 0.03), "b": dict.fromkeys(LEVELS, 0.0),
          "c": {"dormant": 0.0, "low": 0.0, "medium": 0.0, "high": 0.08}}  # fmt: skip
ARMS = ("holdout", "a", "b", "c")
HOLDOUT = 0.25
# Product Viewed events in the last 30 days per level, as the default thresholds (shared/config.py ActivityLevels)
# read them: dormant 0, low 1-2, medium 3-9, high 10+.
VIEWS = {"dormant": (0, 0), "low": (1, 2), "medium": (3, 9), "high": (10, 14)}
WINDOW_HOURS = 1.0
CONVERSION = "Order Completed"
TOKEN_SHARE = 0.95  # the rest have no push token: assigned, skipped at send time, still counted (intention to treat)
RECEIVED_SHARE, TAPPED_SHARE = 0.7, 0.4  # of sent pushes; of received ones
COUNTED = ("assigned", "sent", "received", "opened", "converted")


@dataclass
class Member:
    contact_id: str
    level: str
    arm: str
    sent: bool
    start: datetime  # the send, or the planned send for the holdout and the unsent
    received: bool = False
    opened: bool = False
    converted: bool = False

    @property
    def probability(self) -> float:
        """Its true conversion probability: the level's base rate, plus the arm's effect if the push went out."""
        return BASE[self.level] + (EFFECT.get(self.arm, {}).get(self.level, 0.0) if self.sent else 0.0)


@dataclass
class Simulation:
    tenant: str
    campaign: str
    seed: int
    contacts: int
    members: list[Member] = field(default_factory=list)
    report: CampaignReport | None = None

    def true_lift(self, arm: str, level: str | None = None) -> float:
        """The expected difference in conversion rate between ``arm`` and the holdout (intention to treat: members
        whose push was not sent have the base rate), for this run's members of ``level`` (all if None)."""

        def mean(which: str) -> float:
            chosen = [m.probability for m in self.members if m.arm == which and level in (None, m.level)]
            return sum(chosen) / len(chosen) if chosen else 0.0

        return mean(arm) - mean("holdout")

    def comparison(self) -> dict[str, Any]:
        """Truth against report: exact counts per arm and activity level, and whether each interval covers the true
        lift."""
        assert self.report is not None
        truth: dict[str, Counter[str]] = {}
        by_level: dict[tuple[str, str], Counter[str]] = {}
        for m in self.members:
            for counter in (truth.setdefault(m.arm, Counter()), by_level.setdefault((m.level, m.arm), Counter())):
                counter.update(assigned=1, sent=m.sent, received=m.received, opened=m.opened, converted=m.converted)
        mismatches: list[str] = []
        arms = []
        for result in self.report.arms:
            expected = {k: truth.get(result.arm, Counter())[k] for k in COUNTED}
            reported = {k: getattr(result, k) for k in COUNTED}
            mismatches += [f"{result.arm} {k}: report {reported[k]}, truth {v}" for k, v in expected.items()
                           if reported[k] != v]  # fmt: skip
            arms.append({"arm": result.arm, "truth": expected, "report": reported,
                         **_interval(result.arm, vars(result), self.true_lift(result.arm))})  # fmt: skip
        if {a["arm"] for a in arms} != set(truth):
            mismatches.append(f"arms: report {sorted(a['arm'] for a in arms)}, truth {sorted(truth)}")
        levels = []
        order = {key: i for i, key in enumerate((level, arm) for level in LEVELS for arm in ARMS)}
        for row in sorted(self.report.by_activity, key=lambda r: order.get((r["activity"], r["arm"]), len(order))):
            key = (row["activity"], row["arm"])
            expected = {k: by_level.get(key, Counter())[k] for k in ("assigned", "converted")}
            mismatches += [f"{key[0]}/{key[1]} {k}: report {row[k]}, truth {v}" for k, v in expected.items()
                           if row[k] != v]  # fmt: skip
            levels.append({"activity": row["activity"], "arm": row["arm"], "truth": expected,
                           **_interval(row["arm"], row, self.true_lift(row["arm"], row["activity"]))})  # fmt: skip
        missing = set(by_level) - {(r["activity"], r["arm"]) for r in levels}
        mismatches += [f"{level}/{arm}: in the truth, not in the report" for level, arm in sorted(missing)]
        intervals = [x for x in [*arms, *levels] if x["covers"] is not None]
        return {
            "tenant": self.tenant, "campaign": self.campaign, "seed": self.seed, "contacts": self.contacts,
            "exact": not mismatches, "mismatches": mismatches,
            "intervals": len(intervals), "covered": sum(bool(x["covers"]) for x in intervals),
            "srm_p_value": self.report.srm_p_value, "strata_off": self.report.strata_off,
            "srm_alarm": self.report.srm_alarm, "arms": arms, "by_activity": levels,
            "truth_model": {"base": BASE, "effect": EFFECT, "levels": LEVELS, "holdout": HOLDOUT,
                            "window_hours": WINDOW_HOURS},
        }  # fmt: skip


def _interval(arm: str, row: dict[str, Any], true_lift: float) -> dict[str, Any]:
    if arm == "holdout":
        return {"true_lift": None, "lift_abs": None, "lift_ci_low": None, "lift_ci_high": None, "covers": None}
    low, high = row["lift_ci_low"], row["lift_ci_high"]
    return {"true_lift": true_lift, "lift_abs": row["lift_abs"], "lift_ci_low": low, "lift_ci_high": high,
            "covers": None if low is None else low <= true_lift <= high}  # fmt: skip


def _level(rng: random.Random) -> str:
    return rng.choices(list(LEVELS), weights=list(LEVELS.values()))[0]


def _track(contact: str, event: str, at: datetime, n: int, **properties: Any) -> dict[str, Any]:
    return {"type": "track", "userId": contact, "event": event, "messageId": f"{contact}-{event[:5]}-{n}",
            "properties": properties, "timestamp": at.isoformat()}  # fmt: skip


def contact_lines(
    run: str, contacts: int, rng: random.Random, now: datetime
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The first export: one identify per contact and its Product Viewed events; returns (lines, contact -> level)."""
    lines: list[dict[str, Any]] = []
    levels: dict[str, str] = {}
    for i in range(contacts):
        contact, level = f"{run}-{i:05d}", _level(rng)
        levels[contact] = level
        context: dict[str, Any] = {"timezone": "Europe/Paris"}
        if rng.random() < TOKEN_SHARE:
            context["device"] = {"token": f"tok-{contact}"}
        lines.append({"type": "identify", "userId": contact, "messageId": f"{contact}-identify",
                      "timestamp": (now - timedelta(days=28)).isoformat(), "context": context,
                      "traits": {"sim_run": run, "country": rng.choice(["DE", "FR", "ES"])}})  # fmt: skip
        low, high = VIEWS[level]
        for n in range(rng.randint(low, high)):
            seen = now - timedelta(days=1 + n % 24, minutes=rng.randrange(600))
            lines.append(_track(contact, "Product Viewed", seen, n, sku=f"sku-{rng.randrange(40)}"))
    return lines, levels


def outcome_lines(members: list[Member], rng: random.Random, message_ids: dict[str, str]) -> list[dict[str, Any]]:
    """The later export: receipts and taps of sent pushes (carrying the message id, as the app must), conversions
    inside the window with each member's true probability, and what must not count: orders the day before or just
    after the window, and another event inside it. Sets each member's outcome."""
    from shared.push.schedule import MESSAGE_ID_DATA_KEY, OPENED_EVENT, RECEIVED_EVENT

    lines: list[dict[str, Any]] = []
    window = timedelta(hours=WINDOW_HOURS)
    for m in members:
        m.converted = rng.random() < m.probability
        if m.converted:
            lines.append(_track(m.contact_id, CONVERSION, m.start + rng.random() * window * 0.9 + timedelta(seconds=30), 0,
                                revenue=round(rng.uniform(5, 80), 2)))  # fmt: skip
        noise = rng.random()
        if noise < 0.10:
            lines.append(_track(m.contact_id, CONVERSION, m.start - timedelta(days=1), 1))
        elif noise < 0.15:
            lines.append(_track(m.contact_id, CONVERSION, m.start + window + timedelta(minutes=5), 2))
        elif noise < 0.20:
            lines.append(_track(m.contact_id, "Checkout Started", m.start + window / 2, 3))
        if m.sent:
            m.received = rng.random() < RECEIVED_SHARE
            m.opened = m.received and rng.random() < TAPPED_SHARE
            if m.received:
                event = OPENED_EVENT if m.opened else RECEIVED_EVENT
                lines.append(_track(m.contact_id, event, m.start + timedelta(seconds=20), 4,
                                    **{MESSAGE_ID_DATA_KEY: message_ids[m.contact_id]}))  # fmt: skip
    return lines


def _segment_tree(root: Path, lines: list[dict[str, Any]], folder_ms: int, name: str) -> Path:
    folder = root / "segment-logs" / "simulator" / str(folder_ms)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(gzip.compress(b"".join(json.dumps(x).encode() + b"\n" for x in lines)))
    return root


def _drop(cfg: StackConfig, tenant: str, lines: list[dict[str, Any]], name: str, now: datetime) -> None:
    with tempfile.TemporaryDirectory(prefix="landline-simulate-") as tmp:
        day_ms = int(now.replace(hour=0, minute=0, second=0, microsecond=0).timestamp() * 1000)
        drop_files(cfg, [_segment_tree(Path(tmp), lines, day_ms, name)], tenant, "")
    wait_idle(cfg.url("router"), timeout=900)


def _unsent(tenant: str, campaign: str) -> int:
    from shared.warehouse.query import run_query

    return int(run_query(tenant, """
        SELECT COUNT(*) AS n FROM campaign_assignments
        WHERE campaign = @c AND arm != 'holdout' AND message_id NOT IN (SELECT message_id FROM message_sends)""",
        {"c": campaign})[0]["n"])  # fmt: skip


def run_simulation(
    cfg: StackConfig, tenant: str, contacts: int, seed: int, echo: Callable[[str], None], max_ticks: int = 5
) -> Simulation:
    """Everything above on the running stack, for an existing tenant (push provider set, quiet hours off)."""
    from shared.campaigns.audience import Audience
    from shared.campaigns.campaign import parse_campaign
    from shared.campaigns.launch import launch_campaign
    from shared.campaigns.results import campaign_report
    from shared.campaigns.store import save_audience, save_campaign
    from shared.warehouse.query import run_query

    rng = random.Random(seed)
    run = f"sim-{seed}"
    now = datetime.now(UTC).replace(microsecond=0)
    lines, levels = contact_lines(run, contacts, rng, now)
    echo(f"dropping {contacts:,} contacts ({len(lines):,} lines: identify calls and Product Viewed events) ...")
    _drop(cfg, tenant, lines, "contacts.gz", now)

    save_audience(tenant, Audience.model_validate({"name": run, "where": {"properties.sim_run": {"eq": run}}}))
    campaign = parse_campaign({
        "name": run, "audience": run, "holdout": HOLDOUT, "stratify_by": ["activity", "country"],
        "variants": [{"id": arm, "title": "Back in stock", "body": f"Variant {arm}"} for arm in ARMS[1:]],
        "conversion": {"events": [CONVERSION], "within_hours": WINDOW_HOURS},
    })  # fmt: skip
    save_campaign(tenant, campaign)
    launch = launch_campaign(tenant, run)
    echo(
        f"campaign {run}: {launch.audience_size:,} members assigned, {launch.scheduled:,} pushes scheduled; ticking ..."
    )
    for _ in range(max_ticks):
        publish_tick(cfg.url("router"), tenant)
        wait_idle(cfg.url("router"), timeout=900)
        if not _unsent(tenant, run):
            break
    rows = run_query(tenant, """
        SELECT a.contact_id, a.arm, a.activity, a.message_id, a.planned_send_at, MIN(s.at) AS sent_at
        FROM campaign_assignments AS a
        LEFT JOIN message_sends AS s ON s.message_id = a.message_id AND s.status = 'sent'
        WHERE a.campaign = @c GROUP BY 1, 2, 3, 4, 5""", {"c": run})  # fmt: skip
    sim = Simulation(tenant, run, seed, contacts)
    for row in rows:
        if row["activity"] != levels[row["contact_id"]]:
            raise RuntimeError(
                f"{row['contact_id']} was launched as {row['activity']}, generated {levels[row['contact_id']]}"
            )
        start = row["sent_at"] or row["planned_send_at"]
        sim.members.append(Member(row["contact_id"], row["activity"], row["arm"], row["sent_at"] is not None,
                                  start if isinstance(start, datetime) else datetime.fromisoformat(start)))  # fmt: skip
    sim.members.sort(key=lambda m: m.contact_id)  # the draws below follow the contacts, not the query's order
    later = outcome_lines(sim.members, rng, {r["contact_id"]: r["message_id"] for r in rows})
    echo(f"{sum(m.sent for m in sim.members):,} pushes sent; dropping {len(later):,} later lines (receipts, taps, "
         "conversions and events that must not count) ...")  # fmt: skip
    _drop(cfg, tenant, later, "outcomes.gz", now)
    sim.report = campaign_report(tenant, run)
    return sim


def format_comparison(result: dict[str, Any]) -> str:
    """The comparison as text: per arm and level, truth against report, and the interval against the true lift."""

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{round(value * 100, 2) + 0.0:+.2f}"  # + 0.0: no "-0.00"

    out = [f"campaign {result['campaign']} in tenant {result['tenant']}: {result['contacts']:,} contacts, seed "
           f"{result['seed']}; lifts in percentage points"]  # fmt: skip
    header = f"{'':<16}{'assigned':>9}{'sent':>7}{'opened':>7}{'conv':>6}{'true lift':>11}  {'reported [95% interval]':<28} covers"
    out.append(header)
    for a in result["arms"]:
        t, r = a["truth"], a["report"]
        counts = "".join(f"{r[k]:>{w}}" + ("" if r[k] == t[k] else f"(truth {t[k]})") for k, w in
                         (("assigned", 9), ("sent", 7), ("opened", 7), ("converted", 6)))  # fmt: skip
        out.append(f"{a['arm']:<16}{counts}{_lift_columns(a, pct)}")
    for x in result["by_activity"]:
        t = x["truth"]
        out.append(
            f"{x['activity'] + '/' + x['arm']:<16}{t['assigned']:>9}{'':>14}{t['converted']:>6}{_lift_columns(x, pct)}"
        )
    exact = (
        "exact, per arm and activity level" if result["exact"] else "MISMATCH: " + "; ".join(result["mismatches"][:5])
    )
    out.append(f"counts against the truth: {exact}")
    out.append(
        f"95% intervals covering the true lift: {result['covered']} of {result['intervals']} (expect about 19 in 20)"
    )
    out.append(f"sample-ratio check: p {result['srm_p_value']:.3g}, strata off their shares {result['strata_off']}"
               f"{' ALARM' if result['srm_alarm'] else ' (healthy)'}")  # fmt: skip
    return "\n".join(out)


def _lift_columns(x: dict[str, Any], pct: Callable[[float | None], str]) -> str:
    if x["true_lift"] is None:
        return ""
    interval = f"{pct(x['lift_abs'])} [{pct(x['lift_ci_low'])}, {pct(x['lift_ci_high'])}]"
    covers = "-" if x["covers"] is None else "yes" if x["covers"] else "NO"
    return f"{pct(x['true_lift']):>11}  {interval:<28} {covers}"

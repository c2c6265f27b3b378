"""Best send time per contact (shared/campaigns/send_time.py) through the stack's BigQuery: the query's choice for
every contact equals a Python reference of the same model (events read in each contact's timezone with zoneinfo,
across the DST changes of the last weeks), quiet hours are never chosen, contacts without history get the tenant's
best hour, and exploration picks the contacts and slots its seeded hash says."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import pytest

from bench.learning.send_time_model import choose, hour_of_week
from shared.campaigns.audience import CompiledQuery
from shared.campaigns.send_time import SendTimeModel, best_time_query
from tests.stack_support import unique

if TYPE_CHECKING:
    from tests.stack_support import StackHandle

pytestmark = pytest.mark.stack

NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
ZONES = ("Europe/Paris", "America/New_York", "Asia/Tokyo", None)
ALLOWED = list(range(8, 22))  # quiet hours 22:00-08:00


CONVERSION = "Order Completed"


def people(rng: random.Random) -> list[dict[str, Any]]:
    """40 contacts, each active mostly at a favourite local hour (0-60 events over 50 days), and 4 without events;
    a quarter of them buy (a conversion event) in most sessions at their favourite hour, the others now and then."""
    out = []
    for i in range(44):
        tz = ZONES[i % len(ZONES)]
        favourite = rng.randrange(6, 23)
        events: list[tuple[datetime, bool]] = []
        for _ in range(0 if i >= 40 else rng.randrange(0, 60)):
            # c39's events are all older than 30 days: dormant, with history (its level's profile is not empty)
            day = NOW.astimezone(ZoneInfo(tz or "UTC")) - timedelta(days=rng.randrange(35, 50) if i == 39 else rng.randrange(1, 50))
            hour = favourite if rng.random() < 0.7 else rng.randrange(24)
            at = day.replace(hour=hour, minute=rng.randrange(60)).astimezone(UTC)
            events.append((at, False))
            if rng.random() < (0.8 if i % 4 == 0 and hour == favourite else 0.05):
                events.append((at, True))
        out.append({"id": f"c{i:02d}", "tz": tz, "events": events, "sends": []})
    # earlier campaigns' pushes to the contacts with recent history, three in four tapped, mostly 2-4 hours later
    # (the look-ahead's prior halves every 2 hours from the send: learning moves it); a push a contact taps counts
    # among its events too
    for p in out[:39]:
        for _ in range(rng.randrange(2, 8)):
            sent = (NOW - timedelta(days=rng.randrange(1, 40), hours=rng.randrange(24), minutes=rng.randrange(60)))
            lag = rng.choice([0, 1, 2, 2, 3, 3, 3, 4, 4, 6, 9])
            tapped = sent + timedelta(hours=lag, minutes=rng.randrange(60)) if rng.random() < 0.75 else None
            p["sends"].append((sent, tapped))
    return out


def event_rows(p: dict[str, Any], tenant: str) -> list[Any]:
    from shared.warehouse.rows import EventRow, Lineage

    return [EventRow(p["id"], at, CONVERSION if conversion else "App Opened", unique("e"),
                     Lineage("native", f"test://{tenant}/e", j, NOW)) for j, (at, conversion) in enumerate(p["events"])]  # fmt: skip


def send_rows(p: dict[str, Any], tenant: str) -> list[Any]:
    """Each earlier push as the send tick records it (a failed attempt first, then the send, and one send recorded
    twice, as at-least-once delivery may) and its tap as the app reports it (the message id in its metadata)."""
    from shared.push.schedule import MESSAGE_ID_DATA_KEY, OPENED_EVENT
    from shared.warehouse.rows import EventRow, Lineage, SendRow

    rows: list[Any] = []
    for j, (sent, tapped) in enumerate(p["sends"]):
        message_id = f"m-{p['id']}-{j}"
        rows.append(SendRow(message_id, p["id"], "failed", unique("a"), sent - timedelta(hours=5), reason="unavailable"))
        rows += [SendRow(message_id, p["id"], "sent", unique("a"), sent + timedelta(minutes=m)) for m in range(1 + (j == 1))]
        if tapped is not None:
            rows.append(EventRow(p["id"], tapped, OPENED_EVENT, unique("t"), Lineage("native", f"test://{tenant}/t", j, NOW),
                                 metadata={MESSAGE_ID_DATA_KEY: message_id}))  # fmt: skip
    return rows


def history(p: dict[str, Any]) -> list[tuple[datetime, bool]]:
    """A contact's events as the model reads them: its sessions and conversions, and its taps."""
    return p["events"] + [(tapped, False) for _, tapped in p["sends"] if tapped is not None]


def test_best_times_equal_a_python_reference_of_the_model(local_stack: StackHandle) -> None:
    from shared.config import tenants
    from shared.warehouse.client import bigquery_client
    from shared.warehouse.query import run_query
    from shared.warehouse.rows import Lineage, UserPropertiesRow
    from shared.warehouse.writer import write_rows

    # GIVEN 44 contacts in four timezones (one unknown: UTC), 40 with events around a favourite local hour
    rng = random.Random(14)
    ppl = people(rng)
    tenant = local_stack.add_tenant()
    t = tenants().get(tenant)
    rows: list[Any] = []
    for n, p in enumerate(ppl):
        lineage = Lineage("native", f"test://{tenant}", n, NOW)
        rows.append(UserPropertiesRow(p["id"], NOW - timedelta(days=60), unique("u"), lineage, timezone=p["tz"]))
        rows += event_rows(p, tenant) + send_rows(p, tenant)
    write_rows(bigquery_client(), t, rows, processor="test")
    activity = {r["contact_id"]: r["activity"] for r in run_query(tenant, "SELECT contact_id, activity FROM contact_activity")}
    # WHEN the best time in the next 24 hours (quiet 22-08 local) is computed for all of them, 25% exploring
    model = SendTimeModel(explore=0.25)
    start, seed = NOW + timedelta(hours=1), "spring"
    query = best_time_query(CompiledQuery("SELECT contact_id FROM users_latest", {}), start=start, hours=24,
                            allowed_hours=ALLOWED, now=NOW, seed=seed, model=model, conversions=[CONVERSION])  # fmt: skip
    chosen = {r["contact_id"]: r for r in run_query(tenant, query.sql, query.params)}
    expected = choose({p["id"]: (p["tz"], history(p)) for p in ppl}, activity, start=start, hours=24,
                      allowed=ALLOWED, now=NOW, seed=seed, model=model, sends={p["id"]: p["sends"] for p in ppl})  # fmt: skip
    # THEN every contact has a time; each non-exploring one the slot of highest score by the reference (ties aside),
    # each exploring one the slot its hash picks; the reasons say which, and no time falls in quiet hours
    assert set(chosen) == {p["id"] for p in ppl}
    reasons = Counter(r["reason"] for r in chosen.values())
    for cid, row in chosen.items():
        ref = expected[cid]
        assert ref.chosen is not None
        local = row["send_at"].astimezone(ZoneInfo(next(p["tz"] for p in ppl if p["id"] == cid) or "UTC"))
        assert local.hour in ALLOWED and local.hour == row["local_hour"]
        assert row["events"] == ref.events and row["reason"] == ref.reason, cid
        if ref.explore:
            assert row["send_at"] == ref.chosen.at, cid
            continue
        picked = next(s for s in ref.slots if s.at == row["send_at"])
        assert picked.score == pytest.approx(ref.chosen.score, rel=1e-9), cid
        assert row["score"] == pytest.approx(picked.score, rel=1e-9)
    assert reasons["exploration"] and reasons["profile"] and reasons["fallback"]
    # ... the look-ahead learned from the taps (scores above equal the reference's only if the query learned the same
    # weights): the taps' 2-4 hour lags weigh more against the send's own hour than the prior's halving every 2 hours
    weights = expected["c00"].lag_weights
    prior = [0.5 ** (j / 2) for j in range(8)]
    assert sum(weights[2:5]) / weights[0] > 1.5 * sum(prior[2:5]) / prior[0], weights
    # ... and a contact without history gets the tenant's best allowed hour (its activity there, less the tenant's
    # conversions anyway), not its (dormant) level's: every such contact's slots score as the tenant's profile does
    assert activity["c39"] == "dormant" and expected["c39"].events > 0
    sessions, buys = Counter[int](), Counter[int]()  # the tenant's, by hour of the week
    for p in ppl:
        for at, conversion in history(p):
            if at >= NOW - timedelta(days=model.lookback_days):
                (buys if conversion else sessions)[hour_of_week(at, p["tz"])] += 1
    hod_n, hod_x = Counter[int](), Counter[int]()
    for how, n in sessions.items():
        hod_n[how % 24] += n
    for how, n in buys.items():
        hod_x[how % 24] += n
    r_t = {d: min((hod_x[d] + 1) / (hod_n[d] + 20), 1.0) for d in range(24)}  # the model's tenant rate r_t(d)

    def tenant_there(at: datetime, tz: str | None) -> float:  # p_t(h) (1 - r_t(d)): the tenant's presence, not buying
        how = hour_of_week(at, tz)
        return (sessions[how] + 1) / (sum(sessions.values()) + 168) * (1 - r_t[how % 24])

    for cid in ("c40", "c41", "c42", "c43"):
        ref, row = expected[cid], chosen[cid]
        tz = next(p["tz"] for p in ppl if p["id"] == cid)
        assert ref.events == 0 and row["reason"] in ("fallback", "exploration")
        for slot in ref.slots:  # the next 8 hours, weighed by the lags learned
            ahead = sum(weights[j] * tenant_there(slot.at + timedelta(hours=j), tz) for j in range(8))
            assert slot.score == pytest.approx(ahead, rel=1e-9), cid
        if not ref.explore:
            assert row["score"] == pytest.approx(max(s.score for s in ref.slots), rel=1e-9), cid
    # AND WHEN the campaign names a fallback hour (09:00 local), the contacts without history that do not explore get
    # that hour, and every other contact the same time as before
    model = SendTimeModel(explore=0.25, fallback_hour=9)
    query = best_time_query(CompiledQuery("SELECT contact_id FROM users_latest", {}), start=start, hours=24,
                            allowed_hours=ALLOWED, now=NOW, seed=seed, model=model, conversions=[CONVERSION])  # fmt: skip
    with_fallback = {r["contact_id"]: r for r in run_query(tenant, query.sql, query.params)}
    for cid, row in with_fallback.items():
        ref = expected[cid]
        if ref.events == 0 and not ref.explore:
            assert row["local_hour"] == 9 and row["reason"] == "fallback", cid
        else:
            assert (row["send_at"], row["reason"]) == (chosen[cid]["send_at"], chosen[cid]["reason"]), cid
    assert sum(1 for cid in with_fallback if expected[cid].events == 0 and not expected[cid].explore) >= 2


def test_a_best_time_campaign_plans_and_sends_each_contact_at_its_own_time(local_stack: StackHandle) -> None:
    from shared.campaigns.audience import Audience, compile_audience
    from shared.campaigns.campaign import parse_campaign, window_start
    from shared.campaigns.launch import launch_campaign
    from shared.campaigns.results import campaign_report
    from shared.campaigns.store import save_audience, save_campaign
    from shared.config import tenants
    from shared.errors import SetupError
    from shared.push.shards import run_shard
    from shared.warehouse.client import bigquery_client
    from shared.warehouse.query import run_query
    from shared.warehouse.rows import Lineage, UserPropertiesRow
    from shared.warehouse.writer import write_rows

    # GIVEN the same kind of contacts, each with a push token, a tenant with quiet hours 22:00-08:00, and a campaign
    # to all of them sent at each one's best time within 24 hours (25% exploring, 20% holdout)
    ppl = people(random.Random(15))
    tenant = local_stack.add_tenant(push_provider="fcm", quiet_hours="22:00-08:00")
    tenants.cache_clear()
    t = tenants().get(tenant)
    rows: list[Any] = []
    for n, p in enumerate(ppl):
        rows.append(UserPropertiesRow(p["id"], NOW - timedelta(days=60), unique("u"), Lineage("native", "test://u", n, NOW),
                                      timezone=p["tz"], push_token=f"tok-{tenant}-{p['id']}"))  # fmt: skip
        rows += event_rows(p, tenant)
    write_rows(bigquery_client(), t, rows, processor="test")
    save_audience(tenant, Audience(name="all"))
    # (a fallback hour in quiet hours is refused at launch, naming the hours allowed)
    save_campaign(tenant, parse_campaign({"name": "late", "audience": "all", "variants": [{"id": "a", "title": "A", "body": "a"}],
                                          "send": {"best_time": {"fallback_hour": 23}}}))  # fmt: skip
    with pytest.raises(SetupError, match=r"fallback_hour 23 falls in the tenant's quiet hours.*8, 9, 10"):
        launch_campaign(tenant, "late", now=NOW)
    save_campaign(tenant, parse_campaign({"name": "bt", "audience": "all", "holdout": 0.2,
                                          "variants": [{"id": "a", "title": "A", "body": "a"}],
                                          "send": {"best_time": {"within_hours": 24, "explore": 0.25}}}))  # fmt: skip
    # WHEN it is launched
    launch = launch_campaign(tenant, "bt", now=NOW)
    # THEN every member (the holdout too) is planned at the time and for the reason the best-time query gives, in an
    # allowed local hour; and each variant member's message is scheduled then
    members = compile_audience(Audience(name="all"), NOW, extra=("timezone", "properties"))
    query = best_time_query(members, start=window_start(NOW), hours=24, allowed_hours=ALLOWED, now=NOW, seed="bt",
                            model=SendTimeModel(explore=0.25))  # fmt: skip
    best = {r["contact_id"]: r for r in run_query(tenant, query.sql, query.params)}
    assigned = {r["contact_id"]: r for r in run_query(
        tenant, "SELECT contact_id, arm, planned_send_at, send_reason, message_id FROM campaign_assignments")}
    assert set(assigned) == set(best) == {p["id"] for p in ppl} and launch.audience_size == len(ppl)
    for cid, row in assigned.items():
        assert (row["planned_send_at"], row["send_reason"]) == (best[cid]["send_at"], best[cid]["reason"]), cid
        assert best[cid]["local_hour"] in ALLOWED
    assert {r["send_reason"] for r in assigned.values()} == {"profile", "fallback", "exploration"}
    scheduled = {r["contact_id"]: r["send_at"] for r in run_query(tenant, "SELECT contact_id, send_at FROM message_schedule")}
    assert scheduled == {cid: r["planned_send_at"] for cid, r in assigned.items() if r["arm"] != "holdout"}
    # ... and when the first planned hour comes, the shards send exactly the members planned for it
    first = min(scheduled.values())
    chunks = [r["chunk"] for r in run_query(tenant, "SELECT DISTINCT chunk FROM message_schedule")]
    run_shard(t, chunks, now=first)
    sent = {r["contact_id"] for r in run_query(tenant, "SELECT contact_id FROM message_sends WHERE status = 'sent'")}
    assert sent == {cid for cid, at in scheduled.items() if at == first} and sent
    # ... and the report counts each arm's members per send-time reason, so exploration checks the model's choice
    report = campaign_report(tenant, "bt")
    by_reason = {(r["send_reason"], r["arm"]): r["assigned"] for r in report.by_send_reason}
    assert by_reason == Counter((r["send_reason"], r["arm"]) for r in assigned.values())
    assert {"exploration", "holdout"} <= {key for pair in by_reason for key in pair}

"""Best send time per contact (shared/campaigns/send_time.py) through the stack's BigQuery: the query's choice for
every contact equals a Python reference of the same model (events read in each contact's timezone with zoneinfo,
across the DST changes of the last weeks), quiet hours are never chosen, contacts without history get the tenant's
best hour, and exploration picks the contacts and slots its seeded hash says."""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import pytest

from shared.campaigns.audience import CompiledQuery
from shared.campaigns.send_time import SendTimeModel, best_time_query
from tests.stack_support import unique

if TYPE_CHECKING:
    from tests.stack_support import StackHandle

pytestmark = pytest.mark.stack

NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
ZONES = ("Europe/Paris", "America/New_York", "Asia/Tokyo", None)
ALLOWED = list(range(8, 22))  # quiet hours 22:00-08:00


def how(at: datetime, tz: str | None) -> int:
    local = at.astimezone(ZoneInfo(tz or "UTC"))
    return (local.isoweekday() % 7) * 24 + local.hour  # BigQuery's DAYOFWEEK: Sunday = 1


def people(rng: random.Random) -> list[dict[str, Any]]:
    """40 contacts, each active mostly at a favourite local hour (0-60 events over 50 days), and 4 without events."""
    out = []
    for i in range(44):
        tz = ZONES[i % len(ZONES)]
        favourite = rng.randrange(6, 23)
        events = []
        for _ in range(0 if i >= 40 else rng.randrange(0, 60)):
            # c39's events are all older than 30 days: dormant, with history (its level's profile is not empty)
            day = NOW.astimezone(ZoneInfo(tz or "UTC")) - timedelta(days=rng.randrange(35, 50) if i == 39 else rng.randrange(1, 50))
            hour = favourite if rng.random() < 0.7 else rng.randrange(24)
            events.append(day.replace(hour=hour, minute=rng.randrange(60)).astimezone(UTC))
        out.append({"id": f"c{i:02d}", "tz": tz, "events": events})
    return out


def reference(ppl: list[dict[str, Any]], activity: dict[str, str], start: datetime, model: SendTimeModel,
              seed: str) -> dict[str, dict[str, Any]]:  # fmt: skip
    since = NOW - timedelta(days=model.lookback_days)
    contact: dict[str, Counter[int]] = {}
    for p in ppl:
        contact[p["id"]] = Counter(how(e, p["tz"]) for e in p["events"] if since <= e < NOW)
    level: dict[str, Counter[int]] = {}
    for p in ppl:
        level.setdefault(activity[p["id"]], Counter()).update(contact[p["id"]])
    tenant: Counter[int] = Counter()
    for c in contact.values():
        tenant.update(c)
    n_t = sum(tenant.values())
    out = {}
    for p in ppl:
        cid, tz = p["id"], p["tz"]
        lv = level[activity[cid]]
        n_l, n_c = sum(lv.values()), sum(contact[cid].values())
        slots = []
        for k in range(24):
            at = start + timedelta(hours=k)
            if at.astimezone(ZoneInfo(tz or "UTC")).hour not in ALLOWED:
                continue
            h = how(at, tz)
            p_t = (tenant[h] + 1) / (n_t + 168)
            p_l = (lv[h] + model.level_strength * p_t) / (n_l + model.level_strength)
            score = p_t if n_c == 0 else (contact[cid][h] + model.contact_strength * p_l) / (n_c + model.contact_strength)
            slot_hash = hashlib.sha256(f"{seed}|slot|{cid}|{k}".encode()).hexdigest()
            slots.append({"k": k, "at": at, "score": score, "p_t": p_t, "hash": slot_hash})
        explore = int(hashlib.sha256(f"{seed}|explore|{cid}".encode()).hexdigest()[:8], 16) % 1_000_000 < round(
            model.explore * 1_000_000)
        best = max(s["score"] for s in slots)
        out[cid] = {"slots": slots, "best": best, "explore": explore, "events": n_c,
                    "explored_at": min(slots, key=lambda s: s["hash"])["at"]}  # fmt: skip
    return out


def test_best_times_equal_a_python_reference_of_the_model(local_stack: StackHandle) -> None:
    from shared.config import tenants
    from shared.warehouse.client import bigquery_client
    from shared.warehouse.query import run_query
    from shared.warehouse.rows import EventRow, Lineage, UserPropertiesRow
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
        rows += [EventRow(p["id"], e, "App Opened", unique("e"), Lineage("native", f"test://{tenant}/e", j, NOW))
                 for j, e in enumerate(p["events"])]  # fmt: skip
    write_rows(bigquery_client(), t, rows, processor="test")
    activity = {r["contact_id"]: r["activity"] for r in run_query(tenant, "SELECT contact_id, activity FROM contact_activity")}
    # WHEN the best time in the next 24 hours (quiet 22-08 local) is computed for all of them, 25% exploring
    model = SendTimeModel(explore=0.25)
    start, seed = NOW + timedelta(hours=1), "spring"
    query = best_time_query(CompiledQuery("SELECT contact_id FROM users_latest", {}), start=start, hours=24,
                            allowed_hours=ALLOWED, now=NOW, seed=seed, model=model)  # fmt: skip
    chosen = {r["contact_id"]: r for r in run_query(tenant, query.sql, query.params)}
    expected = reference(ppl, activity, start, model, seed)
    # THEN every contact has a time; each non-exploring one the slot of highest score by the reference (ties aside),
    # each exploring one the slot its hash picks; the reasons say which, and no time falls in quiet hours
    assert set(chosen) == {p["id"] for p in ppl}
    reasons = Counter(r["reason"] for r in chosen.values())
    for cid, row in chosen.items():
        ref = expected[cid]
        local = row["send_at"].astimezone(ZoneInfo(next(p["tz"] for p in ppl if p["id"] == cid) or "UTC"))
        assert local.hour in ALLOWED and local.hour == row["local_hour"]
        assert row["events"] == ref["events"]
        if ref["explore"]:
            assert row["reason"] == "exploration" and row["send_at"] == ref["explored_at"], cid
            continue
        picked = next(s for s in ref["slots"] if s["at"] == row["send_at"])
        assert picked["score"] == pytest.approx(ref["best"], rel=1e-9), cid
        assert row["score"] == pytest.approx(picked["score"], rel=1e-9)
        assert row["reason"] == ("profile" if ref["events"] >= model.min_events else "fallback")
    assert reasons["exploration"] and reasons["profile"] and reasons["fallback"]
    # ... and a contact without history gets the tenant's best allowed hour, not its (dormant) level's
    assert activity["c39"] == "dormant" and expected["c39"]["events"] > 0
    for cid in ("c40", "c41", "c42", "c43"):
        ref, row = expected[cid], chosen[cid]
        if not ref["explore"]:
            picked = next(s for s in ref["slots"] if s["at"] == row["send_at"])
            assert picked["p_t"] == pytest.approx(max(s["p_t"] for s in ref["slots"]), rel=1e-9), cid

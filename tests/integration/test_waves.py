"""Campaigns sent in waves with adaptive allocation (issue 14), through the stack's BigQuery: a wave's variant
shares move toward the variant that converts more, per activity level, the holdout keeps its share in every stratum,
the shares are stored per wave, and the report's lifts are weighted by them."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from tests.integration.test_reports import _rendered
from tests.stack_support import unique

if TYPE_CHECKING:
    from pathlib import Path

    from tests.stack_support import StackHandle

pytestmark = pytest.mark.stack

T0 = (datetime.now(UTC) - timedelta(days=4)).replace(minute=0, second=0, microsecond=0)
CONTACTS = 2_400
TRUE_RATES = {"holdout": 0.05, "a": 0.05, "b": 0.40}  # what a member of each arm converts at, within the window


def converts(contact_id: str, arm: str) -> bool:
    """A member's simulated response: a seeded hash under its arm's true rate (known truth)."""
    u = int(hashlib.sha256(f"sim|{contact_id}".encode()).hexdigest()[:8], 16) / 16**8
    return u < TRUE_RATES[arm]


def test_an_adaptive_campaign_moves_its_shares_toward_the_better_variant_and_keeps_the_holdout(
    local_stack: StackHandle, tmp_path: Path
) -> None:
    from shared.campaigns.audience import Audience
    from shared.campaigns.campaign import parse_campaign
    from shared.campaigns.launch import launch_campaign
    from shared.campaigns.results import campaign_report
    from shared.campaigns.store import due_campaigns, save_audience, save_campaign
    from shared.campaigns.waves import due_waves, launch_wave
    from shared.config import tenants
    from shared.warehouse.client import bigquery_client
    from shared.warehouse.query import run_query
    from shared.warehouse.rows import EventRow, Lineage, UserPropertiesRow
    from shared.warehouse.writer import write_rows

    # GIVEN 2,400 contacts in two countries, and a campaign to all of them in 3 waves a day apart, two variants and
    # a 10% holdout, allocated adaptively on Order Completed within 48 hours
    tenant = local_stack.add_tenant()
    t = tenants().get(tenant)
    people = [UserPropertiesRow(f"c{i:04d}", T0 - timedelta(days=60), unique("u"), Lineage("native", "test://u", i, T0),
                                country="DE" if i % 3 else "FR") for i in range(CONTACTS)]  # fmt: skip
    write_rows(bigquery_client(), t, people, processor="test")
    save_audience(tenant, Audience(name="all"))
    save_campaign(tenant, parse_campaign({
        "name": "learn", "audience": "all", "holdout": 0.1, "allocation": "adaptive",
        "waves": {"count": 3, "every_hours": 24},
        "variants": [{"id": "a", "title": "A", "body": "a"}, {"id": "b", "title": "B", "body": "b"}],
        "conversion": {"events": ["Order Completed"], "within_hours": 48},
    }))  # fmt: skip

    def members(wave: int) -> list[dict[str, Any]]:
        return run_query(tenant, "SELECT contact_id, arm, stratum, activity FROM campaign_assignments WHERE wave = @w",
                         {"w": wave})  # fmt: skip

    def respond(wave: int, at: datetime) -> None:
        """Each member of the wave converts (or not) an hour after its send, as its arm's true rate says."""
        rows = [EventRow(m["contact_id"], at + timedelta(hours=1), "Order Completed", unique("o"),
                         Lineage("native", f"test://o{wave}", n, at))
                for n, m in enumerate(members(wave)) if converts(m["contact_id"], m["arm"])]  # fmt: skip
        write_rows(bigquery_client(), t, rows, processor="test")

    # WHEN wave 0 is launched and its members respond
    first = launch_campaign(tenant, "learn", now=T0)
    wave0 = members(0)
    assert first.new and 700 < len(wave0) < 900  # a third of the audience, by the wave hash
    respond(0, T0)
    # THEN the next wave is not due before its day, and is due then
    _, in_flight = due_campaigns(tenant, T0 + timedelta(hours=23))
    assert due_waves(in_flight, T0 + timedelta(hours=23)) == []
    t1 = T0 + timedelta(hours=24)
    _, in_flight = due_campaigns(tenant, t1)
    [due] = due_waves(in_flight, t1)
    assert due.wave == 1
    # WHEN it is launched
    assert launch_wave(tenant, due, t1).new
    # THEN its shares for the level of these (dormant) contacts moved toward b, with a above its 5% floor of the
    # variants' part, and the holdout at exactly its 10%
    report = campaign_report(tenant, "learn")
    history = {w["wave"]: w["shares"] for w in report.waves}
    assert history[0]["*"] == pytest.approx({"holdout": 0.1, "a": 0.45, "b": 0.45})
    dormant = history[1]["dormant"]
    assert dormant["holdout"] == pytest.approx(0.1)
    assert dormant["b"] > 0.8 and dormant["a"] >= 0.05 * 0.9 - 1e-6
    # ... and the wave's members were assigned by those shares: the holdout within one contact of 10% in every
    # stratum, b far more often than a
    wave1 = members(1)
    assert not {m["contact_id"] for m in wave1} & {m["contact_id"] for m in wave0}
    by_stratum: dict[str, Counter[str]] = {}
    for m in wave1:
        by_stratum.setdefault(m["stratum"], Counter())[m["arm"]] += 1
    for stratum, counts in by_stratum.items():
        assert abs(counts["holdout"] - 0.1 * sum(counts.values())) <= 1, stratum
    arms = Counter(m["arm"] for m in wave1)
    assert arms["b"] > 5 * arms["a"] > 0
    # WHEN wave 1 responds and the last wave is launched a day later
    respond(1, t1)
    t2 = t1 + timedelta(hours=24)
    _, in_flight = due_campaigns(tenant, t2)
    [due] = due_waves(in_flight, t2)
    assert due.wave == 2 and launch_wave(tenant, due, t2).new
    respond(2, t2)
    # THEN no wave is left, every contact was in exactly one wave, and the report weights the lifts by the shares:
    # b's weighted lift is near its true 35 points, a's near 0, each within its interval
    _, in_flight = due_campaigns(tenant, t2 + timedelta(days=5))
    assert due_waves(in_flight, t2 + timedelta(days=5)) == []
    everyone = run_query(tenant, "SELECT contact_id, COUNT(*) AS n FROM campaign_assignments GROUP BY contact_id")
    assert len(everyone) == CONTACTS and {r["n"] for r in everyone} == {1}
    report = campaign_report(tenant, "learn")
    assert [w["wave"] for w in report.waves] == [0, 1, 2] and report.allocation == "adaptive"
    # (and the assignment check expects each wave's recorded shares: no stratum of any wave is off, no mismatch)
    assert report.strata_off == 0 and not report.srm_alarm
    lifts = {row["arm"]: row for row in report.weighted_lifts}
    assert lifts["b"]["lift_ci_low"] < 0.35 < lifts["b"]["lift_ci_high"]
    assert lifts["a"]["lift_ci_low"] < 0.0 < lifts["a"]["lift_ci_high"]
    assert "inverse-propensity" in report.weighted_method
    # AND `landline report campaign` shows the history and the weighted lifts, as JSON and as a page that renders
    page = tmp_path / "learn.html"
    out = json.loads(local_stack.cli("report", "campaign", "learn", "--tenant", tenant, "--json", "--html", str(page)).stdout)
    assert [w["shares"] for w in out["waves"]] == [w["shares"] for w in report.waves]
    assert [r["arm"] for r in out["weighted_lifts"]] == ["a", "b"]
    text = local_stack.cli("report", "campaign", "learn", "--tenant", tenant).stdout
    assert "waves (adaptive allocation)" in text and "dormant" in text and "inverse-propensity" in text
    dom = _rendered(page)
    assert "Shares per wave and activity level" in dom and "Lift weighted by the recorded shares" in dom
    assert dom.count('class="main-svg"') >= 8

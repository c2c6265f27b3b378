"""Campaign reports through the stack: contacts arrive as a Segment file, a campaign is launched and sent by the
deployed send_due, then opens and conversions arrive as a later Segment file at known times around each member's
start. `landline report campaign --json` must give exactly those counts per arm and per activity level, and its lift,
interval, p-value and sample-ratio check must match statsmodels and scipy."""

from __future__ import annotations

import gzip
import json
import random
import subprocess
from collections import Counter
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any

import pytest
from scipy import stats as scipy_stats
from statsmodels.stats import proportion

from tests.integration.push_support import identify, push_tenant
from tests.stack_support import unique

if TYPE_CHECKING:
    from pathlib import Path

    from tests.stack_support import StackHandle

pytestmark = pytest.mark.stack

NOW = datetime.now(UTC)
WINDOW_H = 0.5  # conversions count within 30 minutes of the start: every timestamp below stays within an hour of now
SHARES = {"holdout": 0.3, "a": 0.35, "b": 0.35}


def _level(views: int) -> str:
    """The default activity thresholds (shared/config.py ActivityLevels): 0 dormant, 1-2 low, 3-9 medium, 10+."""
    return "high" if views >= 10 else "medium" if views >= 3 else "low" if views >= 1 else "dormant"


def _people(run: str, rng: random.Random) -> list[dict[str, Any]]:
    return [{"id": f"{run}-{i:03d}", "token": f"{run}-tok-{i}" if rng.random() < 0.9 else None,
             "country": rng.choice(["DE", "FR"]), "views": rng.choice([0, 1, 2, 4, 6, 12])}
            for i in range(160)]  # fmt: skip


def _segment_file(tmp: Path, lines: list[dict[str, Any]], folder_ms: str) -> Path:
    folder = tmp / unique("tree") / "segment-logs" / "app" / folder_ms
    folder.mkdir(parents=True)
    (folder / "events.gz").write_bytes(gzip.compress(b"".join(json.dumps(x).encode() + b"\n" for x in lines)))
    return folder.parents[2]


def _track(contact: str, event: str, at: datetime, **properties: Any) -> dict[str, Any]:
    return {"type": "track", "userId": contact, "event": event, "messageId": unique("ev"), "properties": properties,
            "timestamp": at.isoformat()}  # fmt: skip


@pytest.fixture(scope="module")
def reported(local_stack: StackHandle, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A launched and sent campaign with known opens and conversions, and its report (JSON and page)."""
    rng = random.Random(12)
    tmp = tmp_path_factory.mktemp("report")
    people = _people(unique("rp"), rng)
    lines = []
    for p in people:
        lines.append(identify(p["id"], p["token"], "Europe/Paris", country=p["country"]))
        lines += [_track(p["id"], "Product Viewed", NOW - timedelta(days=1 + n % 20), sku="a") for n in range(p["views"])]
    tenant = push_tenant(local_stack, tmp, lines)
    for kind, definition in (("audience", {"name": "everyone"}), ("campaign", {
        "name": "sale", "audience": "everyone", "holdout": SHARES["holdout"],
        "variants": [{"id": "a", "title": "Sale", "body": "A"}, {"id": "b", "title": "Sale", "body": "B"}],
        "conversion": {"events": ["Order Completed"], "within_hours": WINDOW_H},
    })):  # fmt: skip
        path = tmp / f"{kind}.json"
        path.write_text(json.dumps(definition))
        local_stack.cli(kind, "create", str(path), "--tenant", tenant)
    local_stack.cli("campaign", "launch", "sale", "--tenant", tenant)
    local_stack.cli("tick", "--tenant", tenant)
    local_stack.wait()

    members = {r["contact_id"]: r for r in local_stack.query(tenant, """
        SELECT a.contact_id, a.arm, a.activity, a.message_id, a.planned_send_at, s.at AS sent_at
        FROM campaign_assignments AS a LEFT JOIN message_sends AS s ON s.message_id = a.message_id AND s.status = 'sent'
        WHERE a.campaign = 'sale'""")}  # fmt: skip
    # Each member: converts inside the window, or only just outside it (before its start, after the window), or with
    # another event, or not at all; some sent members report the push received, some tapped.
    later = []
    truth: dict[str, dict[str, bool]] = {}
    for p in people:
        m = members[p["id"]]
        start = datetime.fromisoformat(m["sent_at"] or m["planned_send_at"])
        fate = rng.choices(["inside", "before", "after", "other", "none"], weights=[3, 1, 1, 1, 4])[0]
        if m["arm"] == "a" and fate == "none" and rng.random() < 0.5:
            fate = "inside"  # variant a has a real effect
        at = {"inside": start + timedelta(minutes=12), "before": start - timedelta(minutes=3),
              "after": start + timedelta(minutes=WINDOW_H * 60 + 4), "other": start + timedelta(minutes=5)}  # fmt: skip
        if fate in at:
            later.append(_track(p["id"], "Checkout Started" if fate == "other" else "Order Completed", at[fate]))
        opened = received = False
        if m["sent_at"]:
            received = rng.random() < 0.7
            opened = received and rng.random() < 0.4
            if received:
                later.append(_track(p["id"], "Push Notification Tapped" if opened else "Push Notification Received",
                                    start + timedelta(minutes=1), landline_message_id=m["message_id"]))  # fmt: skip
        truth[p["id"]] = {"converted": fate == "inside", "received": received, "opened": opened}
    local_stack.drop(tenant, _segment_file(tmp, later, "1714525200000"))
    local_stack.wait()
    page = tmp / "sale.html"
    report = json.loads(local_stack.cli("report", "campaign", "sale", "--tenant", tenant, "--json",
                                        "--html", str(page)).stdout)  # fmt: skip
    return {"tenant": tenant, "people": people, "members": members, "truth": truth, "report": report, "page": page}


def test_the_report_counts_exactly_the_known_opens_and_conversions_per_arm_and_activity_level(
    reported: dict[str, Any],
) -> None:
    people, members, truth, report = reported["people"], reported["members"], reported["truth"], reported["report"]
    # THEN per arm: members, sends, receipts, taps and conversions are exactly those dropped
    expected: dict[str, Counter[str]] = {}
    for p in people:
        m, t = members[p["id"]], truth[p["id"]]
        c = expected.setdefault(m["arm"], Counter())
        c["assigned"] += 1
        c["sent"] += m["sent_at"] is not None
        c["received"] += t["received"]
        c["opened"] += t["opened"]
        c["converted"] += t["converted"]
    got = {a["arm"]: {k: a[k] for k in ("assigned", "sent", "received", "opened", "converted")} for a in report["arms"]}
    assert got == {arm: {k: c[k] for k in ("assigned", "sent", "received", "opened", "converted")}
                   for arm, c in expected.items()}  # fmt: skip
    assert [a["arm"] for a in report["arms"]] == ["holdout", "a", "b"]
    assert got["holdout"]["sent"] == 0 and expected["a"]["converted"] > expected["holdout"]["converted"]
    # AND by activity level (the level each member had at launch), also exactly
    by_level: Counter[tuple[str, str, str]] = Counter()
    for p in people:
        m = members[p["id"]]
        assert m["activity"] == _level(p["views"])
        by_level[(m["activity"], m["arm"], "assigned")] += 1
        by_level[(m["activity"], m["arm"], "converted")] += truth[p["id"]]["converted"]
    rows = {(r["activity"], r["arm"]): r for r in report["by_activity"]}
    assert {key: (r["assigned"], r["converted"]) for key, r in rows.items()} == {
        (level, arm): (by_level[(level, arm, "assigned")], by_level[(level, arm, "converted")])
        for (level, arm, kind) in by_level if kind == "assigned"
    }


def _reference(variant: dict[str, Any], holdout: dict[str, Any]) -> dict[str, float]:
    """statsmodels' Wald interval and test for a difference of two independent proportions (unpooled variance), and
    the delta-method interval of the ratio with scipy's normal quantile."""
    x1, n1, x0, n0 = variant["converted"], variant["assigned"], holdout["converted"], holdout["assigned"]
    low, high = proportion.confint_proportions_2indep(x1, n1, x0, n0, method="wald", compare="diff", alpha=0.05)
    _, p_value = proportion.test_proportions_2indep(x1, n1, x0, n0, method="wald", compare="diff", alternative="two-sided")
    p1, p0 = x1 / n1, x0 / n0
    se_rel = ((p1 * (1 - p1) / n1) / p0**2 + p1**2 * (p0 * (1 - p0) / n0) / p0**4) ** 0.5
    z = scipy_stats.norm.ppf(0.975)
    return {"lift_abs": p1 - p0, "lift_ci_low": low, "lift_ci_high": high, "p_value": p_value,
            "lift_rel": p1 / p0 - 1, "lift_rel_ci_low": p1 / p0 - 1 - z * se_rel,
            "lift_rel_ci_high": p1 / p0 - 1 + z * se_rel}  # fmt: skip


def test_lift_interval_p_value_and_sample_ratio_match_statsmodels_and_scipy(reported: dict[str, Any]) -> None:
    report = reported["report"]
    arms = {a["arm"]: a for a in report["arms"]}
    # THEN each variant's lift over the holdout, overall and in every activity level with a non-degenerate holdout,
    # agrees with the reference to 1e-9
    for variant in ("a", "b"):
        reference = _reference(arms[variant], arms["holdout"])
        for key, value in reference.items():
            assert arms[variant][key] == pytest.approx(value, abs=1e-9), (variant, key)
    levels = {(r["activity"], r["arm"]): r for r in report["by_activity"]}
    checked = 0
    for (level, arm), row in levels.items():
        holdout = levels.get((level, "holdout"))
        if arm == "holdout" or holdout is None or not 0 < holdout["converted"] < holdout["assigned"]:
            continue
        if not 0 < row["converted"] < row["assigned"]:
            continue
        for key in ("lift_abs", "lift_ci_low", "lift_ci_high", "p_value"):
            assert row[key] == pytest.approx(_reference(row, holdout)[key], abs=1e-9), (level, arm, key)
        checked += 1
    assert checked >= 2
    # AND the sample-ratio check is Pearson's chi-square against the configured shares (scipy), with no alarm here
    observed = [arms[arm]["assigned"] for arm in SHARES]
    total = sum(observed)
    chi2, p = scipy_stats.chisquare(observed, [SHARES[arm] * total for arm in SHARES])
    assert report["srm_p_value"] == pytest.approx(p, abs=1e-9) and report["srm_chi2"] == pytest.approx(chi2, abs=1e-9)
    assert report["srm_alarm"] is False


def _external_resources(text: str) -> list[str]:
    """Every src/href of the page's tags (script contents are not parsed as tags, so plotly.js's strings do not count)."""

    found: list[str] = []

    class Links(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            found.extend(v for k, v in attrs if k in ("src", "href") and v and not v.startswith("#"))

    Links().feed(text)
    return found


def _rendered(page: Path) -> str:
    """The page's DOM after headless Chromium ran its scripts, with every network request refused."""
    return subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--proxy-server=127.0.0.1:9", "--virtual-time-budget=15000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip


def test_the_html_report_renders_its_charts_in_headless_chromium(reported: dict[str, Any], tmp_path: Path) -> None:
    page = reported["page"]
    # GIVEN the page `--html` wrote: self-contained, so nothing is fetched from the network
    assert _external_resources(page.read_text()) == []
    # WHEN headless Chromium opens it with no network and runs its scripts
    dom = _rendered(page)
    # THEN plotly drew all three charts: an SVG per chart, bars for rates and lifts, a line per arm over time
    assert dom.count('class="main-svg"') >= 6  # plotly draws two SVG layers per chart
    assert dom.count('class="point"') >= 3 + 2  # a bar per arm, at least one lift bar per variant
    assert dom.count('class="js-line"') >= 2
    assert "Conversion rate per arm" in dom and "Lift over the holdout by activity level" in dom


def test_the_pipeline_report_counts_sends_per_hour_and_renders_its_charts(
    local_stack: StackHandle, reported: dict[str, Any], tmp_path: Path
) -> None:
    tenant = reported["tenant"]
    # WHEN the pipeline report of the campaign's tenant is asked for, as JSON and as a page
    page = tmp_path / "pipeline.html"
    out = json.loads(local_stack.cli("report", "pipeline", "--tenant", tenant, "--json", "--html", str(page)).stdout)
    # THEN its numbers are `stats`' numbers, and the sends per hour add up to the sends by status
    stats = local_stack.stats(tenant)
    assert {k: out[k] for k in ("files", "lines", "unaccounted", "rejected", "sends")} == {
        k: stats[k] for k in ("files", "lines", "unaccounted", "rejected", "sends")
    }
    per_status: Counter[str] = Counter()
    for row in out["sends_by_hour"]:
        per_status[row["status"]] += row["n"]
    assert per_status["sent"] == stats["sends"]["sent"] == sum(1 for m in reported["members"].values() if m["sent_at"])
    # AND the page opens offline in headless Chromium with its four charts drawn
    assert _external_resources(page.read_text()) == []
    dom = _rendered(page)
    assert dom.count('class="main-svg"') >= 8 and dom.count('class="point"') >= 4
    assert "Where every line went" in dom and "Sends by status per hour" in dom

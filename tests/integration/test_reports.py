"""Campaign reports through the stack, on a campaign whose truth is known: `landline simulate` drops synthetic
contacts as a Segment export, launches a campaign sent by the deployed send_due, and drops receipts, taps and
conversions (and events that must not count) as a later export. `landline report campaign --json` must give exactly
the simulator's counts per arm and per activity level, and its lift, interval, p-value and sample-ratio check must
match statsmodels and scipy."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any

import pytest
from scipy import stats as scipy_stats
from statsmodels.stats import proportion

from infra.local.simulate import ARMS, COUNTED, HOLDOUT
from tests.stack_support import unique

if TYPE_CHECKING:
    from pathlib import Path

    from tests.stack_support import StackHandle

pytestmark = pytest.mark.stack

SHARES = {arm: HOLDOUT if arm == "holdout" else (1 - HOLDOUT) / (len(ARMS) - 1) for arm in ARMS}


@pytest.fixture(scope="module")
def reported(local_stack: StackHandle, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A simulated campaign (known truth) and its report, asked for separately as JSON and as a page."""
    tenant = unique("sim")
    run = local_stack.cli("simulate", "--tenant", tenant, "--contacts", "600", "--seed", "12", "--json", timeout=1200)
    simulation = json.loads(run.stdout)
    page = tmp_path_factory.mktemp("report") / "campaign.html"
    report = json.loads(local_stack.cli("report", "campaign", simulation["campaign"], "--tenant", tenant, "--json",
                                        "--html", str(page)).stdout)  # fmt: skip
    return {"tenant": tenant, "simulation": simulation, "stderr": run.stderr, "report": report, "page": page}


def test_the_report_counts_exactly_the_known_opens_and_conversions_per_arm_and_activity_level(
    reported: dict[str, Any],
) -> None:
    simulation, report = reported["simulation"], reported["report"]
    # THEN per arm: members, sends, receipts, taps and conversions are exactly those the simulator dropped
    truth = {a["arm"]: a["truth"] for a in simulation["arms"]}
    got = {a["arm"]: {k: a[k] for k in COUNTED} for a in report["arms"]}
    assert got == truth
    assert [a["arm"] for a in report["arms"]] == list(ARMS)
    assert got["holdout"]["sent"] == 0 and all(got[arm]["sent"] > 0 and got[arm]["opened"] > 0 for arm in ARMS[1:])
    # AND by activity level (the level each member had at launch, which the simulator checked against the level
    # it generated), also exactly
    assert {(r["activity"], r["arm"]): {"assigned": r["assigned"], "converted": r["converted"]}
            for r in report["by_activity"]} == {(r["activity"], r["arm"]): r["truth"]
                                                for r in simulation["by_activity"]}  # fmt: skip
    assert len(report["by_activity"]) == 4 * len(ARMS)
    # AND the simulator itself says so, printed the seed that reproduces it, and scored every variant's interval
    assert simulation["exact"] is True and simulation["mismatches"] == []
    assert "seed 12" in reported["stderr"]
    assert simulation["intervals"] >= 3 and 0 <= simulation["covered"] <= simulation["intervals"]


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
    sent = sum(a["truth"]["sent"] for a in reported["simulation"]["arms"])
    assert per_status["sent"] == stats["sends"]["sent"] == sent
    # AND the page opens offline in headless Chromium with its four charts drawn
    assert _external_resources(page.read_text()) == []
    dom = _rendered(page)
    assert dom.count('class="main-svg"') >= 8 and dom.count('class="point"') >= 4
    assert "Where every line went" in dom and "Sends by status per hour" in dom

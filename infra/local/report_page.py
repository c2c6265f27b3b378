"""``landline report ... --html FILE``: one self-contained page per report (plotly.js inlined, so it opens with no
network), charts drawn by plotly from numbers the report's SQL computed; nothing here computes a statistic."""

from __future__ import annotations

import html
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.campaigns.results import CampaignReport

HOLDOUT_COLOR = "#7f7f7f"


def _figure_html(figure: Any, first: bool) -> str:
    """A figure's div; the first one carries plotly.js itself (inlined), the others reuse it."""
    return str(figure.to_html(full_html=False, include_plotlyjs=first,
                              config={"displaylogo": False, "responsive": True}))  # fmt: skip


def _page(title: str, summary: str, sections: list[tuple[str, str]]) -> str:
    body = "\n".join(f"<section><h2>{html.escape(name)}</h2>{content}</section>" for name, content in sections)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin: 1rem 0; }} td, th {{ padding: .3rem .7rem; border-bottom: 1px solid #ddd;
text-align: right; }} th:first-child, td:first-child {{ text-align: left; }} .alarm {{ color: #b00; font-weight: bold; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
{summary}
{body}
</body></html>
"""


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(row.get(key)))}</td>" for key, _ in columns) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def campaign_page(report: CampaignReport, tenant: str) -> str:
    """The campaign report as a page: conversion rate per arm with its interval, lift by activity level, cumulative
    conversions since send, and the numbers as tables."""
    import plotly.colors
    import plotly.graph_objects as go

    arms = report.arms
    palette = iter(plotly.colors.qualitative.Plotly)
    color = {a.arm: HOLDOUT_COLOR if a.arm == "holdout" else next(palette) for a in arms}  # one colour per arm
    rates = go.Figure(go.Bar(
        x=[a.arm for a in arms], y=[a.conversion_rate for a in arms], marker_color=[color[a.arm] for a in arms],
        error_y={"type": "data", "symmetric": False,
                 "array": [a.rate_ci_high - a.conversion_rate for a in arms],
                 "arrayminus": [a.conversion_rate - a.rate_ci_low for a in arms]},
    ))  # fmt: skip
    rates.update_layout(title="Conversion rate per arm (95% interval)", yaxis_tickformat=".1%", height=380)

    lift = go.Figure()
    variants = [a.arm for a in arms if a.arm != "holdout"]
    for arm in variants:
        rows = [r for r in report.by_activity if r["arm"] == arm and r["lift_abs"] is not None]
        lift.add_trace(go.Bar(
            name=arm, marker_color=color[arm], x=[r["activity"] for r in rows], y=[r["lift_abs"] for r in rows],
            error_y={"type": "data", "symmetric": False,
                     "array": [r["lift_ci_high"] - r["lift_abs"] for r in rows],
                     "arrayminus": [r["lift_abs"] - r["lift_ci_low"] for r in rows]},
        ))  # fmt: skip
    lift.update_layout(title="Lift over the holdout by activity level (95% interval)", barmode="group",
                       yaxis_tickformat=".1%", height=380)  # fmt: skip

    timeline = go.Figure()
    for arm in [a.arm for a in arms]:
        points = [p for p in report.timeline if p["arm"] == arm]
        timeline.add_trace(go.Scatter(
            name=arm, x=[0.0, *(p["hours"] for p in points), report.window_hours],
            y=[0.0, *(p["cumulative_rate"] for p in points), points[-1]["cumulative_rate"] if points else 0.0],
            mode="lines", line={"shape": "hv", "color": color[arm]},
        ))  # fmt: skip
    timeline.update_layout(title="Cumulative conversions since send", xaxis_title="hours since send",
                           yaxis_tickformat=".1%", height=380)  # fmt: skip

    check = f"p = {_cell(report.srm_p_value)}, strata off their shares: {report.strata_off}"
    alarm = (f'<p class="alarm">Sample-ratio mismatch ({check}). The assignment does not match the configured '
             "shares; do not trust the lifts until it is explained.</p>"
             if report.srm_alarm else f"<p>Sample-ratio check: {check} (no mismatch).</p>")  # fmt: skip
    summary = (
        f"<p>Tenant {html.escape(tenant)}. Conversion: {html.escape(', '.join(report.conversion_events) or 'none')} "
        f"within {report.window_hours:g} h of the send (holdout: of its planned send).</p>{alarm}"
        f"<p><small>Method: {html.escape(report.method)}.</small></p>"
    )
    columns = [("arm", "arm"), ("assigned", "assigned"), ("sent", "sent"), ("skipped", "skipped"),
               ("received", "received"), ("opened", "opened"), ("converted", "converted"),
               ("conversion_rate", "rate"), ("lift_abs", "lift"), ("lift_ci_low", "95% low"),
               ("lift_ci_high", "95% high"), ("p_value", "p"), ("lift_rel", "relative lift")]  # fmt: skip
    activity_columns = [("activity", "activity"), *columns]
    sections = [
        ("Arms", _table([asdict(a) for a in arms], columns)),
        ("Conversion rate", _figure_html(rates, first=True)),
        ("Lift by activity level", _figure_html(lift, first=False)),
        ("Over time", _figure_html(timeline, first=False)),
        ("By activity level", _table(report.by_activity, activity_columns)),
    ]
    if report.waves:
        sections += _wave_sections(report, color)
    return _page(f"Campaign {report.campaign}", summary, sections)


def _wave_sections(report: CampaignReport, color: dict[str, str]) -> list[tuple[str, str]]:
    """A campaign in waves: each wave's shares per activity level (stacked), and the weighted lifts."""
    import plotly.graph_objects as go

    bars = [(f"wave {w['wave']} · {level}", arms) for w in report.waves for level, arms in sorted(w["shares"].items())]
    history = go.Figure()
    for arm in color:
        history.add_trace(go.Bar(name=arm, marker_color=color[arm], x=[label for label, _ in bars],
                                 y=[arms.get(arm, 0.0) for _, arms in bars]))  # fmt: skip
    history.update_layout(title=f"Shares per wave and activity level ({report.allocation} allocation)",
                          barmode="stack", yaxis_tickformat=".0%", height=380)  # fmt: skip
    columns = [("arm", "arm"), ("members", "members"), ("lift_abs", "lift"), ("lift_ci_low", "95% low"),
               ("lift_ci_high", "95% high")]  # fmt: skip
    note = f"<p><small>Method: {html.escape(report.weighted_method)}.</small></p>"
    return [
        ("Allocation by wave", _figure_html(history, first=False)),
        ("Lift weighted by the recorded shares", _table(report.weighted_lifts, columns) + note),
    ]


def pipeline_page(stats: dict[str, Any], sends: list[dict[str, Any]]) -> str:
    """The pipeline as a page: files by status, where every line went, rejects by reason, sends by status per
    hour (``stats``: `landline stats --json`; ``sends``: ``infra.local.stats.sends_by_hour``)."""
    import plotly.graph_objects as go

    def bars(title: str, values: dict[str, int]) -> Any:
        figure = go.Figure(go.Bar(x=list(values), y=list(values.values())))
        figure.update_layout(title=title, height=340)
        return figure

    lines = {"events": stats["events"], "user properties": stats["user_property_rows"],
             "rejected": stats["rejected_lines"], "duplicates": stats["duplicates"],
             "unaccounted": stats["unaccounted"]}  # fmt: skip
    over_time = go.Figure()
    for status in sorted({r["status"] for r in sends}):
        points = [r for r in sends if r["status"] == status]
        over_time.add_trace(go.Bar(name=status, x=[r["hour"] for r in points], y=[r["n"] for r in points]))
    over_time.update_layout(title="Sends by status per hour", barmode="stack", height=340)
    summary = (f"<p>Tenant {html.escape(stats['tenant'])}: {stats['lines']:,} lines, {stats['unaccounted']:,} "
               f"unaccounted; {stats['scheduled']:,} messages scheduled, {stats['unsent']:,} without an outcome.</p>")  # fmt: skip
    sections = [
        ("Files", _figure_html(bars("Files by status", stats["files"]), first=True)),
        ("Lines", _figure_html(bars("Where every line went", lines), first=False)),
        ("Rejects", _figure_html(bars("Rejected lines by reason", stats["rejected"]), first=False)),
        ("Sends", _figure_html(over_time, first=False)),
    ]
    return _page(f"Pipeline of {stats['tenant']}", summary, sections)

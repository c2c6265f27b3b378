"""Campaigns sent in waves: launching the next wave when its time has come, with its shares per activity level.

A campaign with ``waves: {count: N, every_hours: H}`` launches wave 0 like any campaign (shared/campaigns/launch.py
gives every member a wave by a seeded hash and assigns only wave 0's); the send tick launches wave ``k`` once
``k * H`` hours have passed since wave 0, under the definition wave 0 launched (a later edit of the campaign does
not change a campaign in flight). The audience is evaluated again for each wave, so a contact who joined it since
is included in its own wave.

Shares: ``allocation: even`` keeps the campaign's own shares in every wave. ``allocation: adaptive`` gives each
activity level the shares Thompson sampling draws from the level's members and conversions over every earlier
wave (shared/campaigns/allocation.py: the holdout keeps its share, an even split until every variant has the
minimum sample, a floor per variant), seeded by campaign and wave so a relaunch draws the same. Conversions are
counted as the report counts them, so a wave launched before the last one's window closed learns from what has
converted so far. The shares each wave used are stored on its launch marker (the allocation history the report
shows), and the report's lifts for such campaigns are weighted by them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.campaigns.allocation import ArmCount, next_wave_shares
from shared.campaigns.campaign import ADAPTIVE, HOLDOUT, Campaign, millionths
from shared.campaigns.launch import CHUNK_SIZE, DEFAULT_LEVEL, Launch, Wave, expand
from shared.campaigns.results import WaveCell, report_queries, wave_history
from shared.campaigns.store import InFlight, get_audience
from shared.warehouse.query import run_query

LEVELS = ("dormant", "low", "medium", "high")  # the contact_activity view's levels


@dataclass(frozen=True)
class WaveDue:
    campaign: Campaign  # the definition wave 0 launched
    wave: int
    due_at: datetime


def due_waves(in_flight: list[InFlight], now: datetime) -> list[WaveDue]:
    """The next wave of every campaign in flight whose time has come (``store.due_campaigns`` reads them)."""
    due = []
    for flight in in_flight:
        waves = flight.campaign.waves
        if waves is None or flight.last_wave + 1 >= waves.count:
            continue
        wave = flight.last_wave + 1
        due_at = flight.first_at + timedelta(hours=waves.every_hours * wave)
        if due_at <= now:
            due.append(WaveDue(flight.campaign, wave, due_at))
    return due


def wave_shares(tenant_name: str, campaign: Campaign, wave: int) -> dict[str, list[tuple[str, int]]] | None:
    """Each activity level's shares for ``wave`` (None: the campaign's own, for even allocation)."""
    if campaign.allocation != ADAPTIVE:
        return None
    cells = [WaveCell(**row) for row in run_query(tenant_name, *report_queries(campaign)["wave_cells"])]
    arms = [v.id for v in campaign.variants]
    shares: dict[str, list[tuple[str, int]]] = {}
    for level in (*LEVELS, DEFAULT_LEVEL):
        counts = {arm: ArmCount(arm, 0, 0) for arm in arms}
        for c in cells:
            if c.wave < wave and c.activity == level and c.arm in counts:
                counts[c.arm] = ArmCount(c.arm, counts[c.arm].assigned + c.assigned, counts[c.arm].converted + c.converted)
        drawn = next_wave_shares({level: list(counts.values())}, holdout=campaign.holdout,
                                 seed=f"{campaign.name}|wave{wave}")[level]  # fmt: skip
        ordered = [(HOLDOUT, drawn[HOLDOUT])] if HOLDOUT in drawn else []
        shares[level] = millionths(ordered + [(arm, drawn[arm]) for arm in arms])
    return shares


def launch_wave(tenant_name: str, due: WaveDue, now: datetime, *, chunk_size: int = CHUNK_SIZE) -> Launch:
    """Launch one due wave (idempotent: the first committed launch of a wave counts)."""
    audience = get_audience(tenant_name, due.campaign.audience).audience
    wave = Wave(due.wave, wave_shares(tenant_name, due.campaign, due.wave))
    return expand(tenant_name, due.campaign, audience, now, wave=wave, chunk_size=chunk_size)


__all__ = ["WaveDue", "due_waves", "launch_wave", "wave_history", "wave_shares"]

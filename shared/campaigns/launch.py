"""Launching a campaign: every audience member gets one arm, and every member of a variant one scheduled message,
set-based inside BigQuery (two ``INSERT ... SELECT`` jobs and a commit marker), never a loop over contacts.

**Balanced assignment.** Members are grouped into strata by the campaign's ``stratify_by`` properties. Within a
stratum of ``n`` members they are ordered by a seeded hash, ``SHA256(campaign | contact_id)``, and member ``r``
(0-based) sits at ``x = (r + u) / n`` on [0, 1), where ``u`` in [0, 1) comes from a hash of campaign and stratum
(systematic sampling). Arms own consecutive slices of [0, 1) the size of their shares, so each arm's count in every
stratum is within one contact of ``share * n`` and equals it on average (a fixed ``u`` would always give the extra
contact of a small stratum to the first arm). All of it is integer arithmetic on shares in millionths
(``SHARE_SCALE``). The same campaign and contact always give the same arm. SHA256 rather than FARM_FINGERPRINT:
both are BigQuery functions, but the local emulator runs SHA256 natively (DuckDB) and FARM_FINGERPRINT as a Python
function per row, which made a 16,000-member launch 10x slower than its audience query (bench/campaign).

**Message ids** are the same hash of campaign and contact, so a message keeps its id across launches and reports.

**Atomic and idempotent.** A launch writes its assignments and schedule rows under a fresh ``launch_id``, then a
``campaign_launches`` row: the commit marker. Readers (the ``campaign_assignments`` view, the send tick, status) only
see a launch once its marker is there, and only the first committed launch of a campaign; so a launch that fails
half-way leaves nothing anyone reads, and launching again (or twice at once) changes nothing.

**Waves.** A campaign with ``waves: {count: N}`` gives each member a wave by another seeded hash of (campaign,
contact) and launches wave 0 first; each later wave is a launch of its own (its marker carries ``wave``), made by
shared/campaigns/waves.py with shares per activity level. Within a stratum (which then includes the level) the arms'
slices are that level's shares, so every arm stays within one contact of its share in every stratum of every wave.

**Send times** are planned per timezone of the audience (a few hundred at most), in Python with ``zoneinfo`` (the
same fallback to UTC as the send tick's for a missing or unknown zone), and reach the query as parameters.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.campaigns.audience import (
    PROPERTIES_PREFIX,
    WHERE_COLUMNS,
    Audience,
    CompiledQuery,
    _json_path,
    compile_audience,
)
from shared.campaigns.campaign import (
    ACTIVITY,
    HOLDOUT,
    SHARE_SCALE,
    Campaign,
    SendAt,
    SendBest,
    SendNow,
    planned_send_at,
    window_start,
)
from shared.campaigns.send_time import SendTimeModel, allowed_hours, best_time_query
from shared.campaigns.store import get_audience, launch_inputs
from shared.config import tenants
from shared.errors import SetupError
from shared.push.schedule import CAMPAIGN_MESSAGE_PREFIX as MESSAGE_ID_PREFIX
from shared.timezones import zone
from shared.warehouse.client import bigquery_client
from shared.warehouse.query import run_dml, run_query
from shared.warehouse.rows import CampaignLaunchRow
from shared.warehouse.writer import write_rows

PROCESSOR = "campaigns.launch"
CHUNK_SIZE = 500  # messages claimed together by the send tick (one claim object per chunk: shared/push/shards.py)
_OFFSET_SCALE = 1000  # resolution of a stratum's offset u


@dataclass(frozen=True)
class Launch:
    campaign: str
    launch_id: str
    launched_at: datetime
    audience_size: int
    scheduled: int
    new: bool  # False: the campaign was already launched, nothing changed


def launched(tenant_name: str, campaign: str) -> Launch | None:
    """The launch that counts (the first committed one; for a campaign sent in waves, its first wave's), if any."""
    return _committed(tenant_name, campaign, 0)


def _launch_of(campaign: str, row: dict[str, Any]) -> Launch:
    return Launch(campaign, row["launch_id"], row["launched_at"], row["audience_size"] or 0, row["scheduled"] or 0, False)


def launch_campaign(
    tenant_name: str, name: str, *, now: datetime | None = None, chunk_size: int = CHUNK_SIZE
) -> Launch:
    """Launch the newest version of campaign ``name`` (a no-op returning the existing launch if it was launched)."""
    inputs = launch_inputs(tenant_name, name)
    if inputs.launch is not None:
        return _launch_of(name, inputs.launch)
    campaign = inputs.campaign.campaign
    audience = (inputs.audience or get_audience(tenant_name, campaign.audience)).audience  # None: raises, naming them
    wave = Wave(0, None) if campaign.waves is not None else None
    return expand(tenant_name, campaign, audience, now or datetime.now(UTC), wave=wave, chunk_size=chunk_size)


@dataclass(frozen=True)
class Wave:
    """Which wave a launch is, and each activity level's arm shares in it (None: the campaign's own shares)."""

    number: int
    shares: dict[str, list[tuple[str, int]]] | None  # level -> [(arm, millionths)], holdout first


def expand(
    tenant_name: str, campaign: Campaign, audience: Audience, now: datetime, *, wave: Wave | None,
    chunk_size: int = CHUNK_SIZE,
) -> Launch:  # fmt: skip
    """One launch: the members' assignments and the variants' schedule rows, then the commit marker."""
    members = compile_audience(audience, now, extra=("timezone", "properties"))
    if wave is not None and campaign.waves is not None:
        members = _in_wave(campaign, members, wave.number, campaign.waves.count)
    if isinstance(campaign.send, SendBest):
        members = _with_best_times(tenant_name, campaign, campaign.send, members, now)
    launch_id = uuid.uuid4().hex[:16]
    plan = _send_plan(tenant_name, campaign, members, now)
    assign = assignment_sql(campaign, members, plan, launch_id, now, wave=wave)
    audience_size = run_dml(tenant_name, assign.sql, assign.params)
    schedule = schedule_sql(campaign, launch_id, now, chunk_size)
    scheduled = run_dml(tenant_name, schedule.sql, schedule.params)
    shares = None
    if wave is not None:
        levels = wave.shares or {DEFAULT_LEVEL: campaign.arm_shares()}
        shares = {level: {arm: n / SHARE_SCALE for arm, n in arms} for level, arms in levels.items()}
    marker = CampaignLaunchRow(campaign=campaign.name, launch_id=launch_id, launched_at=now,
                               definition=campaign.to_json(), audience_size=audience_size, scheduled=scheduled,
                               wave=None if wave is None else wave.number, shares=shares)  # fmt: skip
    result = write_rows(bigquery_client(), tenants().get(tenant_name), [marker], processor=PROCESSOR)
    if result.invalid:
        raise SetupError("the campaign_launches table refused the launch marker", "upgrade it with `landline tenant add`")
    winner = _committed(tenant_name, campaign.name, 0 if wave is None else wave.number)
    if winner is None or winner.launch_id != launch_id:  # a concurrent launch committed first: its rows count
        return winner or Launch(campaign.name, launch_id, now, audience_size, scheduled, False)
    return Launch(campaign.name, launch_id, now, audience_size, scheduled, True)


DEFAULT_LEVEL = "*"  # a wave's shares for members of a level it names no shares for (the campaign's own shares)


def _committed(tenant_name: str, campaign: str, wave: int) -> Launch | None:
    rows = run_query(
        tenant_name,
        "SELECT launch_id, launched_at, audience_size, scheduled FROM campaign_launched "
        "WHERE campaign = @c AND IFNULL(wave, 0) = @wave",
        {"c": campaign, "wave": wave},
    )
    return _launch_of(campaign, rows[0]) if rows else None


def _in_wave(campaign: Campaign, members: CompiledQuery, wave: int, count: int) -> CompiledQuery:
    # a seeded hash of (campaign, contact) other than the arm's ('|wave|'), so a contact's wave says nothing of its arm
    hashed = "CAST(CONCAT('0x', SUBSTR(TO_HEX(SHA256(CONCAT(@wave_campaign, '|wave|', contact_id))), 1, 8)) AS INT64)"
    sql = f"SELECT * FROM ({members.sql}) WHERE MOD({hashed}, @wave_count) = @wave_number"
    return CompiledQuery(sql, {**members.params, "wave_campaign": campaign.name, "wave_count": count,
                               "wave_number": wave})  # fmt: skip


def _with_best_times(
    tenant_name: str, campaign: Campaign, send: SendBest, members: CompiledQuery, now: datetime
) -> CompiledQuery:
    """The members with their best send time and its reason (``best_send_at``, ``send_reason``), from one query over
    the tenant's events (shared/campaigns/send_time.py), seeded by the campaign so a re-launch chooses the same."""
    policy = tenants().get(tenant_name).push_policy
    allowed, fallback = allowed_hours(policy), send.best_time.fallback_hour
    if fallback is not None and fallback not in allowed:
        raise SetupError(f"best_time.fallback_hour {fallback} falls in the tenant's quiet hours",
                         f"choose one of the local hours {allowed}, or leave it out for the tenant's best hour")  # fmt: skip
    best = best_time_query(members, start=window_start(now), hours=send.best_time.within_hours,
                           allowed_hours=allowed, now=now, seed=campaign.name,
                           model=SendTimeModel(explore=send.best_time.explore, fallback_hour=fallback),
                           conversions=campaign.conversion.events if campaign.conversion else ())  # fmt: skip
    sql = (f"SELECT m.*, b.send_at AS best_send_at, b.reason AS send_reason FROM ({members.sql}) AS m "
           f"LEFT JOIN ({best.sql}) AS b ON b.contact_id = m.contact_id")  # fmt: skip
    return CompiledQuery(sql, {**members.params, **best.params})


# -- planning ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _SendPlan:
    """Planned send time and expiry, as SQL over the member's ``timezone`` (parameters only)."""

    send_at: str
    expires_at: str
    params: dict[str, Any]
    reason: str = "CAST(NULL AS STRING)"  # why this time (best_time campaigns only)


def _send_plan(tenant_name: str, campaign: Campaign, members: CompiledQuery, now: datetime) -> _SendPlan:
    expiry = timedelta(hours=campaign.expires_after_hours)
    if isinstance(campaign.send, SendBest):  # a member with no allowed hour in the window: its start (the tick defers)
        fallback = planned_send_at(campaign.send, zone(None), now)
        return _SendPlan("IFNULL(best_send_at, @best_fallback)",
                         "TIMESTAMP_ADD(IFNULL(best_send_at, @best_fallback), INTERVAL @best_expiry_s SECOND)",
                         {"best_fallback": fallback, "best_expiry_s": int(expiry.total_seconds())},
                         "IFNULL(send_reason, 'fallback')")  # fmt: skip
    if isinstance(campaign.send, SendAt | SendNow):
        at = planned_send_at(campaign.send, zone(None), now)
        return _SendPlan("@send_at", "@expires_at", {"send_at": at, "expires_at": at + expiry})
    zones = run_query(tenant_name, f"SELECT DISTINCT timezone FROM ({members.sql})", members.params)
    params: dict[str, Any] = {}
    send_cases: list[str] = []
    expiry_cases: list[str] = []
    for i, row in enumerate(z for z in zones if z["timezone"] is not None):
        at = planned_send_at(campaign.send, zone(row["timezone"]), now)
        params |= {f"tz{i}": row["timezone"], f"at{i}": at, f"ex{i}": at + expiry}
        send_cases.append(f"WHEN @tz{i} THEN @at{i}")
        expiry_cases.append(f"WHEN @tz{i} THEN @ex{i}")
    at = planned_send_at(campaign.send, zone(None), now)
    params |= {"at_utc": at, "ex_utc": at + expiry}
    if not send_cases:
        return _SendPlan("@at_utc", "@ex_utc", params)
    return _SendPlan(
        f"CASE timezone {' '.join(send_cases)} ELSE @at_utc END",
        f"CASE timezone {' '.join(expiry_cases)} ELSE @ex_utc END",
        params,
    )


def _stratum_sql(campaign: Campaign, params: dict[str, Any]) -> str:
    """``key=value|key=value`` of the member's stratify_by properties (labels and paths are parameters)."""
    parts: list[str] = []
    for i, key in enumerate(campaign.stratify_by):
        params[f"sl{i}"] = f"{key}=" if i == 0 else f"|{key}="
        if key == ACTIVITY:
            value = "activity"
        elif key.startswith(PROPERTIES_PREFIX):
            params[f"sp{i}"] = _json_path(key.removeprefix(PROPERTIES_PREFIX))
            value = f"JSON_VALUE(properties, @sp{i})"
        else:
            value = _member_column(key)
        parts.append(f"@sl{i}, IFNULL(CAST({value} AS STRING), '')")
    return f"CONCAT({', '.join(parts)})" if parts else "''"


def _member_column(key: str) -> str:
    for column in WHERE_COLUMNS:  # the schema's spelling, never the definition's text
        if column == key:
            return column
    raise SetupError(f"stratify_by: unknown property {key!r}", "use activity, a users_latest column or properties.<key>")


def _arm_case(shares: list[tuple[str, int]], params: dict[str, Any], prefix: str) -> str:
    """The arm of member ``r`` of its stratum's ``n`` at offset ``u``: arms own consecutive slices of [0, 1)."""
    cases: list[str] = []
    cumulative = 0
    for i, (arm, share) in enumerate(shares):
        cumulative += share
        params[f"{prefix}arm{i}"] = arm
        if i < len(shares) - 1:
            params[f"{prefix}cum{i}"] = cumulative
            cases.append(f"WHEN (r * {_OFFSET_SCALE} + u) * {SHARE_SCALE} < @{prefix}cum{i} * n * {_OFFSET_SCALE} "
                         f"THEN @{prefix}arm{i}")  # fmt: skip
    last = len(shares) - 1
    return f"CASE {' '.join(cases)} ELSE @{prefix}arm{last} END" if cases else f"@{prefix}arm{last}"


def assignment_sql(
    campaign: Campaign, members: CompiledQuery, plan: _SendPlan, launch_id: str, now: datetime, *,
    wave: Wave | None = None,
) -> CompiledQuery:  # fmt: skip
    """The INSERT ... SELECT of every member's assignment (module docstring, "Balanced assignment")."""
    params: dict[str, Any] = {**members.params, **plan.params, "campaign": campaign.name, "launch_id": launch_id,
                              "now": now, "holdout": HOLDOUT, "prefix": MESSAGE_ID_PREFIX}  # fmt: skip
    stratum = _stratum_sql(campaign, params)
    arm_sql = _arm_case(campaign.arm_shares(), params, "")
    if wave is not None and wave.shares:
        levels = [level for level in sorted(wave.shares) if level != DEFAULT_LEVEL]
        whens = []
        for j, level in enumerate(levels):
            params[f"lv{j}"] = level
            whens.append(f"WHEN @lv{j} THEN {_arm_case(wave.shares[level], params, f'l{j}')}")
        default = wave.shares.get(DEFAULT_LEVEL)
        otherwise = _arm_case(default, params, "ld") if default else arm_sql
        arm_sql = f"CASE activity {' '.join(whens)} ELSE {otherwise} END" if whens else otherwise
    wave_sql = "CAST(NULL AS INT64)"
    if wave is not None:
        params["wave"] = wave.number
        wave_sql = "@wave"
    sql = f"""
INSERT INTO campaign_assignments_all
  (campaign, launch_id, contact_id, arm, stratum, assigned_at, message_id, planned_send_at, activity, send_reason,
   wave)
SELECT @campaign, @launch_id, contact_id, {arm_sql}, stratum, @now, CONCAT(@prefix, SUBSTR(h, 1, 40)), planned_send_at,
       activity, send_reason, {wave_sql}
FROM (
  SELECT contact_id, stratum, planned_send_at, h, activity, send_reason,
         ROW_NUMBER() OVER (PARTITION BY stratum ORDER BY h, contact_id) - 1 AS r,
         COUNT(*) OVER (PARTITION BY stratum) AS n,
         MOD(CAST(CONCAT('0x', SUBSTR(TO_HEX(SHA256(CONCAT(@campaign, '|stratum|', stratum))), 1, 6)) AS INT64),
             {_OFFSET_SCALE}) AS u
  FROM (
    SELECT contact_id, {stratum} AS stratum, {plan.send_at} AS planned_send_at, activity,
           {plan.reason} AS send_reason, TO_HEX(SHA256(CONCAT(@campaign, '|', contact_id))) AS h
    FROM ({members.sql})
  )
)
"""
    return CompiledQuery(sql, params)


def schedule_sql(campaign: Campaign, launch_id: str, now: datetime, chunk_size: int = CHUNK_SIZE) -> CompiledQuery:
    """The INSERT ... SELECT of one message per variant member (the holdout gets none), from this launch's
    assignments; texts are the variant's templates (rendered per contact by the send tick). Messages planned for the
    same instant are cut into chunks of ``chunk_size`` (the claim unit of the send tick). DIV's first argument keeps
    its parentheses: the emulator's translation (sqlglot) writes ``DIV(a - 1, b)`` as ``a - 1 // b``."""
    params: dict[str, Any] = {"launch_id": launch_id, "now": now, "holdout": HOLDOUT, "chunk_size": chunk_size,
                              "expiry_s": int(campaign.expires_after_hours * 3600)}  # fmt: skip
    columns: dict[str, list[str]] = {"title": [], "body": [], "deep_link": [], "data": []}
    for i, variant in enumerate(campaign.variants):
        params[f"v{i}"] = variant.id
        params |= {f"title{i}": variant.title, f"body{i}": variant.body, f"data{i}": _json_text(variant.data)}
        columns["title"].append(f"WHEN @v{i} THEN @title{i}")
        columns["body"].append(f"WHEN @v{i} THEN @body{i}")
        columns["data"].append(f"WHEN @v{i} THEN PARSE_JSON(@data{i})")
        if variant.deep_link:
            params[f"link{i}"] = variant.deep_link
            columns["deep_link"].append(f"WHEN @v{i} THEN @link{i}")
    case = {name: f"CASE arm {' '.join(whens)} END" if whens else "CAST(NULL AS STRING)"
            for name, whens in columns.items()}  # fmt: skip
    sql = f"""
INSERT INTO message_schedule
  (message_id, contact_id, channel, title, body, data, deep_link, send_at, expires_at, priority, created_at,
   requested_at, request_line, campaign, launch_id, chunk)
SELECT message_id, contact_id, 'push', {case["title"]}, {case["body"]}, {case["data"]}, {case["deep_link"]},
       planned_send_at, TIMESTAMP_ADD(planned_send_at, INTERVAL @expiry_s SECOND), 'high', @now, @now, 0,
       campaign, launch_id,
       CONCAT(launch_id, '.', CAST(UNIX_SECONDS(planned_send_at) AS STRING), '.',
              CAST(DIV((ROW_NUMBER() OVER (PARTITION BY planned_send_at ORDER BY message_id) - 1), @chunk_size)
                   AS STRING))
FROM campaign_assignments_all
WHERE launch_id = @launch_id AND arm != @holdout
"""
    return CompiledQuery(sql, params)


def _json_text(value: dict[str, str]) -> str:
    return json.dumps(value, sort_keys=True)

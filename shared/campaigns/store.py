"""Audience and campaign definitions in the tenant's dataset (tables ``audiences`` and ``campaigns``, newest row per
name wins), and an audience's preview.

Stored in BigQuery rather than in a local file so that deployed functions (the send tick launching a scheduled
campaign) read the same definitions as the CLI.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.campaigns.audience import Audience, compile_audience
from shared.campaigns.campaign import Campaign
from shared.config import tenants
from shared.errors import SetupError
from shared.warehouse.client import bigquery_client
from shared.warehouse.query import run_query
from shared.warehouse.rows import AudienceRow, CampaignRow
from shared.warehouse.writer import write_rows

PROCESSOR = "campaigns"
PREVIEW_SAMPLE = 5  # contact ids a preview shows (ids only: never an address or a token)
# The newest version of each definition (``{table}`` and ``{where}``: fixed texts of this module, values as parameters).
_SELECT = """
    SELECT * FROM (
        SELECT * FROM {table}
        WHERE TRUE
        QUALIFY ROW_NUMBER() OVER (PARTITION BY name ORDER BY created_at DESC) = 1
    )
    WHERE {where}
    ORDER BY name
"""


@dataclass(frozen=True)
class StoredAudience:
    audience: Audience
    created_at: datetime


def save_audience(tenant_name: str, audience: Audience, now: datetime | None = None) -> StoredAudience:
    """Store a new version of ``audience`` (it replaces any older one of the same name)."""
    created_at = now or datetime.now(UTC)
    _store(tenant_name, AudienceRow(name=audience.name, definition=audience.to_json(), created_at=created_at))
    return StoredAudience(audience, created_at)


def _store(tenant_name: str, row: AudienceRow | CampaignRow) -> None:
    result = write_rows(bigquery_client(), tenants().get(tenant_name), [row], processor=PROCESSOR)
    if result.invalid:
        raise SetupError(f"the {row.table} table refused the definition", "upgrade it with `landline tenant add`")


def list_audiences(tenant_name: str) -> list[StoredAudience]:
    """Every audience of the tenant (its newest version), by name."""
    return _stored(run_query(tenant_name, _SELECT.format(table="audiences", where="TRUE")))


def get_audience(tenant_name: str, name: str) -> StoredAudience:
    """The newest version of audience ``name``; an unknown name is a SetupError naming the known ones."""
    found = _stored(run_query(tenant_name, _SELECT.format(table="audiences", where="name = @name"), {"name": name}))
    if found:
        return found[0]
    known = ", ".join(s.audience.name for s in list_audiences(tenant_name)) or "none yet"
    raise SetupError(
        f"tenant {tenant_name} has no audience {name!r} (it has: {known})",
        f"create it with `landline audience create --tenant {tenant_name} FILE`",
    )


def _stored(rows: list[dict[str, Any]]) -> list[StoredAudience]:
    return [StoredAudience(Audience.from_json(r["definition"]), r["created_at"]) for r in rows]


@dataclass(frozen=True)
class StoredCampaign:
    campaign: Campaign
    created_at: datetime


def save_campaign(tenant_name: str, campaign: Campaign, now: datetime | None = None) -> StoredCampaign:
    """Store a new version of ``campaign``; its audience must exist (SetupError naming the known ones)."""
    get_audience(tenant_name, campaign.audience)
    created_at = now or datetime.now(UTC)
    _store(tenant_name, CampaignRow(name=campaign.name, definition=campaign.to_json(), created_at=created_at,
                                    launch_at=campaign.launch_at))  # fmt: skip
    return StoredCampaign(campaign, created_at)


def list_campaigns(tenant_name: str) -> list[StoredCampaign]:
    return _campaigns(run_query(tenant_name, _SELECT.format(table="campaigns", where="TRUE")))


def get_campaign(tenant_name: str, name: str) -> StoredCampaign:
    """The newest version of campaign ``name``; an unknown name is a SetupError naming the known ones."""
    found = _campaigns(run_query(tenant_name, _SELECT.format(table="campaigns", where="name = @name"), {"name": name}))
    if found:
        return found[0]
    known = ", ".join(s.campaign.name for s in list_campaigns(tenant_name)) or "none yet"
    raise SetupError(
        f"tenant {tenant_name} has no campaign {name!r} (it has: {known})",
        f"create it with `landline campaign create --tenant {tenant_name} FILE`",
    )


# What a launch reads, in one query (each query is a job, and a job's latency, not its work, dominates a launch): the
# newest version of the campaign, the newest version of every audience any version of it names (the caller picks the
# newest campaign's), and its committed launch if there is one.
_LAUNCH_INPUTS = """
SELECT 'campaign' AS kind, definition, created_at, CAST(NULL AS STRING) AS launch_id,
       CAST(NULL AS TIMESTAMP) AS launched_at, CAST(NULL AS INT64) AS audience_size, CAST(NULL AS INT64) AS scheduled
FROM ({campaigns})
UNION ALL
SELECT 'audience', definition, created_at, NULL, NULL, NULL, NULL
FROM ({audiences})
UNION ALL
SELECT 'launch', NULL, NULL, launch_id, launched_at, audience_size, scheduled
FROM campaign_launched WHERE campaign = @name AND IFNULL(wave, 0) = 0
"""


@dataclass(frozen=True)
class LaunchInputs:
    campaign: StoredCampaign
    audience: StoredAudience | None  # None: the campaign's audience does not exist
    launch: dict[str, Any] | None  # the committed launch (launch_id, launched_at, audience_size, scheduled), if any


def launch_inputs(tenant_name: str, name: str) -> LaunchInputs:
    """The campaign (SetupError naming the known ones if there is none), its audience, and its launch if launched."""
    audiences_named = "name IN (SELECT JSON_VALUE(definition, '$.audience') FROM campaigns WHERE name = @name)"
    sql = _LAUNCH_INPUTS.format(campaigns=_SELECT.format(table="campaigns", where="name = @name"),
                                audiences=_SELECT.format(table="audiences", where=audiences_named))  # fmt: skip
    rows = run_query(tenant_name, sql, {"name": name})
    campaigns = _campaigns([r for r in rows if r["kind"] == "campaign"])
    if not campaigns:
        get_campaign(tenant_name, name)  # raises, naming the known campaigns
    campaign = campaigns[0]
    audiences = {a.audience.name: a for a in _stored([r for r in rows if r["kind"] == "audience"])}
    launch = next((r for r in rows if r["kind"] == "launch"), None)
    return LaunchInputs(campaign, audiences.get(campaign.campaign.audience), launch)


@dataclass(frozen=True)
class InFlight:
    """A campaign sent in waves whose first wave is launched: the definition it launched, when, and its last wave."""

    campaign: Campaign
    first_at: datetime
    last_wave: int


# One query (a job per tenant and tick): the campaigns due to launch, and the campaigns in waves in flight.
_DUE = """
SELECT 'launch' AS kind, definition, created_at, CAST(NULL AS TIMESTAMP) AS first_at, CAST(NULL AS INT64) AS last_wave
FROM ({due})
UNION ALL
SELECT 'waves', ANY_VALUE(IF(IFNULL(wave, 0) = 0, definition, NULL)), NULL,
       MIN(IF(IFNULL(wave, 0) = 0, launched_at, NULL)), MAX(IFNULL(wave, 0))
FROM campaign_launched
WHERE campaign IN (SELECT campaign FROM campaign_launched WHERE wave = 0)
GROUP BY campaign
"""


def due_campaigns(tenant_name: str, now: datetime) -> tuple[list[StoredCampaign], list[InFlight]]:
    """Campaigns whose ``launch_at`` has come and that are not launched yet (the send tick launches them), and
    the campaigns sent in waves that are in flight (shared/campaigns/waves.py decides which wave is due)."""
    where = "launch_at <= @now AND name NOT IN (SELECT campaign FROM campaign_launched)"
    rows = run_query(tenant_name, _DUE.format(due=_SELECT.format(table="campaigns", where=where)), {"now": now})
    in_flight = [InFlight(Campaign.from_json(r["definition"]), r["first_at"], r["last_wave"])
                 for r in rows if r["kind"] == "waves"]  # fmt: skip
    return _campaigns([r for r in rows if r["kind"] == "launch"]), in_flight


def _campaigns(rows: list[dict[str, Any]]) -> list[StoredCampaign]:
    return [StoredCampaign(Campaign.from_json(r["definition"]), r["created_at"]) for r in rows]


@dataclass
class Preview:
    """What an audience holds right now: its size, counts by country and by activity level, a few contact ids."""

    name: str
    size: int = 0
    by_country: dict[str, int] = field(default_factory=dict)
    by_activity: dict[str, int] = field(default_factory=dict)
    sample: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size, "by_country": self.by_country,
                "by_activity": self.by_activity, "sample_contact_ids": self.sample}  # fmt: skip


def preview_audience(tenant_name: str, audience: Audience, now: datetime | None = None) -> Preview:
    """Two queries over the compiled audience: counts per (country, level), and the first contact ids."""
    compiled = compile_audience(audience, now)
    counts = run_query(
        tenant_name,
        f"SELECT country, activity, COUNT(*) AS n FROM ({compiled.sql}) GROUP BY country, activity",
        compiled.params,
    )
    sample = run_query(
        tenant_name, f"SELECT contact_id FROM ({compiled.sql}) ORDER BY contact_id LIMIT {PREVIEW_SAMPLE}", compiled.params
    )
    by_country: Counter[str] = Counter()
    by_activity: Counter[str] = Counter()
    for row in counts:
        by_country[row["country"] or "unknown"] += row["n"]
        by_activity[row["activity"]] += row["n"]
    return Preview(
        name=audience.name,
        size=sum(by_country.values()),
        by_country=dict(sorted(by_country.items(), key=lambda kv: (-kv[1], kv[0]))),
        by_activity=dict(sorted(by_activity.items(), key=lambda kv: (-kv[1], kv[0]))),
        sample=[str(r["contact_id"]) for r in sample],
    )

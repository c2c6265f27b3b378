"""`landline demo`: files in, rows out, pushes sent, on the local stack, with a readable summary."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import httpx

from infra.local.stack_config import REPO
from infra.local.stack_ops import drop_files, publish_tick, wait_idle
from infra.local.stats import format_stats, tenant_stats
from shared.warehouse.query import run_query

if TYPE_CHECKING:
    from collections.abc import Callable

    from infra.local.stack_config import StackConfig

SAMPLES = REPO / "samples" / "segment"
CAMPAIGN_SAMPLES = REPO / "samples" / "campaigns"
TENANT = "default"


def run_demo(cfg: StackConfig, echo: Callable[[str], None]) -> dict[str, Any]:
    echo(f"dropping the sample Segment export from {SAMPLES.relative_to(REPO)} into tenant '{TENANT}' ...")
    for line in drop_files(cfg, [SAMPLES], TENANT, ""):
        echo(f"  uploaded {line}")
    wait_idle(cfg.url("router"), timeout=300)
    pushes = _send_pushes(cfg, echo)
    campaign = _run_campaign(cfg, echo)
    counts = tenant_stats(TENANT)
    echo("")
    echo(format_stats(TENANT, counts))
    echo("")
    echo("top events:")
    for row in run_query(
        TENANT, "SELECT event_name, COUNT(*) AS n FROM events_deduped GROUP BY event_name ORDER BY n DESC, event_name"
    ):
        echo(f"  {row['event_name']:<20} {row['n']}")
    if counts["rejected"]:
        echo("rejected lines (replay with `landline replay` after a fix):")
        for row in run_query(
            TENANT, "SELECT reason_code, origin, line_number, message FROM rejected_deduped ORDER BY origin, line_number"
        ):
            file = str(row["origin"] or "").rsplit("/", 1)[-1].split("#")[0]
            echo(f"  {file} line {row['line_number']}: {row['reason_code']} - {row['message']}")
    echo(f"pushes accepted by the fake FCM: {pushes}")
    for row in run_query(
        TENANT, "SELECT status, reason, COUNT(DISTINCT message_id) AS n FROM message_sends GROUP BY status, reason ORDER BY status"
    ):
        echo(f"  {row['status']:<9} {row['reason'] or '':<24} {row['n']}")
    echo("")
    _echo_campaign(campaign, echo)
    echo(f"\nexplore: landline query \"SELECT * FROM users_latest\" --home {cfg.home}")
    return counts


def _send_pushes(cfg: StackConfig, echo: Callable[[str], None]) -> dict[str, object]:
    """Schedule a push for every contact the export identified (and one for a contact without a token), tick, wait."""
    from shared.config import tenants
    from shared.push.schedule import SendRequest, schedule

    contacts = [r["contact_id"] for r in run_query(TENANT, "SELECT contact_id FROM users_latest ORDER BY contact_id")]
    requests = [
        SendRequest(
            message_id=f"demo-{contact}-{uuid.uuid4().hex[:8]}",
            contact_id=contact,
            title="Your cart misses you",
            body="Come back and finish your order.",
            data={"campaign": "demo"},
        )
        for contact in [*contacts, "user-without-token"]
    ]
    schedule(tenants().get(TENANT), requests)
    echo(f"scheduled {len(requests)} push messages; ticking the scheduler ...")
    publish_tick(cfg.url("router"), TENANT)
    wait_idle(cfg.url("router"), timeout=300)
    stats = httpx.get(f"{cfg.url('fakes')}/_fake/stats", timeout=5).json()
    return {"fcm_accepted": stats.get("fcm", {}).get("accepted", stats.get("fcm"))}


def _run_campaign(cfg: StackConfig, echo: Callable[[str], None]) -> str:
    """The sample audience and campaign (samples/campaigns/), launched under a fresh name and sent by one tick."""
    from shared.campaigns.audience import load_audience
    from shared.campaigns.campaign import load_campaign
    from shared.campaigns.launch import launch_campaign
    from shared.campaigns.store import save_audience, save_campaign

    audience = load_audience(CAMPAIGN_SAMPLES / "with-token.yaml")
    save_audience(TENANT, audience)
    sample = load_campaign(CAMPAIGN_SAMPLES / "spring.yaml")
    campaign = sample.model_copy(update={"name": f"{sample.name}-{uuid.uuid4().hex[:6]}"})
    save_campaign(TENANT, campaign)
    launch = launch_campaign(TENANT, campaign.name)
    echo(f"campaign {campaign.name} (audience {audience.name}, variants a and b, 20% holdout): "
         f"{launch.audience_size} members assigned, {launch.scheduled} messages scheduled; ticking ...")  # fmt: skip
    publish_tick(cfg.url("router"), TENANT)
    wait_idle(cfg.url("router"), timeout=300)
    return campaign.name


def _echo_campaign(name: str, echo: Callable[[str], None]) -> None:
    from shared.campaigns.status import campaign_status

    status = campaign_status(TENANT, name)
    echo(f"campaign {name}: `landline campaign status {name}` (add --json for the numbers)")
    strata = run_query(
        TENANT,
        "SELECT stratum, arm, COUNT(*) AS n FROM campaign_assignments WHERE campaign = @c GROUP BY stratum, arm "
        "ORDER BY stratum, arm",
        {"c": name},
    )
    echo(f"  assigned by arm: {', '.join(f'{arm} {n}' for arm, n in status.assigned.items())}")
    by_stratum: dict[str, list[str]] = {}
    for row in strata:
        by_stratum.setdefault(row["stratum"], []).append(f"{row['arm']} {row['n']}")
    for stratum, arms in by_stratum.items():
        echo(f"    {stratum:<32} {', '.join(arms)}")
    holdout_sends = run_query(
        TENANT,
        "SELECT COUNT(*) AS n FROM message_sends AS s JOIN campaign_assignments AS a USING (message_id) "
        "WHERE a.campaign = @c AND a.arm = 'holdout'",
        {"c": name},
    )[0]["n"]
    echo(f"  sends: {', '.join(f'{k} {v}' for k, v in sorted(status.sends.items())) or 'none yet'}"
         f"; skipped: {', '.join(f'{k} {v}' for k, v in sorted(status.skipped.items())) or 'none'}"
         f"; outcomes recorded for holdout members: {holdout_sends}")  # fmt: skip

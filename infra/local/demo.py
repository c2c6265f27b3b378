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
TENANT = "default"


def run_demo(cfg: StackConfig, echo: Callable[[str], None]) -> dict[str, Any]:
    echo(f"dropping the sample Segment export from {SAMPLES.relative_to(REPO)} into tenant '{TENANT}' ...")
    for line in drop_files(cfg, [SAMPLES], TENANT, ""):
        echo(f"  uploaded {line}")
    wait_idle(cfg.url("router"), timeout=300)
    pushes = _send_pushes(cfg, echo)
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

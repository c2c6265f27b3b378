"""`landline demo`: files in, rows out, pushes sent, on the local stack, with a readable summary."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

from infra.local.stack import REPO
from shared.stats import format_stats, run_query, tenant_stats

if TYPE_CHECKING:
    from collections.abc import Callable

    from infra.local.stack import StackConfig

SAMPLES = REPO / "samples" / "segment"
TENANT = "default"


def run_demo(cfg: StackConfig, echo: Callable[[str], None]) -> dict[str, object]:
    from shared.cli import drop_files, wait_idle

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
        for row in run_query(TENANT, "SELECT reason_code, line_number, message FROM rejected_deduped ORDER BY line_number"):
            echo(f"  line {row['line_number']}: {row['reason_code']} - {row['message']}")
    if pushes is not None:
        echo(f"pushes accepted by the fake providers: {pushes}")
    echo(f"\nexplore: landline query \"SELECT * FROM users_latest\" --home {cfg.home}")
    return counts


def _send_pushes(cfg: StackConfig, echo: Callable[[str], None]) -> dict[str, object] | None:
    try:
        from shared.push.schedule import schedule_demo_messages
    except ImportError:
        echo("(push sending is not part of this build yet)")
        return None
    from shared.cli import publish_tick, wait_idle

    scheduled = schedule_demo_messages(TENANT)
    echo(f"scheduled {scheduled} push messages; ticking the scheduler ...")
    publish_tick()
    wait_idle(cfg.url("router"), timeout=300)
    return dict(httpx.get(f"{cfg.url('fakes')}/_fake/stats", timeout=5).json())

"""Where a campaign stands: who got which arm, what was scheduled, and every member's latest outcome. Counted in
BigQuery over the committed launch only (``campaign_assignments``), never row by row in Python."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.campaigns.campaign import HOLDOUT
from shared.campaigns.launch import launched
from shared.warehouse.query import run_query

# A message's latest outcome among its ``message_sends`` rows ``x``: a final one (sent, failed, skipped) outranks a
# deferral; receipts are bookkeeping about a send, not an outcome of their own (status and the report use both).
LATEST_OUTCOME = """x.status != 'receipt'
  QUALIFY ROW_NUMBER() OVER (
    PARTITION BY x.message_id ORDER BY IF(x.status = 'deferred', 0, 1) DESC, x.at DESC, x.status) = 1"""

# Each variant member's latest outcome. A member without any row is still waiting.
_OUTCOMES_SQL = """
WITH members AS (
  SELECT message_id FROM campaign_assignments WHERE campaign = @campaign AND arm != @holdout
), latest AS (
  SELECT x.message_id, x.status, x.reason
  FROM message_sends AS x JOIN members AS m ON m.message_id = x.message_id
  WHERE """ + LATEST_OUTCOME + """
)
SELECT status, IFNULL(reason, '') AS reason, COUNT(*) AS n FROM latest GROUP BY status, reason
"""


@dataclass
class CampaignStatus:
    campaign: str
    launched: bool = False
    launch_id: str | None = None
    launched_at: datetime | None = None
    audience_size: int = 0
    assigned: dict[str, int] = field(default_factory=dict)
    scheduled: int = 0
    sends: dict[str, int] = field(default_factory=dict)  # latest status per message -> count
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    failed: dict[str, int] = field(default_factory=dict)  # reason -> count
    waiting: int = 0  # scheduled, no outcome yet

    def as_dict(self) -> dict[str, Any]:
        return {
            "campaign": self.campaign, "launched": self.launched, "launch_id": self.launch_id,
            "launched_at": self.launched_at.isoformat() if self.launched_at else None,
            "audience_size": self.audience_size, "assigned": self.assigned, "scheduled": self.scheduled,
            "sends": self.sends, "skipped": self.skipped, "failed": self.failed, "waiting": self.waiting,
        }  # fmt: skip


def campaign_status(tenant_name: str, name: str) -> CampaignStatus:
    status = CampaignStatus(name)
    launch = launched(tenant_name, name)
    if launch is None:
        return status
    status.launched, status.launch_id, status.launched_at = True, launch.launch_id, launch.launched_at
    status.audience_size, status.scheduled = launch.audience_size, launch.scheduled
    params = {"campaign": name, "holdout": HOLDOUT}
    assigned = run_query(
        tenant_name, "SELECT arm, COUNT(*) AS n FROM campaign_assignments WHERE campaign = @campaign GROUP BY arm",
        params,
    )
    status.assigned = dict(sorted((r["arm"], r["n"]) for r in assigned))
    sends: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    for row in run_query(tenant_name, _OUTCOMES_SQL, params):
        sends[row["status"]] += row["n"]
        if row["status"] == "skipped":
            skipped[row["reason"] or "-"] += row["n"]
        elif row["status"] == "failed":
            failed[row["reason"] or "-"] += row["n"]
    status.sends, status.skipped, status.failed = dict(sends), dict(skipped), dict(failed)
    status.waiting = max(status.scheduled - sum(sends.values()), 0)
    return status

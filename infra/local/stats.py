"""A tenant's counts (`landline stats` and the demo): an operator's view, never deployed.

Every line read is accounted for: ``lines == events + user_property_rows + rejected_lines + duplicates``, and
``unaccounted`` is the difference, so a gap is printed rather than inferred. ``lines`` are the file ledger's lines
(``files_latest``: what the last attempt on each file read and published) plus the lines that arrived by direct
publish (any ``pubsub://`` origin, counted by position: a direct message has no ledger, so its lines are the positions
that hold a row or a rejection). A positive ``unaccounted`` means lines that were read but are neither rows,
rejections nor duplicates (lost, or still on their way, or parked in a dead-letter topic); a negative one means rows
from a file whose ledger has no final count (an attempt that died and was never redelivered: ``started``).
"""

from __future__ import annotations

from typing import Any

from shared.warehouse.query import run_query

# A line is identified by its position (origin, line_number): a redelivered batch stores the same positions again,
# which must not count twice; the same event id at two positions is a duplicate.
_COUNTS_SQL = """
SELECT
  (SELECT COUNT(*) FROM events) AS event_rows,
  (SELECT COUNT(DISTINCT event_instance_id) FROM events) AS events,
  (SELECT COUNT(DISTINCT CONCAT(IFNULL(origin, ''), '#', IFNULL(CAST(line_number AS STRING), event_instance_id)))
     FROM events) AS event_lines,
  (SELECT COUNT(DISTINCT CONCAT(IFNULL(origin, ''), '#', IFNULL(CAST(line_number AS STRING), event_instance_id)))
     FROM user_properties) AS user_property_lines,
  (SELECT COUNT(DISTINCT event_instance_id) FROM user_properties) AS user_property_rows,
  (SELECT COUNT(DISTINCT contact_id) FROM user_properties) AS users,
  (SELECT COUNT(*) FROM ({open_rejections})) AS rejected_lines,
  (SELECT COUNT(DISTINCT CONCAT(origin, '#', IFNULL(CAST(line_number AS STRING), '?'))) FROM (
     SELECT origin, line_number FROM events WHERE STARTS_WITH(origin, 'pubsub://')
     UNION ALL SELECT origin, line_number FROM user_properties WHERE STARTS_WITH(origin, 'pubsub://')
     UNION ALL SELECT origin, line_number FROM rejected_deduped WHERE STARTS_WITH(origin, 'pubsub://')
  )) AS direct_lines
"""

# Rejections still open: the latest verdict per rejected line, minus lines that a replay has since loaded.
_OPEN_REJECTIONS = """
SELECT r.rejected_id, r.reason_code FROM rejected_deduped r
LEFT JOIN (
  SELECT DISTINCT origin, line_number FROM events
  UNION DISTINCT
  SELECT DISTINCT origin, line_number FROM user_properties
) loaded ON loaded.origin = r.origin AND loaded.line_number = r.line_number
WHERE loaded.origin IS NULL
"""


# Why files were not loaded: the ledger's error starts with its reason code (``not_segment_layout``, ``unsupported_encoding:
# ...``).
_FILE_REASONS = """
SELECT status, IFNULL(SPLIT(error, ':')[SAFE_OFFSET(0)], 'unknown') AS reason, COUNT(*) AS n FROM files_latest
WHERE status NOT IN ('loaded', 'started') GROUP BY status, reason
"""


# Scheduled messages, and those without any outcome yet (not due, or waiting for a tick).
_SCHEDULED_SQL = """
SELECT COUNT(DISTINCT s.message_id) AS scheduled,
       COUNT(DISTINCT IF(o.message_id IS NULL, s.message_id, NULL)) AS unsent
FROM message_schedule s LEFT JOIN (SELECT DISTINCT message_id FROM message_sends) o ON o.message_id = s.message_id
"""


def tenant_stats(tenant_name: str) -> dict[str, Any]:
    """The counts of `landline stats`; a missing table is a setup error that names the fix."""
    from google.api_core import exceptions as gexc

    from shared.config import tenants
    from shared.errors import SetupError

    try:
        return _tenant_stats(tenant_name)
    except gexc.NotFound as exc:
        region = tenants().get(tenant_name).region
        raise SetupError(
            f"a table or view of tenant {tenant_name} is missing ({exc.message.split(' in location')[0]})",
            f"re-create its tables and views with `landline tenant add {tenant_name} --region {region}`",
        ) from exc


# Outcomes recorded per hour and status (each message's row of that status, deduplicated), for the pipeline page.
_SENDS_BY_HOUR = """
SELECT TIMESTAMP_TRUNC(at, HOUR) AS hour, status, COUNT(DISTINCT message_id) AS n FROM message_sends
WHERE at IS NOT NULL AND status != 'receipt'
GROUP BY hour, status ORDER BY hour, status
"""


def sends_by_hour(tenant_name: str) -> list[dict[str, Any]]:
    """``hour``, ``status``, ``n``: what the send tick recorded, hour by hour."""
    return [{**r, "hour": r["hour"].isoformat()} for r in run_query(tenant_name, _SENDS_BY_HOUR)]


def _tenant_stats(tenant_name: str) -> dict[str, Any]:
    counts = run_query(tenant_name, _COUNTS_SQL.format(open_rejections=_OPEN_REJECTIONS))[0]
    reasons: dict[str, dict[str, int]] = {}
    for row in run_query(tenant_name, _FILE_REASONS):
        reasons.setdefault(row["status"], {})[row["reason"]] = row["n"]
    files = run_query(
        tenant_name, "SELECT status, COUNT(*) AS n, SUM(lines) AS lines FROM files_latest GROUP BY status"
    )
    rejected = run_query(
        tenant_name, f"SELECT reason_code, COUNT(*) AS n FROM ({_OPEN_REJECTIONS}) GROUP BY reason_code"
    )
    sends = run_query(tenant_name, "SELECT status, COUNT(DISTINCT message_id) AS n FROM message_sends GROUP BY status")
    [schedule] = run_query(tenant_name, _SCHEDULED_SQL)
    duplicates = (counts["event_lines"] - counts["events"]) + (
        counts["user_property_lines"] - counts["user_property_rows"]
    )
    file_lines = sum(int(r["lines"] or 0) for r in files)
    lines = file_lines + int(counts["direct_lines"])
    accounted = counts["events"] + counts["user_property_rows"] + counts["rejected_lines"] + duplicates
    return {
        "tenant": tenant_name,
        "files": {r["status"]: r["n"] for r in files},
        "file_reasons": reasons,
        "lines": lines,
        "file_lines": file_lines,
        "direct_lines": int(counts["direct_lines"]),
        "unaccounted": lines - accounted,
        "events": counts["events"],
        "event_rows": counts["event_rows"],
        "user_property_rows": counts["user_property_rows"],
        "duplicates": duplicates,
        "users": counts["users"],
        "rejected_lines": counts["rejected_lines"],
        "rejected": {r["reason_code"]: r["n"] for r in rejected},
        "sends": {r["status"]: r["n"] for r in sends},
        "scheduled": int(schedule["scheduled"]),
        "unsent": int(schedule["unsent"]),
    }


def format_stats(tenant_name: str, s: dict[str, Any]) -> str:
    """The counts as aligned lines; files not loaded say why (ignored: not_segment_layout 6)."""
    reasons = s.get("file_reasons") or {}

    def why(status: str) -> str:
        found = ", ".join(f"{reason} {n}" for reason, n in sorted(reasons.get(status, {}).items()))
        return f" ({found})" if found else ""

    files = ", ".join(f"{k} {v}{why(k)}" for k, v in sorted(s["files"].items())) or "none"
    rejected = ", ".join(f"{k} {v}" for k, v in sorted(s["rejected"].items())) or "none"
    sends = ", ".join(f"{k} {v}" for k, v in sorted(s["sends"].items())) or "none"
    return "\n".join(
        [
            f"tenant {tenant_name}",
            f"  files        {files}",
            f"  lines read   {s['lines']} ({s['file_lines']} from files, {s['direct_lines']} published directly)",
            f"  events       {s['events']} unique ({s['event_rows']} rows stored; events_deduped has one per event)",
            f"  user props   {s['user_property_rows']} records for {s['users']} contacts",
            f"  duplicates   {s['duplicates']}",
            f"  rejected     {s['rejected_lines']} ({rejected})",
            f"  sends        {sends} ({s.get('scheduled', 0)} scheduled, {s.get('unsent', 0)} without an outcome yet)",
            f"  unaccounted  {s['unaccounted']}" + ("" if s["unaccounted"] == 0 else _UNACCOUNTED_HINT),
        ]
    )


_UNACCOUNTED_HINT = (
    "  (lines read that are neither rows, rejections nor duplicates: still in flight? see `landline wait`;"
    " parked in a dead-letter topic? see `landline dead-letters`; negative: a file whose ledger says `started`)"
)

"""The messages that are not sent yet, as one SQL prelude shared by the send tick (candidates), the fan-out (due
campaign chunks) and campaign status: newest schedule row per message, its outcomes so far, committed launches only."""

# Messages not sent yet: the newest schedule row per message and its outcomes so far. ``{scope}`` narrows the schedule
# rows first (a fixed text over message_schedule's columns, values as parameters: campaign chunks or single messages),
# so a shard reads its own chunks, not the whole schedule. Campaign rows (``chunk`` set) count only once their launch
# is committed (``campaign_launched``, shared/campaigns/launch.py), and that filter comes before picking the newest
# row: rows of a launch that lost a race (same message ids, newer rows) must not hide the committed launch's.
PENDING_SQL = """
WITH sched AS (
  SELECT * FROM message_schedule
  WHERE ({scope}) AND (chunk IS NULL OR launch_id IN (SELECT launch_id FROM campaign_launched))
  QUALIFY ROW_NUMBER() OVER (
    PARTITION BY message_id
    ORDER BY IFNULL(requested_at, created_at) DESC, IFNULL(request_line, 0) DESC, created_at DESC) = 1
), outcomes AS (
  SELECT message_id, COUNTIF(status != 'deferred') AS finals, COUNTIF(status = 'deferred') AS deferrals,
         COUNTIF(status = 'deferred' AND IFNULL(reason, '') NOT LIKE 'credentials:%'
                 AND IFNULL(reason, '') NOT LIKE 'claim_error%') AS policy_deferrals,
         MAX(retry_at) AS retry_at
  FROM message_sends WHERE message_id IN (SELECT message_id FROM sched) GROUP BY message_id
), pending AS (
  SELECT s.*, IFNULL(o.deferrals, 0) AS deferrals, IFNULL(o.policy_deferrals, 0) AS policy_deferrals,
         o.retry_at AS last_retry_at
  FROM sched s LEFT JOIN outcomes o ON o.message_id = s.message_id
  WHERE IFNULL(o.finals, 0) = 0
    AND (o.retry_at IS NULL OR o.retry_at <= @now)
)
"""

"""The messages that are not sent yet, as one SQL prelude shared by the send tick (candidates), the fan-out (due
campaign chunks) and campaign status: newest schedule row per message, its outcomes so far, committed launches only."""

# Messages not sent yet: the newest schedule row per message and its outcomes so far. Campaign rows (``chunk`` set)
# count only once their launch is committed (``campaign_launched``, shared/campaigns/launch.py).
PENDING_SQL = """
WITH sched AS (
  SELECT * FROM message_schedule WHERE TRUE
  QUALIFY ROW_NUMBER() OVER (
    PARTITION BY message_id
    ORDER BY IFNULL(requested_at, created_at) DESC, IFNULL(request_line, 0) DESC, created_at DESC) = 1
), outcomes AS (
  SELECT message_id, COUNTIF(status != 'deferred') AS finals, COUNTIF(status = 'deferred') AS deferrals,
         COUNTIF(status = 'deferred' AND IFNULL(reason, '') NOT LIKE 'credentials:%'
                 AND IFNULL(reason, '') NOT LIKE 'claim_error%') AS policy_deferrals,
         MAX(retry_at) AS retry_at
  FROM message_sends GROUP BY message_id
), pending AS (
  SELECT s.*, IFNULL(o.deferrals, 0) AS deferrals, IFNULL(o.policy_deferrals, 0) AS policy_deferrals,
         o.retry_at AS last_retry_at
  FROM sched s LEFT JOIN outcomes o ON o.message_id = s.message_id
  WHERE IFNULL(o.finals, 0) = 0
    AND (o.retry_at IS NULL OR o.retry_at <= @now)
    AND (s.chunk IS NULL OR s.launch_id IN (SELECT launch_id FROM campaign_launched))
)
"""

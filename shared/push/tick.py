"""One scheduler tick: find the pushes that are due, apply policy, claim each send once, send through the tenant's
provider, record every outcome (and every dead token).

Order of operations, and why:

1. One query per tenant gathers due, unsent, unexpired messages with the contact's token, timezone and properties
   from users_latest (and whether that token was reported dead after the contact last sent it).
2. Policy (shared/push/policy.py) skips or defers; deferrals carry the time of the next allowed window.
3. Each send is claimed (shared/push/claims.py, create-if-absent) *before* the provider is called: a duplicate or
   concurrent tick loses the claim and sends nothing. A claim whose holder died without recording an outcome is
   recorded as ``failed / outcome_unknown`` once it is older than any function timeout: we cannot know whether the
   provider got it, and a second send is worse than a missing one.
4. Outcomes are written right after each provider batch, to keep the claim -> record window short.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared.config import Tenant, settings, tenants
from shared.push.claims import claim
from shared.push.credentials import credential_source
from shared.push.policy import ContactFacts, decide, local_send_time_utc, zone
from shared.push.providers import Provider, PushMessage, SendOutcome, create_provider
from shared.push.schedule import handle_send_requests
from shared.stats import run_query
from shared.warehouse.client import bigquery_client
from shared.warehouse.rows import InvalidTokenRow, SendRow
from shared.warehouse.writer import write_rows

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from shared.envelopes import PubSubMessage

PROCESSOR = "landline.push"
CLAIM_LEASE = timedelta(minutes=15)  # longer than the 540 s function timeout: an older claim's holder is gone
TICK_BUDGET_S = 420.0  # of the 540 s timeout: leaves time to record outcomes
MAX_CANDIDATES = 5000
SEND_CHUNK = 100  # messages claimed and sent together (the provider's in-flight limit)

_CANDIDATES_SQL = """
WITH sched AS (
  SELECT * FROM message_schedule WHERE TRUE
  QUALIFY ROW_NUMBER() OVER (PARTITION BY message_id ORDER BY created_at DESC) = 1
), outcomes AS (
  SELECT message_id, COUNTIF(status != 'deferred') AS finals, COUNTIF(status = 'deferred') AS deferrals,
         MAX(retry_at) AS retry_at
  FROM message_sends GROUP BY message_id
), dead AS (
  SELECT contact_id, push_token, MAX(invalidated_at) AS invalidated_at
  FROM invalid_tokens GROUP BY contact_id, push_token
), token_seen AS (
  SELECT contact_id, push_token, MAX(updated_at) AS seen_at
  FROM user_properties WHERE push_token IS NOT NULL GROUP BY contact_id, push_token
)
SELECT s.message_id, s.contact_id, s.provider, s.title, s.body, s.data, s.deep_link, s.send_at, s.local_send_time,
       s.expires_at, s.collapse_key, s.priority, IFNULL(o.deferrals, 0) AS deferrals,
       u.push_token, u.timezone, u.properties,
       (d.invalidated_at IS NOT NULL AND (t.seen_at IS NULL OR t.seen_at <= d.invalidated_at)) AS token_dead
FROM sched s
LEFT JOIN outcomes o ON o.message_id = s.message_id
LEFT JOIN users_latest u ON u.contact_id = s.contact_id
LEFT JOIN dead d ON d.contact_id = s.contact_id AND d.push_token = u.push_token
LEFT JOIN token_seen t ON t.contact_id = s.contact_id AND t.push_token = u.push_token
WHERE IFNULL(o.finals, 0) = 0
  AND (o.retry_at IS NULL OR o.retry_at <= @now)
  AND (s.send_at IS NULL OR s.send_at <= @now OR s.local_send_time IS NOT NULL)
ORDER BY s.send_at, s.message_id
LIMIT @max_candidates
"""

_RECENT_SENDS_SQL = "SELECT contact_id, at FROM message_sends WHERE status = 'sent' AND at > @since"

# Expo accepts a message with a ticket and tells the delivery result later, in a receipt (kept ~24 h).
_UNRECEIPTED_SQL = """
SELECT s.message_id, s.contact_id, s.provider_message_id, u.push_token
FROM message_sends s
LEFT JOIN users_latest u ON u.contact_id = s.contact_id
WHERE s.provider = 'expo' AND s.status = 'sent' AND s.provider_message_id IS NOT NULL AND s.at > @since
  AND IFNULL(s.reason, '') NOT LIKE 'receipt%'
  AND s.message_id NOT IN (SELECT message_id FROM message_sends WHERE reason LIKE 'receipt%')
LIMIT 3000
"""


@dataclass
class TickResult:
    tenant: str
    counts: Counter[str] = field(default_factory=Counter)

    def add(self, rows: list[SendRow]) -> None:
        self.counts.update(r.status for r in rows)


class _LoopThread:
    """One event loop per process, so provider connections (HTTP/2) live across ticks of a warm instance."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="landline-push-loop", daemon=True).start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


_loop_lock = threading.Lock()
_loop: _LoopThread | None = None
_providers: dict[tuple[str, str], tuple[float, Provider]] = {}
_PROVIDER_TTL_S = 600.0  # re-read credentials now and then: customers rotate keys


def _event_loop() -> _LoopThread:
    global _loop
    with _loop_lock:
        if _loop is None:
            _loop = _LoopThread()
        return _loop


def provider_for(tenant: Tenant, name: str) -> Provider:
    key = (tenant.name, name)
    with _loop_lock:
        cached = _providers.get(key)
        if cached and time.monotonic() - cached[0] < _PROVIDER_TTL_S:
            return cached[1]
    credentials = credential_source().get(tenant.name, name)  # SetupError naming the fix when missing
    loop = _event_loop()

    async def make() -> Provider:
        return create_provider(credentials)

    provider: Provider = loop.run(make(), timeout=30)
    with _loop_lock:
        old = _providers.get(key)
        _providers[key] = (time.monotonic(), provider)
    if old is not None:
        loop.run(old[1].aclose(), timeout=30)
    return provider


def handle_push_event(message: PubSubMessage, topic: str) -> dict[str, Any]:
    """send_due's entry: a send request lands in the schedule; a tick sends what is due for every (or one) tenant."""
    if topic == settings().send_requests_topic:
        result = handle_send_requests(message)
        return dict(result.written)
    only = message.attributes.get("tenant")
    results = {}
    for tenant in tenants().all():
        if only and tenant.name != only:
            continue
        if not tenant.push_provider:
            continue
        results[tenant.name] = dict(run_tick(tenant).counts)
    return results


def _json(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


def run_tick(tenant: Tenant, *, now: datetime | None = None, budget_s: float = TICK_BUDGET_S) -> TickResult:
    started = time.time()
    now = now or datetime.now(UTC)
    tick_id = uuid.uuid4().hex[:12]
    policy = tenant.push_policy
    result = TickResult(tenant.name)
    if tenant.push_provider == "expo":
        _poll_expo_receipts(tenant, now, tick_id, result)
    candidates = run_query(tenant.name, _CANDIDATES_SQL, {"now": now, "max_candidates": MAX_CANDIDATES})
    since = now - timedelta(hours=policy.frequency_window_hours)
    recent: dict[str, list[datetime]] = defaultdict(list)
    for row in run_query(tenant.name, _RECENT_SENDS_SQL, {"since": since}):
        recent[row["contact_id"]].append(row["at"])

    records: list[SendRow] = []
    to_send: list[tuple[dict[str, Any], int]] = []
    this_tick: Counter[str] = Counter()

    def record(row: dict[str, Any], status: str, reason: str | None, **extra: Any) -> None:
        records.append(
            SendRow(
                message_id=row["message_id"],
                contact_id=row["contact_id"],
                status=status,
                attempt_id=tick_id,
                at=now,
                provider=row.get("provider") or tenant.push_provider,
                reason=reason,
                **extra,
            )
        )

    for row in candidates:
        tz = zone(row["timezone"])
        if row["expires_at"] and row["expires_at"] <= now:
            record(row, "skipped", "expired")
            continue
        if row["local_send_time"] and local_send_time_utc(row["local_send_time"], tz) > now:
            continue
        if row["deferrals"] >= policy.max_deferrals:
            record(row, "failed", "too_many_deferrals")
            continue
        facts = ContactFacts(
            contact_id=row["contact_id"],
            push_token=row["push_token"],
            token_dead=bool(row["token_dead"]),
            timezone=row["timezone"],
            properties=_json(row["properties"]),
            recent_sends=recent.get(row["contact_id"], []),
        )
        decision = decide(facts, policy, now, this_tick[row["contact_id"]])
        if decision.action == "skip":
            record(row, "skipped", decision.reason)
        elif decision.action == "defer":
            record(row, "deferred", decision.reason, retry_at=decision.until)
        else:
            this_tick[row["contact_id"]] += 1
            to_send.append((row, int(row["deferrals"])))
    _write(tenant, records, result)

    # Claim, send and record in chunks: what is claimed but not yet recorded when an instance dies is at most one
    # chunk (those messages are never resent blindly; see the module docstring).
    deadline = started + budget_s
    for offset in range(0, len(to_send), SEND_CHUNK):
        claimed = _claim_all(tenant, to_send[offset : offset + SEND_CHUNK], tick_id, now, result)
        by_provider: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in claimed:
            by_provider[row.get("provider") or tenant.push_provider or ""].append(row)
        for provider_name, rows in by_provider.items():
            _send(tenant, provider_name, rows, tick_id, deadline, result)
    return result


def _claim_all(
    tenant: Tenant, to_send: list[tuple[dict[str, Any], int]], tick_id: str, now: datetime, result: TickResult
) -> list[dict[str, Any]]:
    if not to_send:
        return []
    with ThreadPoolExecutor(max_workers=16) as pool:
        claims = list(pool.map(lambda item: claim(tenant, item[0]["message_id"], item[1], tick_id), to_send))
    won, abandoned = [], []
    for (row, _), c in zip(to_send, claims, strict=True):
        if c.won:
            won.append(row)
        elif c.claimed_at is not None and now - c.claimed_at > CLAIM_LEASE:
            abandoned.append(
                SendRow(row["message_id"], row["contact_id"], "failed", tick_id, now,
                        provider=row.get("provider") or tenant.push_provider, reason="outcome_unknown")
            )
        else:
            result.counts["claimed_elsewhere"] += 1
    _write(tenant, abandoned, result)
    return won


def _push_message(tenant: Tenant, row: dict[str, Any]) -> PushMessage:
    data = {str(k): str(v) for k, v in _json(row["data"]).items()}
    return PushMessage(
        message_id=row["message_id"],
        contact_id=row["contact_id"],
        token=row["push_token"],
        title=row["title"],
        body=row["body"],
        data=data,
        deep_link=row["deep_link"],
        collapse_key=row["collapse_key"],
        priority="normal" if row["priority"] == "normal" else "high",
        expires_at=row["expires_at"],
        idempotency_key=str(uuid.uuid5(uuid.NAMESPACE_URL, f"landline:{tenant.name}:{row['message_id']}")),
    )


def _send(
    tenant: Tenant, provider_name: str, rows: list[dict[str, Any]], tick_id: str, deadline: float, result: TickResult
) -> None:
    if not provider_name:
        now = datetime.now(UTC)
        _write(tenant, [SendRow(r["message_id"], r["contact_id"], "failed", tick_id, now, reason="no_provider")
                        for r in rows], result)
        return
    provider = provider_for(tenant, provider_name)
    messages = [_push_message(tenant, r) for r in rows]
    outcomes: list[SendOutcome] = _event_loop().run(
        provider.send_many(messages, deadline=deadline), timeout=max(deadline - time.time(), 1) + 60
    )
    now = datetime.now(UTC)
    sends: list[SendRow] = []
    dead: list[InvalidTokenRow] = []
    for msg, outcome in zip(messages, outcomes, strict=True):
        status = {"sent": "sent", "deferred": "deferred"}.get(outcome.status, "failed")
        reason = outcome.reason
        if outcome.status == "invalid_token":
            reason = f"invalid_token: {outcome.reason}"
            dead.append(InvalidTokenRow(msg.contact_id, msg.token, provider_name, outcome.reason or "invalid_token",
                                        outcome.token_invalidated_at or now))
        sends.append(
            SendRow(msg.message_id, msg.contact_id, status, tick_id, now, provider=provider_name, reason=reason,
                    provider_message_id=outcome.provider_message_id, retry_at=outcome.retry_after)
        )
    write_rows(bigquery_client(), tenant, dead, processor=PROCESSOR)
    _write(tenant, sends, result)


def _poll_expo_receipts(tenant: Tenant, now: datetime, tick_id: str, result: TickResult) -> None:
    """Record the receipts of earlier Expo tickets: ok, or failed (a dead token goes to invalid_tokens)."""
    from shared.push.providers import ExpoProvider

    pending = run_query(tenant.name, _UNRECEIPTED_SQL, {"since": now - timedelta(hours=24)})
    if not pending:
        return
    provider = provider_for(tenant, "expo")
    if not isinstance(provider, ExpoProvider):
        return
    receipts = _event_loop().run(provider.fetch_receipts([r["provider_message_id"] for r in pending]), timeout=120)
    rows: list[SendRow] = []
    dead: list[InvalidTokenRow] = []
    for row in pending:
        receipt = receipts.get(row["provider_message_id"])
        if receipt is None:
            continue  # not ready yet: the next tick asks again
        if receipt.status == "ok":
            rows.append(SendRow(row["message_id"], row["contact_id"], "sent", tick_id, now, provider="expo",
                                reason="receipt_ok", provider_message_id=receipt.ticket_id))
            continue
        rows.append(SendRow(row["message_id"], row["contact_id"], "failed", tick_id, now, provider="expo",
                            reason=f"receipt:{receipt.reason}", provider_message_id=receipt.ticket_id))
        if receipt.status == "invalid_token" and row["push_token"]:
            dead.append(InvalidTokenRow(row["contact_id"], row["push_token"], "expo", receipt.reason or "", now))
    write_rows(bigquery_client(), tenant, dead, processor=PROCESSOR)
    if rows:
        write_rows(bigquery_client(), tenant, rows, processor=PROCESSOR)
        result.counts.update(f"receipt_{r.status}" for r in rows)


def _write(tenant: Tenant, rows: list[SendRow], result: TickResult) -> None:
    if rows:
        write_rows(bigquery_client(), tenant, rows, processor=PROCESSOR)
        result.add(rows)

"""One scheduler tick: find the pushes that are due, apply policy, claim each send once, send through the tenant's
provider, record every outcome (and every dead token).

Order of operations, and why:

1. One query per tenant gathers due, unsent, unexpired messages with the contact's token, timezone and properties
   from users_latest (and whether that token was reported dead after the contact last sent it). Local-time messages
   are only read when they can be due somewhere (``local_send_time <= now + 14 h``, the furthest zone ahead of UTC).
   Messages with a UTC ``send_at`` (all of them due) come first, oldest first; then local-time messages by their
   local time, i.e. by their UTC time estimated as if every contact lived at UTC (off by at most the contact's
   offset). So no message that is not yet due can take a due UTC message's place in the candidate limit, and among
   local-time messages the earliest, most likely due, come first. (Ordering by the earliest possible UTC time,
   ``local - 14 h``, would put tomorrow morning's campaign ahead of every UTC message of the last 14 hours.) No
   value is parsed in SQL, so one malformed row cannot fail the query for the whole tenant.
2. Policy (shared/push/policy.py) skips or defers; deferrals carry the time of the next allowed window. Each row is
   handled on its own: a malformed row is recorded ``failed/<reason>`` and the others go on.
3. The provider is created and its credentials checked (an FCM access token, an APNs signature) *before* anything
   is claimed: a missing secret or a bad key pauses this tenant with a setup error that names the fix, claims nothing
   and leaves its messages due.
4. Each send is claimed (shared/push/claims.py, create-if-absent) *before* the provider is called: a duplicate or
   concurrent tick loses the claim and sends nothing. A claim whose holder died without recording an outcome is
   recorded as ``failed / outcome_unknown`` once it is older than any function timeout: we cannot know whether the
   provider got it, and a second send is worse than a missing one. Likewise a request that may have reached the
   provider without an answer (timeout, reset) is ``failed / outcome_unknown``, never resent (except where the
   provider deduplicates by an idempotency key: OneSignal).
5. Outcomes are written right after each provider batch, to keep the claim -> record window short. When the provider
   refuses the tenant's credentials the affected messages are deferred (not failed), and no further chunk is claimed.
6. Blast radius: every tenant of an invocation runs isolated (an exception is logged with its fix and the next
   tenant goes on), and all of them share one deadline, so the invocation never runs past the function timeout; each
   tenant gets a fair share of what is left, in a rotating order, so none starves. Receipts (for a provider that has
   them, ``Provider.has_receipts``: Expo) are polled last, only with time to spare, and a failing poll never touches
   sending.

``run_tick`` runs these as stages with plain inputs and outputs: ``decide`` (candidates -> rows to record and
messages to send, no I/O), then per chunk claim (``_claim_all``), send (``_send``) and record (``_write``), then
receipts (``_poll_receipts_safely``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import random
import threading
import time
import uuid
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypedDict, cast

from shared.campaigns.template import Missing, contact_context, render
from shared.config import Tenant
from shared.errors import LandlineError, SetupError
from shared.push.claims import Claim, claim
from shared.push.fanout import FanOut, fan_out
from shared.push.pending import PENDING_SQL
from shared.push.policy import ContactFacts
from shared.push.policy import decide as decide_policy
from shared.push.providers import Provider, PushMessage, Receipt, SendOutcome, create_provider, provider_class
from shared.push.providers.base import ProviderAuthError
from shared.push.schedule import (
    LOCAL_SEND_TIME_FORMAT,
    MESSAGE_ID_DATA_KEY,
    parse_local_send_time,
    valid_message_id,
)
from shared.runtime import get_logger
from shared.secrets import secret_source
from shared.timezones import zone
from shared.warehouse.client import bigquery_client
from shared.warehouse.query import run_query
from shared.warehouse.rows import InvalidTokenRow, SendRow
from shared.warehouse.schema import users_latest_sql
from shared.warehouse.writer import write_rows

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Sequence


log = get_logger("landline.send_due")

PROCESSOR = "landline.push"
CLAIM_LEASE = timedelta(minutes=15)  # longer than the 540 s function timeout: an older claim's holder is gone
TICK_BUDGET_S = 420.0  # per invocation, shared by all its tenants: of the 540 s timeout, leaves time for one chunk
MAX_CANDIDATES = 5000
SEND_CHUNK = 100  # messages claimed and sent together (the provider's in-flight limit)
LOCAL_TIME_HORIZON = timedelta(hours=14)  # UTC+14 (Kiribati) is the furthest any local time runs ahead of UTC
CREDENTIALS_RETRY = timedelta(minutes=5)  # one scheduler period: a fixed secret is picked up by the next tick
RECEIPT_POLL_MAX_S = 60.0
REQUEST_TIMEOUT_S = 30.0  # per provider request; no answer by then is an unknown outcome (never resent)
SEND_GRACE_S = 90.0  # past the deadline, what one chunk may still take (request timeout plus recording)

# ``{scope}``: which schedule rows (shared/push/pending.py; a fixed text of this module or shared/push/shards.py).
CANDIDATES_SQL = PENDING_SQL + """, dead AS (
  SELECT contact_id, push_token, MAX(invalidated_at) AS invalidated_at
  FROM invalid_tokens WHERE contact_id IN (SELECT contact_id FROM pending) GROUP BY contact_id, push_token
), token_seen AS (
  SELECT contact_id, push_token, MAX(updated_at) AS seen_at
  FROM user_properties WHERE push_token IS NOT NULL AND contact_id IN (SELECT contact_id FROM pending)
  GROUP BY contact_id, push_token
)
SELECT s.message_id, s.contact_id, s.provider, s.title, s.body, s.data, s.deep_link, s.send_at, s.local_send_time,
       s.expires_at, s.collapse_key, s.priority, s.deferrals, s.policy_deferrals, s.last_retry_at, s.campaign,
       s.chunk, u.push_token, u.country, u.timezone, u.properties,
       (d.invalidated_at IS NOT NULL AND (t.seen_at IS NULL OR t.seen_at <= d.invalidated_at)) AS token_dead
FROM pending s
LEFT JOIN ({users}) u ON u.contact_id = s.contact_id
LEFT JOIN dead d ON d.contact_id = s.contact_id AND d.push_token = u.push_token
LEFT JOIN token_seen t ON t.contact_id = s.contact_id AND t.push_token = u.push_token
WHERE ((s.local_send_time IS NULL AND (s.send_at IS NULL OR s.send_at <= @now))
       OR (s.local_send_time IS NOT NULL AND s.local_send_time <= @local_horizon))
ORDER BY s.local_send_time IS NOT NULL, s.send_at, s.local_send_time, s.message_id
LIMIT @max_candidates
"""
# users_latest of the pending messages' contacts only (shared/warehouse/schema.py users_latest_sql).
_PENDING_USERS = users_latest_sql("contact_id IN (SELECT contact_id FROM pending)")
# One by one: every message that is not part of a campaign chunk (campaign chunks go through shards).
_ONE_BY_ONE = "chunk IS NULL"

# Expo receipts have their own status ('receipt'): a message counts once against the cap and is never both sent and
# failed. Older versions wrote receipts as status 'sent'/'failed' with reason 'receipt...': they are excluded too.
_RECENT_SENDS_SQL = """
SELECT contact_id, at FROM message_sends
WHERE status = 'sent' AND IFNULL(reason, '') NOT LIKE 'receipt%' AND at > @since
"""

# A provider with receipts (Expo) accepts a message with a ticket and tells the delivery result later, in a receipt
# (Expo keeps them ~24 h): tickets of earlier ticks only (this tick's are not ready yet).
_UNRECEIPTED_SQL = """
SELECT s.message_id, s.contact_id, s.provider_message_id, u.push_token
FROM message_sends s
LEFT JOIN users_latest u ON u.contact_id = s.contact_id
WHERE s.provider = @provider AND s.status = 'sent' AND s.provider_message_id IS NOT NULL
  AND s.at > @since AND s.at < @tick_started
  AND IFNULL(s.reason, '') NOT LIKE 'receipt%'
  AND s.message_id NOT IN (
    SELECT message_id FROM message_sends WHERE status = 'receipt' OR IFNULL(reason, '') LIKE 'receipt%')
LIMIT 3000
"""


@dataclass
class TickResult:
    tenant: str
    counts: Counter[str] = field(default_factory=Counter)
    paused: SetupError | None = None  # the tenant's credentials or setup stopped sending; the fix is in the error

    def add(self, rows: list[SendRow]) -> None:
        self.counts.update(r.status for r in rows)


class _LoopThread:
    """One event loop per process, so provider connections (HTTP/2) live across ticks of a warm instance."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="landline-push-loop", daemon=True).start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float) -> Any:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()  # stop it sending behind our back
            raise


_loop_lock = threading.Lock()
_loop: _LoopThread | None = None
_providers: dict[tuple[str, str], tuple[float, Provider]] = {}
_creating: dict[tuple[str, str], threading.Lock] = {}
_PROVIDER_TTL_S = 600.0  # re-read credentials now and then: customers rotate keys
# A provider handed out may be in use by another thread of this instance until that send's deadline (a tick or shard
# never outlives the function's 540 s timeout): a replaced or refused one is closed only after that, never under it.
RETIRED_PROVIDER_CLOSE_S = 600.0


def _event_loop() -> _LoopThread:
    global _loop
    with _loop_lock:
        if _loop is None:
            _loop = _LoopThread()
        return _loop


def provider_for(tenant: Tenant, name: str) -> Provider:
    """The tenant's provider client, shared by every thread of this instance (one HTTP/2 pool per provider), made
    once per key even when threads ask at the same time, and re-made from the secret after ``_PROVIDER_TTL_S``."""
    key = (tenant.name, name)
    with _loop_lock:
        cached = _providers.get(key)
        if cached and time.monotonic() - cached[0] < _PROVIDER_TTL_S:
            return cached[1]
        creating = _creating.setdefault(key, threading.Lock())
    with creating:
        with _loop_lock:  # another thread may have made it while we waited
            cached = _providers.get(key)
            if cached and time.monotonic() - cached[0] < _PROVIDER_TTL_S:
                return cached[1]
        credentials = secret_source().get(tenant.name, name)  # SetupError naming the fix when missing
        loop = _event_loop()

        async def make() -> Provider:
            try:
                return create_provider(credentials, timeout=REQUEST_TIMEOUT_S)
            except (ValueError, TypeError, KeyError) as exc:  # e.g. a service-account key that does not parse
                raise ProviderAuthError(f"unusable credentials ({type(exc).__name__})") from None

        provider: Provider = loop.run(make(), timeout=30)
        with _loop_lock:
            old = _providers.get(key)
            _providers[key] = (time.monotonic(), provider)
    if old is not None:
        _retire(old[1])
    return provider


def _retire(provider: Provider) -> None:
    """Close ``provider`` once no send that was handed it can still be using it (closing it at once failed the
    in-flight requests of other threads: ``ConnectionClosed`` -> outcome unknown, and ``StreamNotOpened``)."""
    loop = _event_loop().loop

    def report(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:  # a connection we no longer want: log only
            log.warning("closing a provider failed", exc_info=task.exception())

    def close() -> None:
        loop.create_task(provider.aclose()).add_done_callback(report)

    loop.call_soon_threadsafe(loop.call_later, RETIRED_PROVIDER_CLOSE_S, close)


def forget_provider(tenant: Tenant, name: str) -> None:
    """Drop a cached provider (its credentials were refused): the next tick reads the secret again."""
    with _loop_lock:
        old = _providers.pop((tenant.name, name), None)
    if old is not None:
        _retire(old[1])


def credentials_refused(tenant: Tenant, provider: str, reason: str) -> SetupError:
    return SetupError(
        f"{provider} refused the credentials or configuration of tenant {tenant.name!r} ({reason}); "
        "sending for this tenant is paused and its messages stay due",
        f"put valid {provider} credentials in {secret_source().where(tenant.name, provider)}; "
        "the next tick resumes sending",
    )


def run_ticks(
    selected: Sequence[Tenant],
    *,
    budget_s: float = TICK_BUDGET_S,
    now: datetime | None = None,
    clock: Callable[[], float] = time.time,
) -> dict[str, Any]:
    """Tick every tenant in ``selected`` within one shared deadline; one tenant's failure never stops another.

    Each tenant gets an equal share of the time left (what one leaves unused goes to the next), starting from a
    random tenant, so a tenant with a large backlog cannot use up every tick. A tenant reached after the deadline is
    left for the next tick: its messages stay due."""
    deadline = clock() + budget_s
    order = list(selected)
    if order:
        start = random.randrange(len(order))
        order = order[start:] + order[:start]
    results: dict[str, Any] = {}
    for index, tenant in enumerate(order):
        left = deadline - clock()
        if left <= 0:
            results[tenant.name] = {"left_for_next_tick": 1}
            log.warning("tick budget used up: tenant left for the next tick", extra={"fields": {"tenant": tenant.name}})
            continue
        share = clock() + left / (len(order) - index)
        try:
            result = run_tick(tenant, now=now, deadline=share, clock=clock)
        except SetupError as exc:
            results[tenant.name] = {"error": "setup", "problem": exc.problem, "fix": exc.fix}
            log.error("setup error: %s", exc.problem,
                      extra={"fields": {"tenant": tenant.name, "fix": exc.fix, "error_class": "setup"}})
            continue
        except LandlineError as exc:
            results[tenant.name] = {"error": type(exc).__name__, "problem": str(exc)}
            log.warning("tenant tick failed, the next tick retries",
                        extra={"fields": {"tenant": tenant.name, "error": str(exc), "error_class": "transient"}})
            continue
        except Exception as exc:  # one tenant's bug must not stop the others' sends
            results[tenant.name] = {"error": type(exc).__name__, "problem": str(exc)[:500]}
            log.exception("tenant tick failed", extra={"fields": {"tenant": tenant.name, "error_class": "bug"}})
            continue
        results[tenant.name] = dict(result.counts)
        if result.paused is not None:
            results[tenant.name].update(error="setup", problem=result.paused.problem, fix=result.paused.fix)
            log.error("setup error: %s", result.paused.problem,
                      extra={"fields": {"tenant": tenant.name, "fix": result.paused.fix, "error_class": "setup"}})
    return results


def _json(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


class Candidate(TypedDict):
    """One row of ``_CANDIDATES_SQL``: a due, unsent schedule row with its contact's facts. A TypedDict rather than a
    dataclass: rows stay the query's own dicts (no copy per row), and every key the tick reads is checked by mypy.
    Values are not validated by the query; ``_consider`` treats anything unexpected as that row's failure."""

    message_id: str
    contact_id: str
    provider: str | None
    title: str
    body: str
    data: Any  # JSON (a dict, or its text)
    deep_link: str | None
    send_at: datetime | None
    local_send_time: str | None
    expires_at: datetime | None
    collapse_key: str | None
    priority: str | None
    deferrals: int
    policy_deferrals: int
    last_retry_at: datetime | None
    campaign: str | None  # set: the texts are Liquid templates of a campaign
    chunk: str | None
    push_token: str | None
    country: str | None
    timezone: str | None
    properties: Any  # JSON (a dict, or its text)
    token_dead: bool | None


class _Unreceipted(TypedDict):
    """One row of ``_UNRECEIPTED_SQL``: a send whose receipt has not been recorded yet."""

    message_id: str
    contact_id: str
    provider_message_id: str
    push_token: str | None


@dataclass
class _Due:
    """A candidate that passed policy: what to claim (``attempt``) and what to send."""

    row: Candidate
    attempt: int
    provider: str
    message: PushMessage

    @property
    def message_id(self) -> str:
        return self.message.message_id

    @property
    def contact_id(self) -> str:
        return self.message.contact_id


@dataclass(frozen=True, slots=True)
class _Record:
    """A candidate's outcome without sending: skipped, deferred (until ``retry_at``) or failed."""

    status: str
    reason: str | None
    retry_at: datetime | None = None


def run_tick(
    tenant: Tenant,
    *,
    now: datetime | None = None,
    budget_s: float = TICK_BUDGET_S,
    deadline: float | None = None,
    max_candidates: int = MAX_CANDIDATES,
    clock: Callable[[], float] = time.time,
) -> TickResult:
    """One tenant's tick: decide (read candidates, apply policy), record what is decided, then claim, send and record
    chunk by chunk, then poll receipts. ``deadline`` (a ``clock()`` value; else ``budget_s`` from now): no chunk is
    claimed after it, and provider waits never pass it (those messages are deferred)."""
    deadline = deadline if deadline is not None else clock() + budget_s
    now = now or datetime.now(UTC)
    tick_id = uuid.uuid4().hex[:12]
    result = TickResult(tenant.name)
    _fan_out_safely(tenant, now, result)
    records, due = decide(tenant, candidates(tenant, now, max_candidates), recent_sends(tenant, now), now, tick_id)
    _write(tenant, records, result)
    if due:
        _claim_and_send(tenant, due, tick_id, now, deadline, result, clock)
    if result.paused is None:
        _poll_receipts_safely(tenant, now, tick_id, result, deadline, clock)
    return result


def _fan_out_safely(tenant: Tenant, now: datetime, result: TickResult) -> None:
    """Campaigns first (shared/push/fanout.py): their shards run on other instances while this one sends single
    messages. A failure here is logged (with its fix) and never stops single messages; their chunks stay due."""
    try:
        fanned: FanOut = fan_out(tenant, now)
    except SetupError as exc:
        result.counts["fan_out_failed"] += 1
        log.error("setup error: %s", exc.problem,
                  extra={"fields": {"tenant": tenant.name, "fix": exc.fix, "error_class": "setup"}})
        return
    except Exception as exc:
        result.counts["fan_out_failed"] += 1
        log.warning("campaign fan-out failed; the next tick tries again", exc_info=True,
                    extra={"fields": {"tenant": tenant.name, "error": f"{type(exc).__name__}: {exc}"[:300]}})
        return
    result.counts["campaigns_launched"] += len(fanned.launched)
    result.counts["shards_published"] += len(fanned.shards)
    result.counts["chunks_due"] += fanned.chunks
    result.counts += Counter()  # drop the zero counts: a quiet tick reports only what it did


# -- decide ------------------------------------------------------------------------------------------------------------
def candidates(
    tenant: Tenant, now: datetime, max_candidates: int, scope: str = _ONE_BY_ONE, params: dict[str, Any] | None = None
) -> list[Candidate]:
    """Due, unsent messages with their contact's facts; ``scope`` narrows them (a fixed SQL condition, values in
    ``params``)."""
    horizon = (now + LOCAL_TIME_HORIZON).strftime(LOCAL_SEND_TIME_FORMAT)
    rows = run_query(
        tenant.name,
        CANDIDATES_SQL.format(scope=scope, users=_PENDING_USERS),
        {"now": now, "local_horizon": horizon, "max_candidates": max_candidates, **(params or {})},
    )
    return cast("list[Candidate]", rows)


def recent_sends(
    tenant: Tenant, now: datetime, scope: str | None = None, params: dict[str, Any] | None = None
) -> dict[str, list[datetime]]:
    """Each contact's sends inside the tenant's frequency window (for the frequency cap); with ``scope`` (a fixed
    condition over message_schedule, as for ``candidates``), only of the contacts of those schedule rows: a shard
    must not read every send of a million-contact campaign."""
    since = now - timedelta(hours=tenant.push_policy.frequency_window_hours)
    recent: dict[str, list[datetime]] = defaultdict(list)
    sql = _RECENT_SENDS_SQL
    if scope is not None:
        sql += f"  AND contact_id IN (SELECT contact_id FROM message_schedule WHERE {scope})\n"
    for row in run_query(tenant.name, sql, {"since": since, **(params or {})}):
        recent[row["contact_id"]].append(row["at"])
    return recent


def decide(
    tenant: Tenant, candidates: Sequence[Candidate], recent: dict[str, list[datetime]], now: datetime, tick_id: str
) -> tuple[list[SendRow], list[_Due]]:
    """What to do with each candidate, without I/O: (rows to record now: skipped, deferred, failed; messages to claim
    and send). A candidate not yet due in its contact's zone is in neither (a later tick). Each row is decided on its
    own: one that breaks anything is recorded ``failed/invalid_row:<error>`` and the others go on."""
    records: list[SendRow] = []
    due: list[_Due] = []
    this_tick: Counter[str] = Counter()
    for row in candidates:
        try:
            verdict = _consider(tenant, row, now, recent, this_tick)
        except Exception as exc:  # one malformed row never stops the others
            log.warning("malformed schedule row", exc_info=True,
                        extra={"fields": {"tenant": tenant.name, "message_id": row.get("message_id")}})
            verdict = _Record("failed", f"invalid_row:{type(exc).__name__}")
        if verdict is None:
            continue
        if isinstance(verdict, _Due):
            this_tick[row["contact_id"]] += 1
            due.append(verdict)
            continue
        records.append(SendRow(row["message_id"], row["contact_id"], verdict.status, tick_id, now,
                               provider=row.get("provider") or tenant.push_provider, reason=verdict.reason,
                               retry_at=verdict.retry_at))
    return records, due


def _consider(
    tenant: Tenant, row: Candidate, now: datetime, recent: dict[str, list[datetime]], this_tick: Counter[str]
) -> _Record | _Due | None:
    """What to do with one candidate: a record, a send, or None (not due yet)."""
    policy = tenant.push_policy
    if not valid_message_id(row["message_id"]):
        return _Record("failed", "invalid_message_id")
    tz = zone(row["timezone"])
    if row["expires_at"] and row["expires_at"] <= now:
        return _Record("skipped", "expired")
    if row["local_send_time"]:
        try:
            local = parse_local_send_time(row["local_send_time"])
            if local.replace(tzinfo=tz).astimezone(UTC) > now:
                return None
        except (ValueError, OverflowError):
            return _Record("failed", "invalid_local_send_time")
    if row["policy_deferrals"] >= policy.max_deferrals:
        return _Record("failed", "too_many_deferrals")
    provider = row.get("provider") or tenant.push_provider
    if not provider:
        return _Record("failed", "no_provider")
    facts = ContactFacts(
        contact_id=row["contact_id"],
        push_token=row["push_token"],
        token_dead=bool(row["token_dead"]),
        timezone=row["timezone"],
        properties=_json(row["properties"]),
        recent_sends=recent.get(row["contact_id"], []),
    )
    decision = decide_policy(facts, policy, now, this_tick[row["contact_id"]])
    if decision.action == "skip":
        return _Record("skipped", decision.reason)
    if decision.action == "defer":
        return _Record("deferred", decision.reason, decision.until)
    texts = _texts(row, facts.properties)
    if isinstance(texts, Missing):
        return _Record("skipped", texts.reason)
    return _Due(row, int(row["deferrals"]), provider, _push_message(tenant, row, texts))


@dataclass(frozen=True, slots=True)
class _Texts:
    title: str
    body: str
    deep_link: str | None
    data: dict[str, str]


def _texts(row: Candidate, properties: dict[str, Any]) -> _Texts | Missing:
    """The message's texts: as scheduled, or a campaign's templates rendered with the contact's properties (a value
    missing without a default skips the contact, reason ``template_missing:<name>``)."""
    data = {str(k): str(v) for k, v in _json(row["data"]).items()}
    if not row.get("campaign"):
        return _Texts(row["title"], row["body"], row["deep_link"], data)
    context = contact_context(properties, contact_id=row["contact_id"], country=row.get("country"),
                              timezone=row["timezone"])  # fmt: skip
    rendered: dict[str, str] = {}
    sources = {"title": row["title"], "body": row["body"], **{f"data.{k}": v for k, v in data.items()}}
    if row["deep_link"]:
        sources["deep_link"] = row["deep_link"]
    for name, source in sources.items():
        text = render(source, context)
        if isinstance(text, Missing):
            return text
        rendered[name] = text
    return _Texts(
        rendered["title"], rendered["body"], rendered.get("deep_link"),
        {k.removeprefix("data."): v for k, v in rendered.items() if k.startswith("data.")},
    )  # fmt: skip


def _push_message(tenant: Tenant, row: Candidate, texts: _Texts | None = None) -> PushMessage:
    """``texts``: rendered campaign texts (default: the row's own, with its data)."""
    if texts is None:
        plain = _texts({**row, "campaign": None}, {})
        assert isinstance(plain, _Texts)
        texts = plain
    return PushMessage(
        message_id=row["message_id"],
        contact_id=row["contact_id"],
        token=row["push_token"] or "",
        title=texts.title,
        body=texts.body,
        data={**texts.data, MESSAGE_ID_DATA_KEY: row["message_id"]},
        deep_link=texts.deep_link,
        collapse_key=row["collapse_key"],
        priority="normal" if row["priority"] == "normal" else "high",
        expires_at=row["expires_at"],
        idempotency_key=str(uuid.uuid5(uuid.NAMESPACE_URL, f"landline:{tenant.name}:{row['message_id']}")),
    )


# -- claim, send, record, chunk by chunk --------------------------------------------------------------------------------
def _ready_providers(tenant: Tenant, names: set[str], result: TickResult) -> dict[str, Provider]:
    """The providers this tick needs, with credentials checked before anything is claimed."""
    ready: dict[str, Provider] = {}
    for name in sorted(names):
        try:
            provider = provider_for(tenant, name)  # SetupError naming the fix when the secret is missing/malformed
            _event_loop().run(provider.preflight(), timeout=60)
        except ProviderAuthError as exc:
            forget_provider(tenant, name)
            result.paused = result.paused or credentials_refused(tenant, name, exc.reason)
            continue
        except SetupError as exc:
            result.paused = result.paused or exc
            continue
        ready[name] = provider
    return ready


def _claim_and_send(
    tenant: Tenant,
    due: list[_Due],
    tick_id: str,
    now: datetime,
    deadline: float,
    result: TickResult,
    clock: Callable[[], float],
) -> None:
    # Claim, send and record in chunks: what is claimed but not yet recorded when an instance dies is at most one
    # chunk (those messages are never resent blindly; see the module docstring).
    providers = _ready_providers(tenant, {d.provider for d in due}, result)
    sendable = [d for d in due if d.provider in providers]
    result.counts["paused"] += len(due) - len(sendable)
    for offset in range(0, len(sendable), SEND_CHUNK):
        if clock() >= deadline or result.paused is not None:
            result.counts["left_for_next_tick"] += len(sendable) - offset
            return
        chunk = sendable[offset : offset + SEND_CHUNK]
        won = _claim_all(tenant, chunk, tick_id, now, result)
        by_provider: dict[str, list[_Due]] = defaultdict(list)
        for item in won:
            by_provider[item.provider].append(item)
        for name, items in by_provider.items():
            _send(tenant, name, providers[name], items, tick_id, deadline, result, clock)


def _claim_all(tenant: Tenant, chunk: list[_Due], tick_id: str, now: datetime, result: TickResult) -> list[_Due]:
    """Claim every message of the chunk, each on its own (one failing claim never strands the others); record what
    was not won; return what was."""

    def attempt(item: _Due) -> Claim | Exception:
        try:
            return claim(tenant, item.message_id, item.attempt, tick_id)
        except Exception as exc:  # returned, settled below
            return exc

    with ThreadPoolExecutor(max_workers=16) as pool:
        claims = list(pool.map(attempt, chunk))
    won, records, paused = _settle_claims(tenant, chunk, claims, tick_id, now, result.counts)
    result.paused = result.paused or paused
    _write(tenant, records, result)
    return won


def _settle_claims(
    tenant: Tenant,
    chunk: list[_Due],
    claims: list[Claim | Exception],
    tick_id: str,
    now: datetime,
    counts: Counter[str],
) -> tuple[list[_Due], list[SendRow], SetupError | None]:
    """(won, rows to record, a setup error that pauses the tenant) from each message's claim or claim error."""
    won: list[_Due] = []
    records: list[SendRow] = []
    paused: SetupError | None = None
    for item, c in zip(chunk, claims, strict=True):
        if isinstance(c, Exception):
            # Not sent by us. Deferring moves the message to its next attempt (a new claim object), so whether or not
            # this claim was stored, the next tick can send it once.
            records.append(SendRow(item.message_id, item.contact_id, "deferred", tick_id, now,
                                   provider=item.provider, reason=f"claim_error:{type(c).__name__}"))
            if isinstance(c, SetupError):
                paused = paused or c
            else:
                log.warning("claim failed", extra={"fields": {"tenant": tenant.name, "message_id": item.message_id,
                                                              "error": str(c)[:300]}})
        elif c.won:
            won.append(item)
        elif c.claimed_at is not None and now - c.claimed_at > CLAIM_LEASE:
            records.append(SendRow(item.message_id, item.contact_id, "failed", tick_id, now,
                                   provider=item.provider, reason="outcome_unknown"))
        else:
            counts["claimed_elsewhere"] += 1
    return won, records, paused


def _send(
    tenant: Tenant,
    provider_name: str,
    provider: Provider,
    items: list[_Due],
    tick_id: str,
    deadline: float,
    result: TickResult,
    clock: Callable[[], float],
) -> None:
    """Send claimed messages through one provider and record every outcome (and every dead token)."""
    messages = [item.message for item in items]
    try:
        outcomes: list[SendOutcome] = _event_loop().run(
            provider.send_many(messages, deadline=deadline), timeout=max(deadline - clock(), 0) + SEND_GRACE_S
        )
    except Exception:
        # We cannot tell which of these reached the provider: record them all as unknown (never resent blindly), and
        # stop this tenant's tick (the error is logged by the caller).
        at = datetime.now(UTC)
        _write(tenant, [SendRow(m.message_id, m.contact_id, "failed", tick_id, at, provider=provider_name,
                                reason="outcome_unknown") for m in messages], result)
        raise
    sends, dead, refused = _outcome_rows(provider_name, messages, outcomes, tick_id, datetime.now(UTC))
    _write_dead(tenant, dead)
    _write(tenant, sends, result)
    if refused is not None:
        forget_provider(tenant, provider_name)
        result.paused = result.paused or credentials_refused(tenant, provider_name, refused)


def _outcome_rows(
    provider_name: str, messages: list[PushMessage], outcomes: list[SendOutcome], tick_id: str, now: datetime
) -> tuple[list[SendRow], list[InvalidTokenRow], str | None]:
    """(message_sends rows, invalid_tokens rows, why the provider refused the credentials if it did)."""
    sends: list[SendRow] = []
    dead: list[InvalidTokenRow] = []
    refused: str | None = None
    for msg, outcome in zip(messages, outcomes, strict=True):
        status = {"sent": "sent", "deferred": "deferred"}.get(outcome.status, "failed")
        reason = outcome.reason
        retry_at = outcome.retry_after
        if outcome.status == "invalid_token":
            reason = f"invalid_token: {outcome.reason}"
            dead.append(InvalidTokenRow(msg.contact_id, msg.token, provider_name, outcome.reason or "invalid_token",
                                        outcome.token_invalidated_at or now))
        elif outcome.status == "unauthorized":
            # Not this message's fault: it waits for the credentials to be fixed, it does not fail for good.
            refused = refused or outcome.reason or "unauthorized"
            status, reason, retry_at = "deferred", f"credentials:{outcome.reason}", now + CREDENTIALS_RETRY
        sends.append(
            SendRow(msg.message_id, msg.contact_id, status, tick_id, now, provider=provider_name, reason=reason,
                    provider_message_id=outcome.provider_message_id, retry_at=retry_at)
        )
    return sends, dead, refused


# -- receipts ---------------------------------------------------------------------------------------------------------
def _poll_receipts_safely(
    tenant: Tenant, now: datetime, tick_id: str, result: TickResult, deadline: float, clock: Callable[[], float]
) -> None:
    """Receipts are bookkeeping: polled only for a provider that has them (``Provider.has_receipts``), after sending,
    only with time left, and their failure is only logged."""
    name = tenant.push_provider
    provider_cls = provider_class(name) if name else None
    if name is None or provider_cls is None or not provider_cls.has_receipts:
        return
    left = deadline - clock()
    if left <= 1:
        return
    try:
        _poll_receipts(tenant, name, now, tick_id, result, min(left, RECEIPT_POLL_MAX_S))
    except Exception as exc:  # a later tick polls again (Expo keeps receipts about a day)
        result.counts["receipt_poll_failed"] += 1
        log.warning("%s receipt poll failed; the next tick polls again", name,
                    extra={"fields": {"tenant": tenant.name, "error": f"{type(exc).__name__}: {exc}"[:300]}})


def _poll_receipts(
    tenant: Tenant, provider_name: str, now: datetime, tick_id: str, result: TickResult, timeout: float
) -> None:
    """Record the receipts of earlier sends (status ``receipt``, reason ``ok`` or the provider's error; a dead token
    goes to invalid_tokens). A receipt is never a second ``sent`` or a ``failed`` beside the ``sent``."""
    pending = cast("list[_Unreceipted]", run_query(
        tenant.name, _UNRECEIPTED_SQL,
        {"provider": provider_name, "since": now - timedelta(hours=24), "tick_started": now},
    ))
    if not pending:
        return
    provider = provider_for(tenant, provider_name)
    ids = [r["provider_message_id"] for r in pending]
    receipts = _event_loop().run(asyncio.wait_for(provider.fetch_receipts(ids), timeout), timeout=timeout + 5)
    rows, dead = _receipt_rows(provider_name, pending, receipts, tick_id, now)
    _write_dead(tenant, dead)
    if rows:
        write_rows(bigquery_client(), tenant, rows, processor=PROCESSOR)
        result.counts.update("receipt_ok" if r.reason == "ok" else "receipt_failed" for r in rows)


def _receipt_rows(
    provider_name: str, pending: list[_Unreceipted], receipts: dict[str, Receipt], tick_id: str, now: datetime
) -> tuple[list[SendRow], list[InvalidTokenRow]]:
    rows: list[SendRow] = []
    dead: list[InvalidTokenRow] = []
    for row in pending:
        receipt = receipts.get(row["provider_message_id"])
        if receipt is None:
            continue  # not ready yet: the next tick asks again
        rows.append(SendRow(row["message_id"], row["contact_id"], "receipt", tick_id, now, provider=provider_name,
                            reason="ok" if receipt.status == "ok" else receipt.reason,
                            provider_message_id=receipt.ticket_id))
        if receipt.status == "invalid_token" and row["push_token"]:
            dead.append(InvalidTokenRow(row["contact_id"], row["push_token"], provider_name, receipt.reason or "", now))
    return rows, dead


# -- record -----------------------------------------------------------------------------------------------------------
def _write_dead(tenant: Tenant, rows: list[InvalidTokenRow]) -> None:
    if rows:
        write_rows(bigquery_client(), tenant, rows, processor=PROCESSOR)


def _write(tenant: Tenant, rows: list[SendRow], result: TickResult) -> None:
    if rows:
        write_rows(bigquery_client(), tenant, rows, processor=PROCESSOR)
        result.add(rows)

"""Campaign sends at scale: the tick fans due chunks out as shards, and each shard claims a whole group at once.

Why: a campaign to a million contacts must not depend on one function instance finishing in time, and claiming each
message with its own Cloud Storage object would cost a million writes.

- **Fan-out** (``fan_out``, in every scheduler tick): launch the campaigns whose ``launch_at`` has come, find the
  chunks (shared/campaigns/launch.py cuts a campaign's messages into chunks of up to 500 planned for the same instant)
  that have due messages, and publish them, ``SHARD_CHUNKS`` to a message, to the tenant's ``send-shards.<tenant>``
  topic. Each shard is one invocation of send_due, bounded in messages (``SHARD_CHUNKS`` chunks) and in seconds
  (``SHARD_BUDGET_S``: no group is claimed after it; what is left stays due for the next tick's shards). Shards run
  in parallel on as many instances as the platform gives; a shard delivered twice, or a chunk fanned out again by
  an overlapping tick, finds its groups claimed and sends nothing.
- **Group claims** (``run_shard``): the due messages of a chunk are grouped by (chunk, attempt, due instant): the
  attempt is the message's deferral count and the due instant its planned time or, once deferred, its retry time.
  Everything in a group's key is fixed before the group is due (a deferral always names a later time), so every
  reader of a group computes the same key, and the one create-if-absent object ``claims/groups/<key>`` decides who
  sends it, exactly as ``claims/<message>/<attempt>`` does for single messages (shared/push/claims.py). Only the
  winner decides policy, records skips and deferrals, sends and records outcomes. Claim cost: one write per group;
  a chunk sent in one go is one write per 500 sends (a group split by deferrals costs one more write per split).
  A holder that died leaves its group's unrecorded messages to be recorded ``failed / outcome_unknown`` once the
  claim is older than the lease (never resent: the module docstring of shared/push/tick.py).
"""

from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared.config import Tenant
from shared.errors import SetupError
from shared.push.claims import claim
from shared.push.fanout import SHARD_CHUNKS
from shared.push.tick import (
    CLAIM_LEASE,
    CREDENTIALS_RETRY,
    PROCESSOR,
    Candidate,
    TickResult,
    _ready_providers,
    _send,
    _write,
    candidates,
    decide,
    recent_sends,
)
from shared.runtime import get_logger
from shared.warehouse.rows import SendRow

if TYPE_CHECKING:
    from collections.abc import Callable

log = get_logger("landline.send_due")

SHARD_BUDGET_S = 300.0  # of send_due's 540 s timeout: what is left stays due for the next tick's shards
MAX_SHARD_MESSAGES = SHARD_CHUNKS * 500 * 2  # a shard's candidate limit, with room for a smaller chunk size

def parse_shard(data: bytes) -> list[str]:
    """The chunks a shard message names; ValueError when it is not one (our own messages: a bug, not data)."""
    body = json.loads(data)
    chunks = body.get("chunks") if isinstance(body, dict) else None
    if not isinstance(chunks, list) or not all(isinstance(c, str) and c for c in chunks) or not chunks:
        raise ValueError("a shard is {\"chunks\": [chunk, ...]}")
    return chunks[: SHARD_CHUNKS * 4]


def group_key(row: Candidate) -> tuple[str, int, int]:
    """(chunk, attempt, due instant in microseconds): the claim unit (module docstring)."""
    deferrals = int(row["deferrals"])
    due = row["last_retry_at"] if deferrals and row["last_retry_at"] else row["send_at"]
    micros = int(due.timestamp() * 1_000_000) if isinstance(due, datetime) else 0
    return str(row["chunk"]), deferrals, micros


def run_shard(
    tenant: Tenant,
    chunks: list[str],
    *,
    now: datetime | None = None,
    budget_s: float = SHARD_BUDGET_S,
    clock: Callable[[], float] = time.time,
) -> TickResult:
    """Send the due messages of ``chunks``, one claim per group."""
    deadline = clock() + budget_s
    now = now or datetime.now(UTC)
    tick_id = uuid.uuid4().hex[:12]
    result = TickResult(tenant.name)
    scope = "chunk IN (" + ", ".join(f"@k{i}" for i in range(len(chunks))) + ")"
    chunk_params = {f"k{i}": c for i, c in enumerate(chunks)}
    due_rows = candidates(tenant, now, MAX_SHARD_MESSAGES, scope, chunk_params)
    if not due_rows:
        return result
    groups: dict[tuple[str, int, int], list[Candidate]] = defaultdict(list)
    for row in due_rows:
        groups[group_key(row)].append(row)
    providers = _ready_providers(tenant, {row.get("provider") or tenant.push_provider or "" for row in due_rows} - {""},
                                 result)  # fmt: skip
    if result.paused is not None:
        result.counts["paused"] += len(due_rows)
        return result
    recent = recent_sends(tenant, now, scope, chunk_params)
    for key, rows in sorted(groups.items()):
        if clock() >= deadline or result.paused is not None:
            result.counts["left_for_next_tick"] += len(rows)
            continue
        if _claim_group(tenant, key, rows, tick_id, now, result):
            _send_group(tenant, rows, providers, recent, tick_id, now, deadline, result, clock)
    return result


def _claim_group(
    tenant: Tenant, key: tuple[str, int, int], rows: list[Candidate], tick_id: str, now: datetime, result: TickResult
) -> bool:
    chunk, attempt, due = key
    try:
        won = claim(tenant, f"groups/{chunk}/{due}", attempt, tick_id)
    except SetupError as exc:
        result.paused = exc
        result.counts["left_for_next_tick"] += len(rows)
        return False
    except Exception as exc:  # whether or not the object was stored: move every message to its next attempt
        log.warning("group claim failed", extra={"fields": {"tenant": tenant.name, "chunk": chunk, "error": str(exc)[:300]}})
        _write(tenant, [SendRow(r["message_id"], r["contact_id"], "deferred", tick_id, now,
                                provider=r.get("provider") or tenant.push_provider,
                                reason=f"claim_error:{type(exc).__name__}") for r in rows], result)  # fmt: skip
        return False
    if won.won:
        return True
    if won.claimed_at is not None and now - won.claimed_at > CLAIM_LEASE:
        _write(tenant, [SendRow(r["message_id"], r["contact_id"], "failed", tick_id, now,
                                provider=r.get("provider") or tenant.push_provider, reason="outcome_unknown")
                        for r in rows], result)  # fmt: skip
    else:
        result.counts["claimed_elsewhere"] += len(rows)
    return False


def _send_group(
    tenant: Tenant,
    rows: list[Candidate],
    providers: dict[str, Any],
    recent: dict[str, list[datetime]],
    tick_id: str,
    now: datetime,
    deadline: float,
    result: TickResult,
    clock: Callable[[], float],
) -> None:
    """The winner of a group: decide policy, record skips and deferrals, send the rest and record every outcome."""
    records, due = decide(tenant, rows, recent, now, tick_id)
    _write(tenant, records, result)
    by_provider: dict[str, list[Any]] = defaultdict(list)
    for item in due:
        if item.provider in providers:
            by_provider[item.provider].append(item)
        else:  # not ready (the shard checked every provider first, so this is defensive): the next attempt sends it
            _write(tenant, [SendRow(item.message_id, item.contact_id, "deferred", tick_id, now, provider=item.provider,
                                    reason="provider_not_ready", retry_at=now + CREDENTIALS_RETRY)], result)
    for name, items in by_provider.items():  # the group is claimed as one: sent as one (the provider keeps 100 in flight)
        _send(tenant, name, providers[name], items, tick_id, deadline, result, clock)


__all__ = ["PROCESSOR", "group_key", "parse_shard", "run_shard"]

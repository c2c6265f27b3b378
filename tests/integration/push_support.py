"""Helpers for push tests on the real local stack: tenants with contacts, schedules, the fakes' counters, and what a
push scenario lost or duplicated, measured from message_sends and the fake providers."""

from __future__ import annotations

import gzip
import json
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx

from tests.faults import duplicate_deliveries, fake_deliveries
from tests.stack_support import unique

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

    from tests.stack_support import StackHandle

# Outcomes after which a message is never tried again ('receipt' follows a 'sent').
FINAL = {"sent", "failed", "skipped", "receipt"}


def identify(contact: str, token: str | None, tz: str = "Europe/Paris", **traits: Any) -> dict[str, Any]:
    context: dict[str, Any] = {"timezone": tz}
    if token:
        context["device"] = {"token": token}
    return {
        "type": "identify",
        "userId": contact,
        "messageId": unique("id"),
        "timestamp": "2024-05-01T10:00:00Z",
        "traits": traits,
        "context": context,
    }


def push_tenant(stack: StackHandle, tmp: Path, contacts: list[dict[str, Any]], **options: str) -> str:
    """A tenant whose contacts arrive the way production's do: a Segment file through ingest and load."""
    options.setdefault("push_provider", "fcm")
    tenant = stack.add_tenant(**options)
    folder = tmp / unique("tree") / "segment-logs" / "app" / "1714521600000"
    folder.mkdir(parents=True)
    (folder / "users.gz").write_bytes(gzip.compress(b"".join(json.dumps(c).encode() + b"\n" for c in contacts)))
    stack.drop(tenant, folder.parents[2])
    stack.wait()
    return tenant


def quick_tenant(stack: StackHandle, contacts: dict[str, str], *, tz: str = "Europe/Paris", **options: str) -> str:
    """A tenant whose contacts (contact -> push token) are written straight into user_properties: for push scenarios,
    where ingestion is not what is tested and a drop would only cost time."""
    from shared.config import tenants
    from shared.warehouse.client import bigquery_client
    from shared.warehouse.rows import Lineage, UserPropertiesRow
    from shared.warehouse.writer import write_rows

    options.setdefault("push_provider", "fcm")
    tenant = stack.add_tenant(**options)
    tenants.cache_clear()
    now = datetime.now(UTC)
    rows = [
        UserPropertiesRow(contact, now, f"props-{contact}", Lineage("native", f"test://{tenant}", n, now),
                          timezone=tz, push_token=token)
        for n, (contact, token) in enumerate(contacts.items(), start=1)
    ]
    write_rows(bigquery_client(), tenants().get(tenant), rows, processor="test")
    return tenant


def schedule(tenant: str, messages: list[dict[str, Any]]) -> None:
    from shared.config import tenants
    from shared.push.schedule import SendRequest
    from shared.push.schedule import schedule as write_schedule

    write_schedule(tenants().get(tenant), [SendRequest.model_validate(m) for m in messages])


def fake_url(stack: StackHandle) -> str:
    return stack.stack.cfg.url("fakes")


def script(stack: StackHandle, *rules: dict[str, Any]) -> None:
    httpx.post(f"{fake_url(stack)}/_fake/script", json={"rules": list(rules)}, timeout=30).raise_for_status()


def by_token(stack: StackHandle, provider: str = "fcm") -> dict[str, int]:
    return dict(fake_deliveries(stack)[provider]["by_token"])


def sends(stack: StackHandle, tenant: str) -> dict[str, list[tuple[str, str | None]]]:
    out: dict[str, list[tuple[str, str | None]]] = {}
    for row in stack.query(tenant, "SELECT message_id, status, reason FROM message_sends ORDER BY at, status"):
        out.setdefault(row["message_id"], []).append((row["status"], row["reason"]))
    return out


def push_accounting(
    stack: StackHandle, tenant: str, message_ids: Iterable[str], tokens: Iterable[str], provider: str = "fcm"
) -> dict[str, int]:
    """``lost``: due messages without a final outcome in message_sends (a message may end ``failed`` with a reason,
    e.g. ``outcome_unknown``, but never disappear); ``deferred``: the lost ones that were deferred (they wait for a
    later tick); ``duplicated``: deliveries beyond the first per device at the
    fake provider, plus messages recorded ``sent`` more than once."""
    outcomes = sends(stack, tenant)
    ids = list(message_ids)
    sent_twice = sum(max(Counter(s for s, _ in outcomes.get(m, []))["sent"] - 1, 0) for m in ids)
    delivered = by_token(stack, provider)
    ours = {t: delivered.get(t, 0) for t in tokens}
    return {
        "lost": sum(1 for m in ids if not any(s in FINAL for s, _ in outcomes.get(m, []))),
        "deferred": sum(1 for m in ids if outcomes.get(m) and not any(s in FINAL for s, _ in outcomes[m])),
        "duplicated": duplicate_deliveries(ours) + sent_twice,
        "delivered": sum(ours.values()),
        "sent": sum(1 for m in ids if any(s == "sent" for s, _ in outcomes.get(m, []))),
        "outcome_unknown": sum(1 for m in ids if any((r or "").startswith("outcome_unknown") for _, r in
                                                     outcomes.get(m, []))),
    }


def hex_token() -> str:
    """An APNs-shaped device token (the fake APNs refuses anything but hex)."""
    return uuid.uuid4().hex + uuid.uuid4().hex

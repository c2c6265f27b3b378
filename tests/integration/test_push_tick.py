"""Issue 5 through the real stack: scheduled pushes sent by send_due to the fake FCM, exactly once per message,
with quiet hours and frequency caps applied; the fake counts every accepted send."""

from __future__ import annotations

import gzip
import json
import os
import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.stack_support import unique

if TYPE_CHECKING:
    from pathlib import Path

    from tests.stack_support import StackHandle

pytestmark = pytest.mark.stack


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
    tenant = stack.add_tenant(push_provider="fcm", **options)
    folder = tmp / unique("tree") / "segment-logs" / "app" / "1714521600000"
    folder.mkdir(parents=True)
    (folder / "users.gz").write_bytes(gzip.compress(b"".join(json.dumps(c).encode() + b"\n" for c in contacts)))
    stack.drop(tenant, folder.parents[2])
    stack.wait()
    return tenant


def schedule(tenant: str, messages: list[dict[str, Any]]) -> None:
    from shared.config import tenants
    from shared.push.schedule import SendRequest
    from shared.push.schedule import schedule as write_schedule

    write_schedule(tenants().get(tenant), [SendRequest.model_validate(m) for m in messages])


def fcm_by_token(stack: StackHandle) -> dict[str, int]:
    stats = httpx.get(f"{stack.stack.cfg.url('fakes')}/_fake/stats", timeout=10).json()
    return dict(stats["fcm"]["by_token"])


def sends(stack: StackHandle, tenant: str) -> dict[str, list[tuple[str, str | None]]]:
    out: dict[str, list[tuple[str, str | None]]] = {}
    for row in stack.query(tenant, "SELECT message_id, status, reason FROM message_sends ORDER BY at"):
        out.setdefault(row["message_id"], []).append((row["status"], row["reason"]))
    return out


def test_due_pushes_are_sent_once_and_skips_say_why(local_stack: StackHandle, tmp_path: Path) -> None:
    # GIVEN contacts with tokens, one without, one opted out, and one message scheduled for later
    run = unique("p")
    tenant = push_tenant(
        local_stack,
        tmp_path,
        [
            identify(f"{run}-a", f"{run}-tok-a"),
            identify(f"{run}-b", f"{run}-tok-b"),
            identify(f"{run}-c", None),
            identify(f"{run}-d", f"{run}-tok-d", push_opt_out=True),
            identify(f"{run}-e", f"dead-{run}-tok-e"),
        ],
    )
    later = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    schedule(
        tenant,
        [
            {"message_id": f"{run}-m{x}", "contact_id": f"{run}-{x}", "title": "Hi", "body": "There"}
            for x in "abcde"
        ]
        + [{"message_id": f"{run}-later", "contact_id": f"{run}-a", "title": "Later", "body": "x", "send_at": later}],
    )
    # WHEN the scheduler ticks
    local_stack.cli("tick", "--tenant", tenant)
    local_stack.wait()
    # THEN due messages went out once each, the others were skipped with a reason, the later one waits
    by_token = fcm_by_token(local_stack)
    assert by_token.get(f"{run}-tok-a") == 1
    assert by_token.get(f"{run}-tok-b") == 1
    assert f"{run}-tok-d" not in by_token
    outcomes = sends(local_stack, tenant)
    assert outcomes[f"{run}-ma"] == [("sent", None)]
    assert outcomes[f"{run}-mc"] == [("skipped", "no_token")]
    assert outcomes[f"{run}-md"] == [("skipped", "opted_out")]
    assert outcomes[f"{run}-me"][0][0] == "failed" and "UNREGISTERED" in (outcomes[f"{run}-me"][0][1] or "")
    assert f"{run}-later" not in outcomes
    dead = local_stack.query(tenant, "SELECT contact_id, push_token FROM invalid_tokens")
    assert dead == [{"contact_id": f"{run}-e", "push_token": f"dead-{run}-tok-e"}]

    # AND a second tick sends nothing again, and the dead token is not used for a new message
    schedule(tenant, [{"message_id": f"{run}-me2", "contact_id": f"{run}-e", "title": "Again", "body": "x"}])
    local_stack.cli("tick", "--tenant", tenant)
    local_stack.wait()
    assert fcm_by_token(local_stack).get(f"{run}-tok-a") == 1
    assert sends(local_stack, tenant)[f"{run}-me2"] == [("skipped", "token_invalid")]


def test_two_ticks_at_once_send_each_message_exactly_once(local_stack: StackHandle, tmp_path: Path) -> None:
    # GIVEN 60 contacts, one due message each
    run = unique("c")
    contacts = [identify(f"{run}-{i}", f"{run}-tok-{i}") for i in range(60)]
    tenant = push_tenant(local_stack, tmp_path, contacts)
    schedule(tenant, [{"message_id": f"{run}-m{i}", "contact_id": f"{run}-{i}", "title": "T", "body": "B"}
                      for i in range(60)])
    # WHEN two ticks run at the same time: one in the deployed function, one in a second process (this test's)
    from shared.config import tenants
    from shared.push.tick import run_tick

    results: list[Any] = []
    second = threading.Thread(target=lambda: results.append(run_tick(tenants().get(tenant))))
    local_stack.cli("tick", "--tenant", tenant)
    second.start()
    local_stack.cli("tick", "--tenant", tenant)
    second.join(timeout=300)
    local_stack.wait()
    # THEN the fake got every message exactly once, and each has exactly one "sent" outcome
    by_token = fcm_by_token(local_stack)
    assert [by_token.get(f"{run}-tok-{i}") for i in range(60)] == [1] * 60
    outcomes = sends(local_stack, tenant)
    assert all(outcomes[f"{run}-m{i}"] == [("sent", None)] for i in range(60))


def test_tick_repeated_after_a_crash_never_sends_twice(local_stack: StackHandle, tmp_path: Path) -> None:
    # GIVEN 400 due messages to 400 contacts
    run = unique("k")
    n = 400
    tenant = push_tenant(local_stack, tmp_path, [identify(f"{run}-{i}", f"{run}-tok-{i}") for i in range(n)])
    schedule(tenant, [{"message_id": f"{run}-m{i}", "contact_id": f"{run}-{i}", "title": "T", "body": "B"}
                      for i in range(n)])
    stack = local_stack.stack
    # WHEN the send_due instance dies in the middle of its tick
    local_stack.cli("tick", "--tenant", tenant)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(k.startswith(run) for k in fcm_by_token(local_stack)):
        time.sleep(0.01)
    pid = stack.pid("send_due")
    assert pid
    os.killpg(pid, signal.SIGKILL)
    stack.up(timeout=90)  # a new instance; Pub/Sub redelivers the tick, and the scheduler ticks again
    local_stack.wait(timeout=300)
    local_stack.cli("tick", "--tenant", tenant)
    local_stack.wait(timeout=300)
    # THEN no message reached the provider twice, and every message outside the chunk in flight at the crash was sent
    # once and recorded; the in-flight chunk keeps its claims and is never resent blindly (at most once: an unrecorded
    # claim becomes failed/outcome_unknown after the lease, see test_abandoned_claim_...)
    from shared.push.tick import SEND_CHUNK

    by_token = {k: v for k, v in fcm_by_token(local_stack).items() if k.startswith(run)}
    assert max(by_token.values()) == 1
    outcomes = sends(local_stack, tenant)
    sent = {m.rsplit("-m", 1)[1] for m, o in outcomes.items() if ("sent", None) in o}
    delivered = {t.rsplit("-tok-", 1)[1] for t in by_token}
    assert sent <= delivered
    assert len(delivered) >= n - SEND_CHUNK
    assert len(delivered - sent) <= SEND_CHUNK


def test_abandoned_claim_is_recorded_as_outcome_unknown_not_resent(local_stack: StackHandle, tmp_path: Path) -> None:
    # GIVEN a message whose claim was taken by an instance that then died without recording anything
    run = unique("a")
    tenant = push_tenant(local_stack, tmp_path, [identify(f"{run}-x", f"{run}-tok-x")])
    schedule(tenant, [{"message_id": f"{run}-m", "contact_id": f"{run}-x", "title": "T", "body": "B"}])
    from shared.config import tenants
    from shared.push.claims import claim
    from shared.push.tick import run_tick

    assert claim(tenants().get(tenant), f"{run}-m", 0, "dead-instance").won
    # WHEN a later tick finds it after the lease
    result = run_tick(tenants().get(tenant), now=datetime.now(UTC) + timedelta(hours=1))
    # THEN it is recorded once as failed/outcome_unknown and the provider never sees it
    assert result.counts["failed"] == 1
    assert sends(local_stack, tenant)[f"{run}-m"] == [("failed", "outcome_unknown")]
    assert f"{run}-tok-x" not in fcm_by_token(local_stack)


def test_quiet_hours_defer_to_the_next_allowed_window(local_stack: StackHandle, tmp_path: Path) -> None:
    # GIVEN a tenant whose quiet hours cover "now" in the contact's timezone
    run = unique("q")
    tz = "Asia/Tokyo"
    local_now = datetime.now(ZoneInfo(tz))
    start = (local_now - timedelta(hours=1)).strftime("%H:%M")
    end = (local_now + timedelta(hours=2)).strftime("%H:%M")
    tenant = push_tenant(local_stack, tmp_path, [identify(f"{run}-x", f"{run}-tok-x", tz=tz)],
                         quiet_hours=f"{start}-{end}")
    schedule(tenant, [{"message_id": f"{run}-m", "contact_id": f"{run}-x", "title": "T", "body": "B"}])
    # WHEN the scheduler ticks
    local_stack.cli("tick", "--tenant", tenant)
    local_stack.wait()
    # THEN nothing is sent; the message is deferred until the quiet hours end in Tokyo
    assert f"{run}-tok-x" not in fcm_by_token(local_stack)
    [row] = local_stack.query(tenant, "SELECT status, reason, retry_at FROM message_sends")
    assert (row["status"], row["reason"]) == ("deferred", "quiet_hours")
    retry_at = datetime.fromisoformat(row["retry_at"]).astimezone(ZoneInfo(tz))
    assert retry_at.strftime("%H:%M") == end
    assert timedelta(hours=1) < retry_at - local_now <= timedelta(hours=2)


def test_frequency_cap_defers_what_exceeds_it(local_stack: StackHandle, tmp_path: Path) -> None:
    # GIVEN a cap of 2 pushes per contact per day and 3 due messages for one contact
    run = unique("f")
    tenant = push_tenant(local_stack, tmp_path, [identify(f"{run}-x", f"{run}-tok-x")], frequency_cap="2")
    schedule(tenant, [{"message_id": f"{run}-m{i}", "contact_id": f"{run}-x", "title": "T", "body": "B",
                       "send_at": (datetime.now(UTC) - timedelta(minutes=3 - i)).isoformat()} for i in range(3)])
    # WHEN the scheduler ticks twice
    for _ in range(2):
        local_stack.cli("tick", "--tenant", tenant)
        local_stack.wait()
    # THEN two are sent and the third is deferred by the cap (until a day after the first send), on both ticks
    assert fcm_by_token(local_stack).get(f"{run}-tok-x") == 2
    outcomes = sends(local_stack, tenant)
    assert outcomes[f"{run}-m0"] == [("sent", None)]
    assert outcomes[f"{run}-m1"] == [("sent", None)]
    assert set(outcomes[f"{run}-m2"]) == {("deferred", "frequency_cap")}


def test_send_requests_published_to_the_topic_land_in_the_schedule(local_stack: StackHandle, tmp_path: Path) -> None:
    # GIVEN a publisher that sends two push requests (one valid, one missing its title) to `send-requests`
    from google.cloud import pubsub_v1

    run = unique("s")
    tenant = push_tenant(local_stack, tmp_path, [identify(f"{run}-x", f"{run}-tok-x")])
    os.environ["PUBSUB_EMULATOR_HOST"] = local_stack.env["PUBSUB_EMULATOR_HOST"]
    publisher = pubsub_v1.PublisherClient()
    topic = publisher.topic_path(local_stack.stack.cfg.project, "send-requests")
    good = {"message_id": f"{run}-ok", "contact_id": f"{run}-x", "title": "Hello", "body": "From a publisher",
            "data": {"screen": "home"}}
    bad = {"message_id": f"{run}-bad", "contact_id": f"{run}-x", "body": "no title"}
    payload = (json.dumps(good) + "\n" + json.dumps(bad)).encode()
    # WHEN they are published and the scheduler ticks
    publisher.publish(topic, payload, tenant=tenant).result(timeout=30)
    local_stack.wait()
    local_stack.cli("tick", "--tenant", tenant)
    local_stack.wait()
    # THEN the valid one is scheduled and sent, the invalid one is rejected with the field that is wrong
    assert local_stack.query(tenant, "SELECT message_id FROM message_schedule") == [{"message_id": f"{run}-ok"}]
    assert fcm_by_token(local_stack).get(f"{run}-tok-x") == 1
    [rejected] = local_stack.query(tenant, "SELECT reason_code, message FROM rejected")
    assert rejected["reason_code"] == "invalid_send_request"
    assert "title" in rejected["message"]


def test_expo_receipts_are_polled_on_the_next_tick(local_stack: StackHandle, tmp_path: Path) -> None:
    # GIVEN an Expo tenant and a device whose delivery fails downstream (only the receipt tells)
    run = unique("e")
    ok_token, gone_token = f"ExponentPushToken[{run}-ok]", f"ExponentPushToken[{run}-gone]"
    tenant = push_tenant(local_stack, tmp_path, [identify(f"{run}-a", ok_token), identify(f"{run}-b", gone_token)])
    from infra.local.push_setup import setup_local_push
    from shared.config import tenants

    registry = local_stack.stack.cfg.paths.tenants
    data = json.loads(registry.read_text())
    data[tenant]["push_provider"] = "expo"
    registry.write_text(json.dumps(data))
    tenants.cache_clear()
    setup_local_push(local_stack.stack.cfg, tenant, "expo")
    httpx.post(f"{local_stack.stack.cfg.url('fakes')}/_fake/script",
               json={"rules": [{"provider": "expo", "token": gone_token, "receipt_error": "DeviceNotRegistered"}]},
               timeout=10).raise_for_status()
    schedule(tenant, [{"message_id": f"{run}-m{x}", "contact_id": f"{run}-{x}", "title": "T", "body": "B"}
                      for x in "ab"])
    # WHEN the scheduler ticks (tickets) and ticks again (receipts)
    for _ in range(2):
        local_stack.cli("tick", "--tenant", tenant)
        local_stack.wait()
    # THEN both were sent; the receipt of the second reports the dead device, whose token is now invalid
    outcomes = sends(local_stack, tenant)
    assert outcomes[f"{run}-ma"] == [("sent", None), ("sent", "receipt_ok")]
    assert outcomes[f"{run}-mb"] == [("sent", None), ("failed", "receipt:DeviceNotRegistered")]
    assert local_stack.query(tenant, "SELECT push_token FROM invalid_tokens") == [{"push_token": gone_token}]

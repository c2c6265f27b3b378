"""Issue 5 through the real stack: scheduled pushes sent by send_due to the fake FCM, exactly once per message,
with quiet hours and frequency caps applied; the fake counts every accepted send."""

from __future__ import annotations

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

from tests.integration.push_support import (
    by_token,
    identify,
    push_accounting,
    push_tenant,
    schedule,
    sends,
)
from tests.stack_support import unique

if TYPE_CHECKING:
    from pathlib import Path

    from tests.faults import Fault
    from tests.stack_support import StackHandle

pytestmark = pytest.mark.stack


def fcm_by_token(stack: StackHandle) -> dict[str, int]:
    return by_token(stack, "fcm")


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


@pytest.mark.scenario("Two ticks at once", injected="a second tick of the same tenant in another process, concurrently",
                      findings=[])
def test_two_ticks_at_once_send_each_message_exactly_once(local_stack: StackHandle, tmp_path: Path,
                                                          fault: Fault) -> None:
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
    delivered = fcm_by_token(local_stack)
    assert [delivered.get(f"{run}-tok-{i}") for i in range(60)] == [1] * 60
    outcomes = sends(local_stack, tenant)
    assert all(outcomes[f"{run}-m{i}"] == [("sent", None)] for i in range(60))
    measured = push_accounting(local_stack, tenant, [f"{run}-m{i}" for i in range(60)],
                               [f"{run}-tok-{i}" for i in range(60)])
    fault.report("each of 60 messages claimed by exactly one tick and delivered once", **measured)


@pytest.mark.scenario("send_due killed mid-tick", injected="SIGKILL of the send_due process while a chunk is in flight",
                      findings=[])
def test_tick_repeated_after_a_crash_never_sends_twice(local_stack: StackHandle, tmp_path: Path,
                                                       fault: Fault) -> None:
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

    delivered_by_token = {k: v for k, v in fcm_by_token(local_stack).items() if k.startswith(run)}
    assert max(delivered_by_token.values()) == 1
    outcomes = sends(local_stack, tenant)
    sent = {m.rsplit("-m", 1)[1] for m, o in outcomes.items() if ("sent", None) in o}
    delivered = {t.rsplit("-tok-", 1)[1] for t in delivered_by_token}
    assert sent <= delivered
    assert len(delivered) >= n - SEND_CHUNK
    assert len(delivered - sent) <= SEND_CHUNK
    # AND once the lease has passed, the claims the dead instance left are recorded as unknown: every message has a
    # final outcome, none was sent twice
    from shared.config import tenants
    from shared.push.tick import run_tick

    run_tick(tenants().get(tenant), now=datetime.now(UTC) + timedelta(hours=1))
    measured = push_accounting(local_stack, tenant, [f"{run}-m{i}" for i in range(n)],
                               [f"{run}-tok-{i}" for i in range(n)])
    fault.report(f"{measured['sent']} sent once; {measured['outcome_unknown']} claimed by the killed instance "
                 "recorded failed/outcome_unknown after the lease, never resent", **measured)


@pytest.mark.scenario("Abandoned claim", injected="a claim taken by an instance that died before recording anything",
                      findings=[])
def test_abandoned_claim_is_recorded_as_outcome_unknown_not_resent(local_stack: StackHandle, tmp_path: Path,
                                                                   fault: Fault) -> None:
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
    fault.report("recorded failed/outcome_unknown after the 15 min lease; the provider never saw it twice",
                 **push_accounting(local_stack, tenant, [f"{run}-m"], [f"{run}-tok-x"]))


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
    # GIVEN a publisher that sends two push requests (one valid, one missing its title) to the tenant's own topic
    from google.cloud import pubsub_v1

    from shared.config import tenant_topic

    run = unique("s")
    tenant = push_tenant(local_stack, tmp_path, [identify(f"{run}-x", f"{run}-tok-x")])
    os.environ["PUBSUB_EMULATOR_HOST"] = local_stack.env["PUBSUB_EMULATOR_HOST"]
    publisher = pubsub_v1.PublisherClient()
    topic = publisher.topic_path(local_stack.stack.cfg.project, tenant_topic("send-requests", tenant))
    good = {"message_id": f"{run}-ok", "contact_id": f"{run}-x", "title": "Hello", "body": "From a publisher",
            "data": {"screen": "home"}}
    bad = {"message_id": f"{run}-bad", "contact_id": f"{run}-x", "body": "no title"}
    payload = (json.dumps(good) + "\n" + json.dumps(bad)).encode()
    # WHEN they are published and the scheduler ticks
    publisher.publish(topic, payload).result(timeout=30)
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
    # THEN both were sent; each receipt is its own status (never a second "sent", never "failed" beside the "sent");
    # the receipt of the second reports the dead device, whose token is now invalid
    outcomes = sends(local_stack, tenant)
    assert outcomes[f"{run}-ma"] == [("sent", None), ("receipt", "ok")]
    assert outcomes[f"{run}-mb"] == [("sent", None), ("receipt", "DeviceNotRegistered")]
    assert local_stack.query(tenant, "SELECT push_token FROM invalid_tokens") == [{"push_token": gone_token}]
    stats = {r["status"]: r["n"] for r in local_stack.query(
        tenant, "SELECT status, COUNT(DISTINCT message_id) AS n FROM message_sends GROUP BY status")}
    assert stats.get("sent") == 2 and "failed" not in stats

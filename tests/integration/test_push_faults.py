"""Push sending under faults, through the real local stack (Pub/Sub, Cloud Storage claims, BigQuery, the provider
fakes): what each fault costs, measured as due messages without a final outcome (lost) and deliveries beyond the
first per device at the fake provider (duplicated).

Ticks go through the deployed send_due (``landline tick``) unless a test needs a knob only a library call has (a
shorter request timeout, a tick budget of seconds, an injected lost response): those run ``run_tick``/``run_ticks``
in this process against the same stack.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.integration.push_support import (
    by_token,
    hex_token,
    push_accounting,
    quick_tenant,
    schedule,
    script,
    sends,
)
from tests.stack_support import unique

if TYPE_CHECKING:
    from tests.faults import Fault
    from tests.stack_support import StackHandle

pytestmark = pytest.mark.stack


def messages(run: str, contacts: list[str], **fields: Any) -> list[dict[str, Any]]:
    return [{"message_id": f"{run}-m{i}", "contact_id": c, "title": "T", "body": "B", **fields}
            for i, c in enumerate(contacts)]


def tenant_of(name: str) -> Any:
    from shared.config import tenants

    tenants.cache_clear()
    return tenants().get(name)


def setup_errors(stack: StackHandle, tenant: str) -> list[dict[str, Any]]:
    """send_due's structured setup-error log entries for ``tenant`` (message = the problem, fix = what to do)."""
    entries = []
    for line in (stack.stack.cfg.paths.logs / "send_due.log").read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("error_class") == "setup" and entry.get("tenant") == tenant:
            entries.append(entry)
    return entries


# -- blast radius ---------------------------------------------------------------------------------------------------


@pytest.mark.scenario("One tenant's missing secret or bad key beside a healthy tenant",
                      injected="an empty FCM secret for one tenant and an APNs key that cannot sign for another, "
                               "ticked in one invocation with a healthy tenant",
                      findings=[2, 8])
def test_a_broken_tenant_never_blocks_a_healthy_one(local_stack: StackHandle, fault: Fault) -> None:
    from infra.local.secrets_file import read_local_secrets, write_local_secret

    cfg = local_stack.stack.cfg
    run = unique("iso")
    healthy_tokens = {f"{run}-h{i}": f"{run}-tok-h{i}" for i in range(3)}
    nosecret_tokens = {f"{run}-n{i}": f"{run}-tok-n{i}" for i in range(2)}
    badkey_tokens = {f"{run}-b{i}": hex_token() for i in range(2)}
    healthy = quick_tenant(local_stack, healthy_tokens)
    nosecret = quick_tenant(local_stack, nosecret_tokens)
    badkey = quick_tenant(local_stack, badkey_tokens, push_provider="apns")
    for tenant, contacts in ((healthy, healthy_tokens), (nosecret, nosecret_tokens), (badkey, badkey_tokens)):
        schedule(tenant, messages(f"{run}-{tenant}", list(contacts)))
    # GIVEN one tenant whose secret exists but is empty (as Terraform creates it) and one whose key cannot sign
    saved = {nosecret: read_local_secrets(cfg, nosecret)["fcm"], badkey: read_local_secrets(cfg, badkey)["apns"]}
    write_local_secret(cfg, nosecret, "fcm", {})
    write_local_secret(cfg, badkey, "apns", {**saved[badkey], "private_key": "-----BEGIN PRIVATE KEY-----\nnope\n"
                                                                              "-----END PRIVATE KEY-----\n"})
    # WHEN one scheduler tick covers the three tenants
    local_stack.cli("tick", "--tenant", f"{nosecret},{badkey},{healthy}")
    local_stack.wait()
    # THEN the healthy tenant sent everything once; the broken ones claimed nothing and recorded nothing (their
    # messages stay due), and the log names each problem and its fix
    assert set(by_token(local_stack, "fcm")) >= set(healthy_tokens.values())
    assert all(o == [("sent", None)] for o in sends(local_stack, healthy).values())
    assert sends(local_stack, nosecret) == {} and sends(local_stack, badkey) == {}
    [missing] = setup_errors(local_stack, nosecret)
    assert "fcm credentials lack service_account" in missing["message"] and "add it to" in missing["fix"]
    [refused] = setup_errors(local_stack, badkey)
    assert f"apns refused the credentials or configuration of tenant {badkey!r}" in refused["message"]
    assert f'"{badkey}": {{"apns": ...}}' in refused["fix"]
    # AND once the secrets are fixed, the next tick sends the broken tenants' messages, once
    write_local_secret(cfg, nosecret, "fcm", saved[nosecret])
    write_local_secret(cfg, badkey, "apns", saved[badkey])
    local_stack.cli("tick", "--tenant", f"{nosecret},{badkey},{healthy}")
    local_stack.wait()
    lost = dup = 0
    for tenant, contacts, provider in ((healthy, healthy_tokens, "fcm"), (nosecret, nosecret_tokens, "fcm"),
                                       (badkey, badkey_tokens, "apns")):
        ids = [m["message_id"] for m in messages(f"{run}-{tenant}", list(contacts))]
        measured = push_accounting(local_stack, tenant, ids, contacts.values(), provider)
        assert measured["sent"] == len(ids), (tenant, measured)
        lost += measured["lost"]
        dup += measured["duplicated"]
    fault.report("the healthy tenant sent in the same tick; the broken tenants were paused with a logged fix, "
                 "claimed nothing, and sent everything once on the first tick after the fix", lost=lost, duplicated=dup)


@pytest.mark.scenario("Bad schedule rows", injected="schedule rows with local_send_time 2024-13-45T99:99 and "
                      "message ids holding a newline and a slash, written beside good rows", findings=[2])
def test_bad_schedule_rows_fail_alone(local_stack: StackHandle, fault: Fault) -> None:
    from shared.warehouse.client import bigquery_client
    from shared.warehouse.rows import ScheduleRow
    from shared.warehouse.writer import write_rows

    run = unique("row")
    tokens = {f"{run}-c{i}": f"{run}-tok-{i}" for i in range(5)}
    tenant = quick_tenant(local_stack, tokens)
    now = datetime.now(UTC)
    # GIVEN rows written by an older version or another writer, bypassing today's request validation
    bad = [
        ScheduleRow(f"{run}-badtime", f"{run}-c0", "T", "B", now, local_send_time="2024-13-45T99:99"),
        ScheduleRow(f"{run}-bad\nid", f"{run}-c1", "T", "B", now, send_at=now),
        ScheduleRow(f"{run}-bad/id", f"{run}-c2", "T", "B", now, send_at=now),
    ]
    good = [ScheduleRow(f"{run}-good{i}", f"{run}-c{i}", "T", "B", now, send_at=now) for i in (3, 4)]
    write_rows(bigquery_client(), tenant_of(tenant), [*bad, *good], processor="test")
    # WHEN the scheduler ticks
    local_stack.cli("tick", "--tenant", tenant)
    local_stack.wait()
    # THEN each bad row is failed with its reason, and the good ones were sent once
    outcomes = sends(local_stack, tenant)
    assert outcomes[f"{run}-badtime"] == [("failed", "invalid_local_send_time")]
    assert outcomes[f"{run}-bad\nid"] == [("failed", "invalid_message_id")]
    assert outcomes[f"{run}-bad/id"] == [("failed", "invalid_message_id")]
    ids = [r.message_id for r in [*bad, *good]]
    measured = push_accounting(local_stack, tenant, ids, [tokens[f"{run}-c3"], tokens[f"{run}-c4"]])
    assert measured["sent"] == 2
    fault.report("each bad row recorded failed with its reason; the good rows sent once in the same tick", **measured)


@pytest.mark.scenario("More than 5,000 future local-time messages",
                      injected="5,001 local-time messages for next week and 20 for later today, beside one due "
                               "UTC message and one due local-time message", findings=[3])
def test_future_local_time_messages_never_starve_due_ones(local_stack: StackHandle, fault: Fault) -> None:
    from shared.warehouse.client import bigquery_client
    from shared.warehouse.rows import ScheduleRow
    from shared.warehouse.writer import write_rows

    run = unique("lt")
    tokens = {f"{run}-due": f"{run}-tok-due", f"{run}-local": f"{run}-tok-local", f"{run}-later": f"{run}-tok-l"}
    tenant = quick_tenant(local_stack, tokens, tz="Europe/Paris")
    now = datetime.now(UTC)
    # GIVEN 5,001 messages at a local time next week, 20 at a local time later today (within 14 h, not yet due in
    # Paris), one UTC message due a minute ago and one local-time message due an hour ago in Paris
    week = (now + timedelta(days=7)).strftime("%Y-%m-%dT%H:%M")
    later = (now + timedelta(hours=10)).strftime("%Y-%m-%dT%H:%M")
    paris_past = now.astimezone(ZoneInfo("Europe/Paris")) - timedelta(hours=1)
    rows = [ScheduleRow(f"{run}-w{i:05d}", f"{run}-later", "T", "B", now, local_send_time=week) for i in range(5001)]
    rows += [ScheduleRow(f"{run}-t{i:02d}", f"{run}-later", "T", "B", now, local_send_time=later) for i in range(20)]
    rows += [
        ScheduleRow(f"{run}-due", f"{run}-due", "T", "B", now, send_at=now - timedelta(minutes=1)),
        ScheduleRow(f"{run}-local", f"{run}-local", "T", "B", now,
                    local_send_time=paris_past.strftime("%Y-%m-%dT%H:%M")),
    ]
    write_rows(bigquery_client(), tenant_of(tenant), rows, processor="test")
    # WHEN the scheduler ticks
    local_stack.cli("tick", "--tenant", tenant)
    local_stack.wait()
    # THEN both due messages were sent; nothing of the future ones was sent or recorded
    outcomes = sends(local_stack, tenant)
    assert outcomes == {f"{run}-due": [("sent", None)], f"{run}-local": [("sent", None)]}
    measured = push_accounting(local_stack, tenant, [f"{run}-due", f"{run}-local"],
                               [f"{run}-tok-due", f"{run}-tok-local", f"{run}-tok-l"])
    fault.report("both due messages sent in the first tick; the 5,021 future ones were neither sent nor recorded",
                 **measured)


@pytest.mark.scenario("Multi-tenant tick longer than the budget",
                      injected="two tenants of 150 due messages each, a provider answering every send after 2.5 s, "
                               "and a 2 s budget for the invocation", findings=[9])
def test_one_deadline_for_all_tenants_of_an_invocation(local_stack: StackHandle, fault: Fault) -> None:
    from shared.push.tick import SEND_CHUNK, run_ticks

    run = unique("bud")
    tokens = {name: {f"{run}-{name}-{i}": f"{run}-{name}-tok-{i}" for i in range(150)} for name in ("a", "b")}
    names = {key: quick_tenant(local_stack, contacts) for key, contacts in tokens.items()}
    for key, tenant in names.items():
        schedule(tenant, messages(f"{run}-{key}", list(tokens[key])))
    # GIVEN a provider that takes 2.5 s to answer each of these sends
    script(local_stack, *({"provider": "fcm", "token": t, "delay": 2.5} for c in tokens.values() for t in c.values()))
    selected = [tenant_of(n) for n in names.values()]
    # WHEN one invocation with a 2 s budget ticks both tenants
    first = run_ticks(selected, budget_s=2)
    delivered_first = sum(by_token(local_stack).get(t, 0) for c in tokens.values() for t in c.values())
    # THEN it stopped at the shared deadline: at most the one chunk that had started was sent, whatever tenant went
    # first; the rest was left due for the next ticks
    assert delivered_first <= SEND_CHUNK, first
    assert any(r.get("left_for_next_tick") for r in first.values()), first
    # AND the following ticks send the rest, each message once
    for _ in range(6):
        run_ticks(selected, budget_s=60)
        outcomes = {k: sends(local_stack, n) for k, n in names.items()}
        if all(len(outcomes[k]) == 150 for k in names):
            break
    lost = dup = 0
    for key, tenant in names.items():
        ids = [m["message_id"] for m in messages(f"{run}-{key}", list(tokens[key]))]
        measured = push_accounting(local_stack, tenant, ids, tokens[key].values())
        lost += measured["lost"]
        dup += measured["duplicated"]
    fault.report(f"the first invocation stopped at the shared deadline after {delivered_first} sends (at most one "
                 "chunk); later ticks sent the rest once", lost=lost, duplicated=dup)


# -- ambiguous sends, claims, credentials ---------------------------------------------------------------------------


@pytest.mark.scenario("Provider timeout after send", injected="the provider accepts a message and answers only "
                      "after the client's timeout", findings=[6])
def test_a_timeout_after_the_provider_accepted_never_sends_twice(local_stack: StackHandle, fault: Fault,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.push import tick

    run = unique("to")
    tokens = {f"{run}-c{i}": f"{run}-tok-{i}" for i in range(3)}
    tenant = quick_tenant(local_stack, tokens)
    schedule(tenant, messages(run, list(tokens)))
    # GIVEN the provider accepts the first contact's message but answers after the 1 s request timeout
    script(local_stack, {"provider": "fcm", "token": f"{run}-tok-0", "delay": 4})
    monkeypatch.setattr(tick, "REQUEST_TIMEOUT_S", 1.0)
    # WHEN the tenant ticks, and ticks again
    tick.run_tick(tenant_of(tenant))
    local_stack.cli("tick", "--tenant", tenant)
    local_stack.wait()
    # THEN the ambiguous one is recorded failed/outcome_unknown and never resent; the others were sent
    outcomes = sends(local_stack, tenant)
    assert outcomes[f"{run}-m0"] == [("failed", "outcome_unknown:RequestTimeout")]
    measured = push_accounting(local_stack, tenant, [f"{run}-m{i}" for i in range(3)], tokens.values())
    assert by_token(local_stack)[f"{run}-tok-0"] == 1
    fault.report("the timed-out send is recorded failed/outcome_unknown, delivered once by the provider, never "
                 "resent; the others sent", **measured)


@pytest.mark.scenario("Claim upload retried after a lost response",
                      injected="the claim object is stored but its HTTP response is lost, so the storage client "
                               "retries the create and gets 412 on its own claim", findings=[7])
def test_a_claim_retried_after_a_lost_response_is_ours(local_stack: StackHandle, fault: Fault,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import requests

    from shared.clients import storage_client
    from shared.push.tick import run_tick

    run = unique("lr")
    tenant = quick_tenant(local_stack, {f"{run}-c": f"{run}-tok"})
    schedule(tenant, messages(run, [f"{run}-c"]))
    # GIVEN the first create of this message's claim reaches Cloud Storage, but its answer is lost
    session = storage_client()._http
    real = session.request
    lost: list[str] = []

    def request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        data = kwargs.get("data")
        if method == "POST" and not lost and isinstance(data, bytes) and f"claims/{run}-m0/".encode() in data:
            real(method, url, *args, **kwargs)
            lost.append(url)
            raise requests.exceptions.ConnectionError("connection reset after the object was stored")
        return real(method, url, *args, **kwargs)

    monkeypatch.setattr(session, "request", request)
    # WHEN the tenant ticks
    result = run_tick(tenant_of(tenant))
    # THEN the client retried, met its own claim (412), took it as won, and the message was sent once
    assert lost, "the lost response was not injected"
    assert sends(local_stack, tenant) == {f"{run}-m0": [("sent", None)]}, dict(result.counts)
    fault.report("the retried create met our own claim (412), which counts as won: sent once",
                 **push_accounting(local_stack, tenant, [f"{run}-m0"], [f"{run}-tok"]))


@pytest.mark.scenario("Invalid credentials", injected="APNs answers 403 InvalidProviderToken for every send of a "
                      "tenant with 150 due messages, until the key is fixed", findings=[8])
def test_refused_credentials_defer_and_pause_instead_of_failing(local_stack: StackHandle, fault: Fault) -> None:
    # Both ticks run in this process: APNs (and its fake) refuse a second provider token for the same team within
    # 20 minutes, and this process keeps the one it signed.
    from shared.push.tick import SEND_CHUNK, run_tick, run_ticks

    run = unique("cr")
    tokens = {f"{run}-c{i}": hex_token() for i in range(150)}
    tenant = quick_tenant(local_stack, tokens, push_provider="apns")
    schedule(tenant, messages(run, list(tokens)))
    ids = [f"{run}-m{i}" for i in range(150)]
    # GIVEN APNs refusing the tenant's provider token
    script(local_stack, *({"provider": "apns", "token": t, "error": "InvalidProviderToken"} for t in tokens.values()))
    # WHEN the scheduler ticks
    result = run_ticks([tenant_of(tenant)])[tenant]
    # THEN the first chunk is deferred (not failed) with the reason, nothing more was claimed, and the tick reports a
    # setup error that says how to fix it
    outcomes = sends(local_stack, tenant)
    assert len(outcomes) == SEND_CHUNK
    assert {tuple(o) for o in outcomes.values()} == {(("deferred", "credentials:InvalidProviderToken"),)}
    assert result["error"] == "setup" and f'"{tenant}": {{"apns": ...}}' in result["fix"]
    # AND after the fix (APNs accepts the key again), the next ticks send every message once
    httpx.post(f"{local_stack.stack.cfg.url('fakes')}/_fake/script", json={"clear": True}, timeout=10)
    later = datetime.now(UTC) + timedelta(minutes=10)
    run_tick(tenant_of(tenant), now=later)
    measured = push_accounting(local_stack, tenant, ids, tokens.values(), "apns")
    fault.report(f"{SEND_CHUNK} in flight deferred as credentials:InvalidProviderToken, the rest never claimed; all "
                 "150 sent once after the fix", **{**measured, "lost": len(ids) - measured["sent"]})


@pytest.mark.scenario("Huge Retry-After", injected="a 503 with Retry-After: 1e400 for one message", findings=[20])
def test_an_absurd_retry_after_defers_at_most_a_day(local_stack: StackHandle, fault: Fault) -> None:
    from shared.push.tick import run_tick

    run = unique("ra")
    tokens = {f"{run}-c{i}": f"{run}-tok-{i}" for i in range(3)}
    tenant = quick_tenant(local_stack, tokens)
    schedule(tenant, messages(run, list(tokens)))
    # GIVEN the provider answers the first message 503 with Retry-After: 1e400
    script(local_stack, {"provider": "fcm", "token": f"{run}-tok-0", "error": "UNAVAILABLE", "retry_after": "1e400"})
    # WHEN the scheduler ticks
    local_stack.cli("tick", "--tenant", tenant)
    local_stack.wait()
    # THEN that message is deferred by at most a day, the others are sent
    [row] = local_stack.query(tenant, f"SELECT status, retry_at FROM message_sends WHERE message_id = '{run}-m0'")
    assert row["status"] == "deferred"
    assert datetime.fromisoformat(row["retry_at"]) <= datetime.now(UTC) + timedelta(days=1, minutes=1)
    # AND a tick after it sends it, once
    run_tick(tenant_of(tenant), now=datetime.now(UTC) + timedelta(days=1, minutes=5))
    measured = push_accounting(local_stack, tenant, [f"{run}-m{i}" for i in range(3)], tokens.values())
    assert measured["sent"] == 3
    fault.report("deferred by at most a day (clamped), the others sent; sent once a day later", **measured)


@pytest.mark.scenario("Expo receipts endpoint down", injected="Expo's getReceipts answers 503 during a tick with "
                      "new sends due", findings=[2, 17])
def test_expo_receipts_down_never_stops_sending_and_count_once(local_stack: StackHandle, fault: Fault) -> None:
    run = unique("ex")
    tokens = {f"{run}-x": f"ExponentPushToken[{run}-x]"}
    tenant = quick_tenant(local_stack, tokens, push_provider="expo", frequency_cap="3")
    fakes = local_stack.stack.cfg.url("fakes")

    def tick() -> None:
        local_stack.cli("tick", "--tenant", tenant)
        local_stack.wait()

    schedule(tenant, messages(f"{run}-1", [f"{run}-x"]))
    tick()  # m1 gets its ticket
    # GIVEN the receipts endpoint is down while a second message is due
    script(local_stack, {"provider": "expo", "endpoint": "getReceipts", "error": "INTERNAL_SERVER_ERROR",
                         "times": None})
    schedule(tenant, messages(f"{run}-2", [f"{run}-x"]))
    try:
        # WHEN the scheduler ticks
        tick()
        # THEN the second message was sent anyway (the poll runs after sending, and its failure is only logged)
        assert sends(local_stack, tenant)[f"{run}-2-m0"] == [("sent", None)]
    finally:
        httpx.post(f"{fakes}/_fake/script", json={"clear": True}, timeout=10).raise_for_status()
    # AND once it is back, receipts are recorded with their own status, and they do not count against the cap: with
    # a cap of 3, two sends and two receipts leave room for a third send
    tick()
    schedule(tenant, messages(f"{run}-3", [f"{run}-x"]))
    tick()
    outcomes = sends(local_stack, tenant)
    assert outcomes[f"{run}-1-m0"] == [("sent", None), ("receipt", "ok")]
    assert outcomes[f"{run}-2-m0"] == [("sent", None), ("receipt", "ok")]
    assert outcomes[f"{run}-3-m0"] == [("sent", None)]
    ids = [f"{run}-{n}-m0" for n in (1, 2, 3)]
    measured = push_accounting(local_stack, tenant, ids, [])
    delivered = by_token(local_stack, "expo").get(tokens[f"{run}-x"], 0)
    assert delivered == 3
    fault.report("sending went on while receipts were down; receipts recorded later as their own status, counted "
                 "once against the cap", lost=measured["lost"], duplicated=measured["duplicated"] + delivered - 3)


# -- send requests ----------------------------------------------------------------------------------------------------


def raw_push(stack: StackHandle, topic: str, body: dict[str, Any] | bytes, message_id: str, publish_time: str,
             **attributes: str) -> httpx.Response:
    """What a push subscription on ``topic`` delivers to send_due (the topic is the endpoint path)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    project = stack.stack.cfg.project
    envelope = {"message": {"data": base64.b64encode(data).decode(), "attributes": attributes,
                            "messageId": message_id, "publishTime": publish_time},
                "subscription": f"projects/{project}/subscriptions/send-due-{topic}", "deliveryAttempt": 1}
    return httpx.post(f"{stack.stack.cfg.url('send_due')}/projects/{project}/topics/{topic}", json=envelope,
                      timeout=120)


@pytest.mark.scenario("A publisher naming another tenant in a send request",
                      injected="a send request on tenant A's topic with tenant=B, and one on the shared legacy topic",
                      findings=[4])
def test_a_send_request_cannot_reach_another_tenant(local_stack: StackHandle, fault: Fault) -> None:
    from shared.config import tenant_topic

    run = unique("sr")
    a = local_stack.add_tenant(push_provider="fcm")
    b = local_stack.add_tenant(push_provider="fcm")
    request = {"message_id": f"{run}-m", "contact_id": f"{run}-c", "title": "T", "body": "B"}
    # WHEN a request arrives on A's topic claiming to be B's, and another on the shared topic naming B
    other = raw_push(local_stack, tenant_topic("send-requests", a), request, unique("1"), "2026-12-01T00:00:00Z",
                     tenant=b)
    shared = raw_push(local_stack, "send-requests", request, unique("2"), "2026-12-01T00:00:00Z", tenant=b)
    # THEN both are refused (so Pub/Sub retries and dead-letters them: kept, not acked) and neither schedule changed
    assert other.status_code == 500 and shared.status_code == 500
    written = sum(len(local_stack.query(t, "SELECT message_id FROM message_schedule")) for t in (a, b))
    log = (local_stack.stack.cfg.paths.logs / "send_due.log").read_text(errors="replace")
    assert f"publish requests for tenant {b!r} to 'send-requests.{b}'" in log
    fault.report("refused as setup errors (dead-lettered, never acked), nothing written to either tenant",
                 lost=int(200 <= other.status_code < 300) + int(200 <= shared.status_code < 300), duplicated=written)


@pytest.mark.scenario("Redelivered older send request", injected="request v1 redelivered after the newer v2 of the "
                      "same message id", findings=[16])
def test_a_redelivered_older_request_never_overwrites_a_newer_one(local_stack: StackHandle, fault: Fault) -> None:
    from shared.config import tenant_topic
    from shared.push.tick import MAX_CANDIDATES, candidates

    run = unique("v")
    tenant = quick_tenant(local_stack, {f"{run}-c": f"{run}-tok"})
    topic = tenant_topic("send-requests", tenant)
    v1 = {"message_id": f"{run}-m", "contact_id": f"{run}-c", "title": "v1", "body": "B"}
    v2 = {**v1, "title": "v2"}
    # WHEN v1 (published 10:00) is handled, then v2 (10:05), then v1 is delivered again
    for body, mid, at in ((v1, "1", "10:00"), (v2, "2", "10:05"), (v1, "1", "10:00")):
        response = raw_push(local_stack, topic, body, f"{run}-{mid}", f"2026-12-01T{at}:00.5Z")
        assert 200 <= response.status_code < 300, response.text
    # THEN the message the tick would send is v2
    now = datetime.now(UTC)
    from shared.config import tenants

    chosen = [r for r in candidates(tenants().get(tenant), now, MAX_CANDIDATES) if r["message_id"] == f"{run}-m"]
    assert [c["title"] for c in chosen] == ["v2"]
    fault.report("the newest request by publish time wins; the redelivered v1 is stored but never chosen",
                 lost=int(chosen[0]["title"] != "v2"), duplicated=len(chosen) - 1)


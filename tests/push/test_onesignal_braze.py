"""OneSignal and Braze adapters against their fakes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from shared.push.credentials import BrazeCredentials, OneSignalCredentials
from shared.push.providers.braze import BrazeProvider
from shared.push.providers.onesignal import OneSignalProvider
from shared.secrets import Secret
from tests.push.conftest import FAST_RETRY
from tests.push.helpers import deadline, msg


def os_send(creds: OneSignalCredentials, messages: list, seconds: float = 30.0, **kw: object) -> list:
    async def go() -> list:
        async with OneSignalProvider(creds, retry_policy=FAST_RETRY, **kw) as p:  # type: ignore[arg-type]
            return await p.send_many(messages, deadline=deadline(seconds))

    return asyncio.run(go())


def braze_send(creds: BrazeCredentials, messages: list, seconds: float = 30.0) -> list:
    async def go() -> list:
        async with BrazeProvider(creds, retry_policy=FAST_RETRY) as p:
            return await p.send_many(messages, deadline=deadline(seconds))

    return asyncio.run(go())


def test_onesignal_idempotent_resend(fake, onesignal_creds):
    # GIVEN a message sent once
    first = os_send(onesignal_creds, [msg(1, "sub-1")])
    # WHEN the same message is sent again (duplicate tick)
    second = os_send(onesignal_creds, [msg(1, "sub-1")])
    # THEN OneSignal deduplicates on idempotency_key: one delivery, same notification id both times
    assert first[0].status == second[0].status == "sent"
    assert first[0].provider_message_id == second[0].provider_message_id
    stats = fake.stats("onesignal")
    assert stats["accepted"] == 1 and stats["duplicates"] == 1 and stats["by_token"] == {"sub-1": 1}


def test_onesignal_invalid_recipients(fake, onesignal_creds):
    # GIVEN an unsubscribed subscription id, and (external_id mode) an unknown alias
    # WHEN sent
    by_sub = os_send(onesignal_creds, [msg(1, "dead-sub")])
    by_alias = os_send(onesignal_creds, [msg(2, "x", contact_id="dead-contact")], target="external_id")
    # THEN both come back invalid_token although HTTP said 200
    assert by_sub[0].status == "invalid_token" and by_alias[0].status == "invalid_token"


def test_onesignal_429_retried_5xx_retried_400_failed(fake, onesignal_creds):
    # GIVEN a 429 (Retry-After: 1) then a 500 for one recipient, and a 400 for another
    fake.script(
        {"provider": "onesignal", "token": "s1", "error": "rate_limited"},
        {"provider": "onesignal", "token": "s1", "error": "server_error"},
        {"provider": "onesignal", "token": "s2", "error": "bad_request"},
    )
    # WHEN sent
    out = os_send(onesignal_creds, [msg(1, "s1"), msg(2, "s2")])
    # THEN the first is sent after two retries, the second failed without retry
    assert out[0].status == "sent"
    assert out[1].status == "failed" and out[1].reason.startswith("HTTP_400")
    assert fake.stats("onesignal")["requests"] == 4


def test_onesignal_long_retry_after_defers_and_bad_key_is_unauthorized(fake, onesignal_creds):
    # GIVEN a 429 with Retry-After: 100 and a 3 s budget; and credentials with a wrong key
    fake.script(
        {"provider": "onesignal", "status": 429, "retry_after": 100, "body": {"errors": ["API rate limit exceeded."]}}
    )
    wrong = OneSignalCredentials(onesignal_creds.app_id, Secret("os_v2_app_wrong"), onesignal_creds.base_url)
    # WHEN sent
    deferred = os_send(onesignal_creds, [msg(1, "s1")], seconds=3)
    refused = os_send(wrong, [msg(2, "s2")])
    # THEN deferred ~100 s; the wrong key is the tenant's setup (unauthorized: the tick pauses), not a failed message
    assert deferred[0].status == "deferred"
    assert (deferred[0].retry_after - datetime.now(UTC)).total_seconds() > 90
    assert (refused[0].status, refused[0].reason) == ("unauthorized", "HTTP_401")


def test_braze_success_and_errors(fake, braze_creds):
    # GIVEN scripted 400/403/404 for three users, and a wrong key
    fake.script(
        {"provider": "braze", "token": "u2", "error": "bad_request"},
        {"provider": "braze", "token": "u3", "error": "forbidden"},
        {"provider": "braze", "token": "u4", "error": "not_found"},
    )
    # WHEN sent
    out = braze_send(braze_creds, [msg(i, contact_id=f"u{i}") for i in (1, 2, 3, 4)])
    bad_key = braze_send(BrazeCredentials(Secret("nope"), braze_creds.base_url), [msg(5, contact_id="u5")])
    # THEN the first is sent with a dispatch id; the bad request and the unknown path fail with their HTTP status;
    # the key without messages.send (403) and the wrong key (401) are the tenant's setup: unauthorized; none retried
    assert out[0].status == "sent" and out[0].provider_message_id
    assert [(o.status, o.reason.split(":")[0]) for o in out[1:]] == [
        ("failed", "HTTP_400"), ("unauthorized", "HTTP_403"), ("failed", "HTTP_404")
    ]
    assert (bad_key[0].status, bad_key[0].reason) == ("unauthorized", "HTTP_401")
    stats = fake.stats("braze")
    assert stats["requests"] == 5 and stats["by_token"] == {"u1": 1}


def test_braze_rate_limit_reset_and_5xx(fake, braze_creds):
    # GIVEN a 429 whose X-RateLimit-Reset is 1 s away, then a 500, for u1; and an hour-long reset for u2
    fake.script(
        {"provider": "braze", "token": "u1", "error": "rate_limited", "retry_after": 1},
        {"provider": "braze", "token": "u1", "error": "server_error"},
        {"provider": "braze", "token": "u2", "error": "rate_limited", "retry_after": 3600},
    )
    # WHEN sent with a 10 s budget
    out = braze_send(braze_creds, [msg(1, contact_id="u1"), msg(2, contact_id="u2")], seconds=10)
    # THEN u1 is sent after waiting for the reset; u2 is deferred to the reset time
    assert out[0].status == "sent"
    assert out[1].status == "deferred" and (out[1].retry_after - datetime.now(UTC)).total_seconds() > 3000

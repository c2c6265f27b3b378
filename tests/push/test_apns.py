"""APNs adapter against the fake APNs (real subprocess, h2c, ES256 provider tokens verified)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from shared.push.credentials import ApnsCredentials
from shared.push.providers.apns import TOKEN_CACHE, ApnsProvider, ProviderTokenCache
from tests.push.conftest import FAST_RETRY
from tests.push.helpers import deadline, msg


def send(creds: ApnsCredentials, messages: list, seconds: float = 30.0, **kw: object) -> list:
    async def go() -> list:
        async with ApnsProvider(creds, retry_policy=FAST_RETRY, **kw) as p:  # type: ignore[arg-type]
            return await p.send_many(messages, deadline=deadline(seconds))

    return asyncio.run(go())


def test_many_sends_sign_once_on_one_connection(fake, apns_creds):
    # GIVEN 50 alert messages with expiry and collapse id
    expires = datetime.now(UTC) + timedelta(hours=1)
    messages = [msg(i, expires_at=expires, collapse_key="promo") for i in range(50)]
    # WHEN sent through two provider instances in the same process (e.g. two ticks)
    out = send(apns_creds, messages[:25]) + send(apns_creds, messages[25:])
    # THEN all are sent, the JWT was signed once (client and fake agree) and each tick reused one HTTP/2 connection
    assert [o.status for o in out] == ["sent"] * 50
    assert TOKEN_CACHE.signs[(apns_creds.team_id, apns_creds.key_id)] == 1
    stats = fake.stats("apns")
    assert stats["jwt_signs"] == 1 and stats["accepted"] == 50
    assert stats["connections"] == 2 and stats["http_versions"] == {"2": 50}
    # and apns-id is stable per message (echoed back by APNs)
    assert len(stats["by_message"]) == 50 and out[0].provider_message_id in stats["by_message"]


def test_unregistered_and_bad_token(fake, apns_creds):
    # GIVEN an unregistered token (410 with ms timestamp) and a malformed one (400 BadDeviceToken)
    before = datetime.now(UTC) - timedelta(seconds=1)
    # WHEN sent
    out = send(apns_creds, [msg(1, "dead00"), msg(2, "bad00")])
    # THEN both are invalid_token; the 410 carries when APNs saw the token die
    assert [(o.status, o.reason) for o in out] == [
        ("invalid_token", "Unregistered"),
        ("invalid_token", "BadDeviceToken"),
    ]
    assert out[0].token_invalidated_at is not None and out[0].token_invalidated_at >= before
    assert out[1].token_invalidated_at is None


def test_expired_provider_token_resigns_once(fake, apns_creds):
    # GIVEN a cached JWT that APNs then reports as expired
    send(apns_creds, [msg(0)])
    fake.script({"provider": "apns", "error": "ExpiredProviderToken"})
    # WHEN the next message is sent
    out = send(apns_creds, [msg(1)])
    # THEN the adapter re-signed once and the retry succeeded (no TooManyProviderTokenUpdates)
    assert out[0].status == "sent"
    assert TOKEN_CACHE.signs[(apns_creds.team_id, apns_creds.key_id)] == 2
    assert fake.stats("apns")["jwt_signs"] == 2


def test_too_many_provider_token_updates(fake, apns_creds):
    # GIVEN another instance (its own cache) already minted a token for this team minutes ago
    send(apns_creds, [msg(0)], token_cache=ProviderTokenCache())
    # WHEN this instance mints a second token within 20 minutes, with a 1 s budget
    out = send(apns_creds, [msg(1)], seconds=1, token_cache=ProviderTokenCache())
    # THEN APNs refuses it (429) and the message is deferred, not failed
    assert (out[0].status, out[0].reason) == ("deferred", "TooManyProviderTokenUpdates")


def test_429_and_5xx_are_retried(fake, apns_creds):
    # GIVEN TooManyRequests with Retry-After: 1, then a 503, then a 500
    fake.script(
        {"provider": "apns", "error": "TooManyRequests", "retry_after": 1},
        {"provider": "apns", "error": "ServiceUnavailable"},
        {"provider": "apns", "error": "InternalServerError"},
    )
    # WHEN one message is sent
    out = send(apns_creds, [msg(1)])
    # THEN it is sent on the fourth request
    assert out[0].status == "sent"
    assert fake.stats("apns")["requests"] == 4


def test_long_retry_after_defers(fake, apns_creds):
    # GIVEN a 503 with Retry-After: 300 and a 5 s budget
    fake.script({"provider": "apns", "error": "ServiceUnavailable", "retry_after": 300})
    # WHEN sent
    out = send(apns_creds, [msg(1)], seconds=5)
    # THEN deferred about 5 minutes
    assert out[0].status == "deferred"
    assert (out[0].retry_after - datetime.now(UTC)).total_seconds() > 290


def test_non_retryable_4xx_fail(fake, apns_creds):
    # GIVEN a payload too large (scripted 413), a wrong topic (400 BadTopic) and a local oversize payload
    fake.script(
        {"provider": "apns", "token": "aa01", "error": "PayloadTooLarge"},
        {"provider": "apns", "token": "aa02", "error": "BadTopic"},
    )
    huge = msg(3, "aa03", body="x" * 5000)
    # WHEN sent
    out = send(apns_creds, [msg(1, "aa01"), msg(2, "aa02"), huge])
    # THEN the payloads fail with Apple's reason; the wrong topic is the tenant's app configuration (unauthorized: the
    # tick pauses the tenant instead of failing messages); one request each for the first two, none for the oversize
    assert [(o.status, o.reason) for o in out] == [
        ("failed", "PayloadTooLarge"),
        ("unauthorized", "BadTopic"),
        ("failed", "PayloadTooLarge"),
    ]
    assert fake.stats("apns")["requests"] == 2


def test_unknown_key_is_invalid_provider_token(fake, apns_creds):
    # GIVEN credentials whose key id the fake does not know
    creds = ApnsCredentials(
        "TEAMX", "UNKNOWNKEY", apns_creds.private_key, "com.example.app", "sandbox", fake.url("apns")
    )
    # WHEN sent
    out = send(creds, [msg(1)])
    # THEN it comes back as a credentials problem (the tick defers it and pauses the tenant), not a failed message
    assert (out[0].status, out[0].reason) == ("unauthorized", "InvalidProviderToken")

"""FCM HTTP v1 adapter against the fake FCM (real subprocess, h2c)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from shared.push.credentials import FcmCredentials
from shared.push.providers.base import ProviderAuthError
from shared.push.providers.fcm import FcmProvider
from shared.secrets import Secret
from tests.push.conftest import FAST_RETRY
from tests.push.helpers import deadline, msg


def send(creds: FcmCredentials, messages: list, seconds: float = 30.0, **kw: object) -> list:
    async def go() -> list:
        async with FcmProvider(creds, retry_policy=FAST_RETRY, **kw) as p:  # type: ignore[arg-type]
            return await p.send_many(messages, deadline=deadline(seconds))

    return asyncio.run(go())


def test_success_one_token_grant(fake, fcm_creds):
    # GIVEN a service account whose token_uri is the fake's OAuth endpoint
    # WHEN three messages are sent
    out = send(fcm_creds, [msg(1), msg(2), msg(3)])
    # THEN all are sent with FCM message names, using one access token
    assert [(o.status, o.reason) for o in out] == [("sent", None)] * 3
    assert all(o.provider_message_id.startswith("projects/demo-proj/messages/") for o in out)
    stats = fake.stats("fcm")
    assert stats["accepted"] == 3 and stats["token_grants"] == 1


def test_invalid_tokens(fake, fcm_creds):
    # GIVEN an unregistered token, a malformed token, and a scripted non-token INVALID_ARGUMENT
    fake.script({"provider": "fcm", "token": "e" * 64, "error": "INVALID_ARGUMENT"})
    # WHEN they are sent
    out = send(fcm_creds, [msg(1, "dead-1"), msg(2, "bad-2"), msg(3, "e" * 64)])
    # THEN dead/malformed tokens are invalid_token, the other bad request is failed; none retried
    assert [(o.status, o.reason) for o in out] == [
        ("invalid_token", "UNREGISTERED"),
        ("invalid_token", "INVALID_ARGUMENT"),
        ("failed", "INVALID_ARGUMENT"),
    ]
    assert fake.stats("fcm")["requests"] == 3


def test_config_errors_are_unauthorized_not_failed_and_never_retried(fake, fcm_creds):
    # GIVEN an APNs auth problem in the Firebase project, a service account without FCM rights, and a token that
    # belongs to another Firebase project
    fake.script(
        {"provider": "fcm", "token": "a1", "error": "SENDER_ID_MISMATCH"},
        {"provider": "fcm", "token": "a2", "error": "THIRD_PARTY_AUTH_ERROR"},
        {"provider": "fcm", "token": "a3", "status": 403,
         "body": {"error": {"code": 403, "status": "PERMISSION_DENIED", "message": "Permission denied"}}},
    )
    # WHEN sent
    out = send(fcm_creds, [msg(1, "a1"), msg(2, "a2"), msg(3, "a3")])
    # THEN the project's setup problems come back unauthorized (the tick defers them and pauses the tenant until the
    # setup is fixed); the foreign token is that one message's failure; one request each
    assert [(o.status, o.reason) for o in out] == [
        ("failed", "SENDER_ID_MISMATCH"),
        ("unauthorized", "THIRD_PARTY_AUTH_ERROR"),
        ("unauthorized", "PERMISSION_DENIED"),
    ]
    assert fake.stats("fcm")["requests"] == 3


def test_quota_with_retry_after_is_retried_then_sent(fake, fcm_creds):
    # GIVEN the next request gets 429 QUOTA_EXCEEDED with Retry-After: 1
    fake.script({"provider": "fcm", "error": "QUOTA_EXCEEDED", "retry_after": 1})
    # WHEN one message is sent
    t0 = time.monotonic()
    out = send(fcm_creds, [msg(1)])
    # THEN it waited for Retry-After and was sent on the second request
    assert out[0].status == "sent"
    assert time.monotonic() - t0 >= 1.0
    assert fake.stats("fcm")["requests"] == 2


def test_quota_without_retry_after_defers_at_least_a_minute(fake, fcm_creds):
    # GIVEN 429 QUOTA_EXCEEDED without Retry-After and a 5 s budget
    fake.script({"provider": "fcm", "error": "QUOTA_EXCEEDED"})
    # WHEN sent
    out = send(fcm_creds, [msg(1)], seconds=5)
    # THEN it is deferred by FCM's one-minute floor instead of sleeping
    assert out[0].status == "deferred" and out[0].reason == "QUOTA_EXCEEDED"
    assert (out[0].retry_after - datetime.now(UTC)).total_seconds() > 55


def test_long_retry_after_defers(fake, fcm_creds):
    # GIVEN 503 with Retry-After: 120 and a 10 s budget
    fake.script({"provider": "fcm", "error": "UNAVAILABLE", "retry_after": 120})
    # WHEN sent
    out = send(fcm_creds, [msg(1)], seconds=10)
    # THEN deferred until about 2 minutes from now, after a single request
    assert out[0].status == "deferred"
    assert 110 < (out[0].retry_after - datetime.now(UTC)).total_seconds() <= 121
    assert fake.stats("fcm")["requests"] == 1


def test_5xx_retried(fake, fcm_creds):
    # GIVEN the next two requests fail with 503 and 500
    fake.script({"provider": "fcm", "error": "UNAVAILABLE"}, {"provider": "fcm", "error": "INTERNAL"})
    # WHEN one message is sent
    out = send(fcm_creds, [msg(1)])
    # THEN it is sent on the third request
    assert out[0].status == "sent"
    assert fake.stats("fcm")["requests"] == 3


def test_stale_bearer_refreshes_once(fake, fcm_creds):
    # GIVEN a provider that already holds an access token, which the fake then revokes
    async def go() -> list:
        async with FcmProvider(fcm_creds, retry_policy=FAST_RETRY) as p:
            first = await p.send_many([msg(1)], deadline=deadline())
            fake.control.post("/_fake/fcm/revoke").raise_for_status()
            # WHEN it sends again
            return first + await p.send_many([msg(2)], deadline=deadline())

    out = asyncio.run(go())
    # THEN the 401 UNAUTHENTICATED triggers one refresh and the message is sent
    assert [o.status for o in out] == ["sent", "sent"]
    stats = fake.stats("fcm")
    assert stats["token_grants"] == 2 and stats["responses"].get("401") == 1


def test_non_string_data_fails_locally(fake, fcm_creds):
    # GIVEN a message whose data holds a number (FCM requires strings)
    bad = msg(1, data={"n": 1})  # type: ignore[dict-item]
    # WHEN sent
    out = send(fcm_creds, [bad])
    # THEN it fails without a request
    assert (out[0].status, out[0].reason) == ("failed", "INVALID_DATA")
    assert fake.stats("fcm")["requests"] == 0


def test_unknown_service_account_is_unauthorized_and_caught_by_preflight(fake, service_account):
    # GIVEN a service account the token endpoint does not know
    creds = FcmCredentials("demo-proj", Secret({**service_account, "client_email": "x@y.iam"}), fake.url("fcm"))

    async def preflight() -> str | None:
        async with FcmProvider(creds, retry_policy=FAST_RETRY) as p:
            try:
                await p.preflight()
            except ProviderAuthError as exc:
                return exc.reason
        return None

    # WHEN its credentials are checked before sending, and when a message is sent anyway
    reason = asyncio.run(preflight())
    out = send(creds, [msg(1)])
    # THEN the check refuses them before any message, and a send says unauthorized (a credentials problem that pauses
    # the tenant), never a failed message; nothing reached the send endpoint
    assert reason == "AUTH_REFRESH_FAILED"
    assert (out[0].status, out[0].reason) == ("unauthorized", "AUTH_REFRESH_FAILED")
    assert fake.stats("fcm")["requests"] == 0


def test_one_http2_connection_for_many_sends(fake, fcm_creds):
    # GIVEN 300 messages
    messages = [msg(i) for i in range(300)]
    # WHEN sent through one provider
    out = send(fcm_creds, messages)
    # THEN all went over a single HTTP/2 connection, never above 100 concurrent streams
    assert all(o.status == "sent" for o in out)
    stats = fake.stats("fcm")
    assert stats["connections"] == 1
    assert stats["http_versions"] == {"2": 300}
    assert stats["max_in_flight"] <= 100

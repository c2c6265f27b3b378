"""Provider adapters under faults (fake providers as a real subprocess): an answer lost after the provider accepted a
message is never resent (except with an idempotency key), refused credentials are ``unauthorized`` (the tick pauses
the tenant), and whatever a server says about waiting or time never crashes a send."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from shared.push.credentials import ApnsCredentials, ExpoCredentials, FcmCredentials
from shared.push.providers.apns import ApnsProvider, ProviderTokenCache
from shared.push.providers.base import ProviderAuthError
from shared.push.providers.braze import BrazeProvider
from shared.push.providers.expo import ExpoProvider
from shared.push.providers.fcm import FcmProvider
from shared.push.providers.onesignal import OneSignalProvider
from shared.push.retry import MAX_DEFER_S
from shared.secrets import Secret
from tests.push.conftest import FAST_RETRY
from tests.push.helpers import deadline, msg

if TYPE_CHECKING:
    from shared.push.providers.base import SendOutcome
    from tests.push.conftest import FakeServer


def send_with(cls: type, creds: Any, messages: list, seconds: float = 30.0, **kw: Any) -> list[SendOutcome]:
    async def go() -> list[SendOutcome]:
        async with cls(creds, retry_policy=FAST_RETRY, **kw) as provider:
            return list(await provider.send_many(messages, deadline=deadline(seconds)))

    return asyncio.run(go())


# -- an answer lost after the provider accepted the message -----------------------------------------------------------


@pytest.mark.parametrize("provider", ["fcm", "apns"])
def test_http2_timeout_after_the_provider_accepted_is_not_resent(fake: FakeServer, provider: str, request) -> None:
    # GIVEN a provider that accepts the next message and answers only after our client gave up
    creds = request.getfixturevalue(f"{provider}_creds")
    cls = FcmProvider if provider == "fcm" else ApnsProvider
    fake.script({"provider": provider, "delay": 3})
    # WHEN one message is sent with a 0.5 s request timeout and retries allowed
    out = send_with(cls, creds, [msg(1)], timeout=0.5)
    # THEN it is recorded as an unknown outcome, not resent: the fake delivered it exactly once
    assert (out[0].status, out[0].reason) == ("failed", "outcome_unknown:RequestTimeout")
    assert list(fake.stats(provider)["by_token"].values()) == [1]


def test_expo_timeout_after_the_batch_was_accepted_is_not_resent(fake: FakeServer, expo_creds: ExpoCredentials) -> None:
    # GIVEN Expo accepting a batch of three and answering after our client gave up
    fake.script({"provider": "expo", "delay": 3})
    tokens = [f"ExponentPushToken[t{i}]" for i in range(3)]
    # WHEN sent with a 0.5 s timeout
    out = send_with(ExpoProvider, expo_creds, [msg(i, t) for i, t in enumerate(tokens)], timeout=0.5)
    # THEN all three are unknown outcomes, each delivered once
    assert {(o.status, o.reason) for o in out} == {("failed", "outcome_unknown:ReadTimeout")}
    assert fake.stats("expo")["by_token"] == dict.fromkeys(tokens, 1)


def test_onesignal_resends_after_a_timeout_because_its_key_deduplicates(fake: FakeServer, onesignal_creds) -> None:
    # GIVEN OneSignal accepting the first request and answering after our client gave up
    fake.script({"provider": "onesignal", "delay": 3})
    # WHEN sent with a 0.5 s timeout
    out = send_with(OneSignalProvider, onesignal_creds, [msg(1, "sub-1")], timeout=0.5)
    # THEN the resend carried the same idempotency key: sent, and delivered once (the fake saw a duplicate request)
    assert out[0].status == "sent"
    stats = fake.stats("onesignal")
    assert stats["by_token"] == {"sub-1": 1} and stats["duplicates"] >= 1


def test_nothing_sent_when_the_connection_is_refused_so_it_is_retried_then_deferred(fcm_creds: FcmCredentials) -> None:
    # GIVEN a provider address where nothing listens
    from tests.stack_support import free_port_base

    creds = FcmCredentials(fcm_creds.project_id, fcm_creds.service_account, f"http://127.0.0.1:{free_port_base(1)}")
    # WHEN a message is sent
    out = send_with(FcmProvider, creds, [msg(1)], seconds=5)
    # THEN nothing left the process, so it was retried and finally deferred (never an unknown outcome)
    assert (out[0].status, out[0].reason) == ("deferred", "connection:ConnectError")


# -- credentials the provider refuses -------------------------------------------------------------------------------


def test_apns_key_that_cannot_sign_is_refused_before_sending(fake: FakeServer, apns_creds: ApnsCredentials) -> None:
    # GIVEN APNs credentials whose private key is not a key
    broken = ApnsCredentials(apns_creds.team_id, apns_creds.key_id, Secret("not a key"), apns_creds.topic,
                             apns_creds.environment, apns_creds.base_url)

    async def preflight() -> str | None:
        async with ApnsProvider(broken, token_cache=ProviderTokenCache()) as p:
            try:
                await p.preflight()
            except ProviderAuthError as exc:
                return exc.reason
        return None

    # WHEN checked, and when sent anyway
    reason = asyncio.run(preflight())
    out = send_with(ApnsProvider, broken, [msg(1)], token_cache=ProviderTokenCache())
    # THEN refused before any request, and the send is unauthorized (not an exception that strands a chunk)
    assert reason is not None and reason.startswith("InvalidPrivateKey")
    assert out[0].status == "unauthorized"
    assert fake.stats("apns")["requests"] == 0


def test_expo_refused_access_token_and_invalid_credentials(fake: FakeServer, expo_creds: ExpoCredentials) -> None:
    # GIVEN one ticket error InvalidCredentials (the app's credentials at Expo), then an Expo access token refused
    fake.script({"provider": "expo", "token": "ExponentPushToken[c]", "error": "InvalidCredentials"})
    out = send_with(ExpoProvider, expo_creds, [msg(1, "ExponentPushToken[c]"), msg(2, "ExponentPushToken[d]")])
    fake.register(expo={"access_token": "the-right-one"})
    try:
        wrong = ExpoCredentials(Secret("a-wrong-one"), expo_creds.base_url)
        refused = send_with(ExpoProvider, wrong, [msg(3, "ExponentPushToken[e]")])
    finally:
        fake.control.post("/_fake/reset", json={"registrations": True}).raise_for_status()
    # THEN both are unauthorized (the tick defers and pauses), the healthy one is sent
    assert [(o.status, o.reason) for o in out] == [("unauthorized", "InvalidCredentials"), ("sent", None)]
    assert (refused[0].status, refused[0].reason) == ("unauthorized", "UNAUTHORIZED")


# -- what a server says about time ------------------------------------------------------------------------------------


@pytest.mark.parametrize("retry_after", ["1e400", "inf", "nan", "99999999999999999999"])
def test_absurd_retry_after_is_clamped_to_a_day(fake: FakeServer, fcm_creds: FcmCredentials, retry_after: str) -> None:
    # GIVEN a 503 whose Retry-After is absurd
    fake.script({"provider": "fcm", "error": "UNAVAILABLE", "retry_after": retry_after, "times": None})
    # WHEN sent with a 5 s budget
    out = send_with(FcmProvider, fcm_creds, [msg(1)], seconds=5)
    # THEN the message is deferred (no crash), at most a day away
    assert out[0].status == "deferred"
    assert out[0].retry_after is not None
    assert out[0].retry_after <= datetime.now(UTC) + timedelta(seconds=MAX_DEFER_S + 60)


def test_braze_rate_limit_reset_in_year_infinity_is_clamped(fake: FakeServer, braze_creds) -> None:
    # GIVEN a 429 whose X-RateLimit-Reset is 1e400
    fake.script({"provider": "braze", "status": 429, "headers": {"x-ratelimit-reset": "1e400"},
                 "body": {"message": "Rate limit exceeded"}})
    # WHEN sent
    out = send_with(BrazeProvider, braze_creds, [msg(1, contact_id="u1")], seconds=5)
    # THEN deferred by at most a day
    assert out[0].status == "deferred"
    assert out[0].retry_after <= datetime.now(UTC) + timedelta(seconds=MAX_DEFER_S + 60)


@pytest.mark.parametrize("timestamp", [10**400, -(10**30), "soon", True])
def test_apns_410_with_an_absurd_timestamp_still_marks_the_token(fake: FakeServer, apns_creds, timestamp) -> None:
    # GIVEN APNs answering 410 Unregistered with a timestamp that is no time at all
    fake.script({"provider": "apns", "status": 410, "body": {"reason": "Unregistered", "timestamp": timestamp}})
    # WHEN sent
    out = send_with(ApnsProvider, apns_creds, [msg(1)])
    # THEN the token is invalid (no crash), with no invalidation time
    assert (out[0].status, out[0].reason, out[0].token_invalidated_at) == ("invalid_token", "Unregistered", None)


def test_apns_device_token_cannot_change_the_request_path(apns_creds: ApnsCredentials) -> None:
    # GIVEN a "device token" that would walk the request path
    paths: list[bytes] = []

    async def go() -> None:
        async with ApnsProvider(apns_creds, token_cache=ProviderTokenCache()) as p:

            async def capture(path: bytes, headers: Any, body: bytes) -> Any:
                paths.append(path)
                raise ProviderAuthError("stop here")

            p._pool.post = capture  # type: ignore[method-assign]
            await p.send_many([msg(1, "../../x?y=1#z")], deadline=deadline())

    # WHEN it is sent
    asyncio.run(go())
    # THEN it stays one percent-encoded path segment
    assert paths == [b"/3/device/..%2F..%2Fx%3Fy%3D1%23z"]

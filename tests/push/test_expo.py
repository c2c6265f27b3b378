"""Expo adapter against the fake Expo push service: batches, per-ticket errors, receipts."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from shared.push.providers.base import Receipt as ExpoReceipt
from shared.push.providers.expo import ExpoProvider
from tests.push.conftest import FAST_RETRY
from tests.push.helpers import deadline, msg

if TYPE_CHECKING:
    from shared.push.credentials import ExpoCredentials


def tok(i: int | str) -> str:
    return f"ExponentPushToken[{i}]"


def send(creds: ExpoCredentials, messages: list, seconds: float = 30.0) -> list:
    async def go() -> list:
        async with ExpoProvider(creds, retry_policy=FAST_RETRY) as p:
            return await p.send_many(messages, deadline=deadline(seconds))

    return asyncio.run(go())


def test_batches_of_100(fake, expo_creds):
    # GIVEN 250 messages
    messages = [msg(i, tok(i)) for i in range(250)]
    # WHEN sent
    out = send(expo_creds, messages)
    # THEN three requests (100+100+50), every message sent with its ticket id, in order
    assert [o.message_id for o in out] == [m.message_id for m in messages]
    assert all(o.status == "sent" and o.provider_message_id for o in out)
    stats = fake.stats("expo")
    assert stats["requests"] == 3 and stats["accepted"] == 250


def test_ticket_errors(fake, expo_creds):
    # GIVEN one unregistered device, one per-device throttle (once), one oversize message
    fake.script(
        {"provider": "expo", "token": tok("rate"), "error": "MessageRateExceeded"},
        {"provider": "expo", "token": tok("big"), "error": "MessageTooBig"},
    )
    messages = [msg(1, tok("dead1")), msg(2, tok("rate")), msg(3, tok("big")), msg(4, tok("ok"))]
    # WHEN sent
    out = send(expo_creds, messages)
    # THEN invalid_token / sent after a retry / failed / sent
    assert [(o.status, o.reason) for o in out] == [
        ("invalid_token", "DeviceNotRegistered"),
        ("sent", None),
        ("failed", "MessageTooBig"),
        ("sent", None),
    ]
    # and only the throttled message was sent again
    assert fake.stats("expo")["requests"] == 2 and fake.stats("expo")["by_token"][tok("rate")] == 1


def test_request_level_429_retried_and_long_outage_deferred(fake, expo_creds):
    # GIVEN a request-level TOO_MANY_REQUESTS once
    fake.script({"provider": "expo", "error": "TOO_MANY_REQUESTS"})
    # WHEN two messages are sent
    out = send(expo_creds, [msg(1, tok(1)), msg(2, tok(2))])
    # THEN the batch is retried and both are sent
    assert [o.status for o in out] == ["sent", "sent"]
    # GIVEN a 503 with Retry-After: 600 and a 3 s budget
    fake.script({"provider": "expo", "error": "INTERNAL_SERVER_ERROR", "retry_after": 600})
    # WHEN sent
    out = send(expo_creds, [msg(3, tok(3))], seconds=3)
    # THEN deferred
    assert out[0].status == "deferred"


def test_receipts_flow(fake, expo_creds):
    # GIVEN a device whose delivery will fail at APNs/FCM (known only from the receipt)
    fake.script({"provider": "expo", "token": tok("gone"), "receipt_error": "DeviceNotRegistered"})

    async def go() -> tuple[list, dict[str, ExpoReceipt]]:
        async with ExpoProvider(expo_creds, retry_policy=FAST_RETRY) as p:
            out = await p.send_many([msg(1, tok("fine")), msg(2, tok("gone"))], deadline=deadline())
            # WHEN the receipts are fetched later (plus an id Expo does not know yet)
            ids = [o.provider_message_id for o in out]
            return out, await p.fetch_receipts([*ids, "not-ready-yet"])

    out, receipts = asyncio.run(go())
    # THEN both tickets were ok; the receipts say delivered / invalid_token; the unknown id is absent
    assert [o.status for o in out] == ["sent", "sent"]
    assert receipts[out[0].provider_message_id].status == "ok"
    assert receipts[out[1].provider_message_id] == ExpoReceipt(
        out[1].provider_message_id, "invalid_token", "DeviceNotRegistered"
    )
    assert "not-ready-yet" not in receipts

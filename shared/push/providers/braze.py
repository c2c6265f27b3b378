"""Braze ``POST {base}/messages/send`` (Bearer REST key with ``messages.send``), one recipient per request.

Braze addresses users, not devices: the recipient is ``contact_id`` as ``external_user_ids``. There is no server-side
idempotency key, so duplicates are prevented by the caller's send ledger. 429 carries ``X-RateLimit-Reset`` (epoch s,
hour-aligned windows) rather than ``Retry-After``; a long reset simply defers the message.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from shared.push.providers.base import (
    HttpProvider,
    PushMessage,
    SendOutcome,
    clamp_delay,
    json_object,
    retry_after_seconds,
)
from shared.push.retry import Retryable, RetryPolicy

if TYPE_CHECKING:
    import httpx

    from shared.push.credentials import BrazeCredentials

DEFAULT_BASE_URL = "https://rest.iad-01.braze.com"


def build_body(message: PushMessage) -> dict[str, Any]:
    extra = dict(message.data)
    apple: dict[str, Any] = {"alert": {"title": message.title, "body": message.body}, "extra": extra}
    android: dict[str, Any] = {"title": message.title, "alert": message.body, "extra": extra}
    if message.deep_link:
        apple["custom_uri"] = android["custom_uri"] = message.deep_link
    if message.collapse_key:
        apple["collapse_id"] = android["collapse_key"] = message.collapse_key
    if message.priority == "high":
        android["priority"] = 2
    if message.expires_at is not None:
        apple["expiry"] = message.expires_at.isoformat()
        android["time_to_live"] = max(0, int(message.expires_at.timestamp() - time.time()))
    return {"external_user_ids": [message.contact_id], "messages": {"apple_push": apple, "android_push": android}}


class BrazeProvider(HttpProvider):
    name = "braze"

    def __init__(
        self,
        credentials: BrazeCredentials,
        *,
        base_url: str | None = None,
        max_concurrency: int = 32,
        rate_per_second: float = 250_000 / 3600,  # 250k requests/hour shared by the send endpoints
        retry_policy: RetryPolicy | None = None,
        client: httpx.AsyncClient | None = None,
        timeout: float = 30.0,
    ) -> None:
        super().__init__(
            base_url=base_url or credentials.base_url or DEFAULT_BASE_URL,
            http2=False,
            max_concurrency=max_concurrency,
            rate_per_second=rate_per_second,
            burst=max_concurrency,
            retry_policy=retry_policy,
            timeout=timeout,
            client=client,
        )
        self._headers = {"authorization": f"Bearer {credentials.api_key.reveal()}", "content-type": "application/json"}

    async def _send_one(self, message: PushMessage) -> SendOutcome | Retryable:
        content = json.dumps(build_body(message)).encode()
        resp = await self._client.post(f"{self.base_url}/messages/send", content=content, headers=self._headers)
        status = resp.status_code
        payload = json_object(resp)
        if 200 <= status < 300 and payload.get("message") == "success":
            return SendOutcome(message.message_id, "sent", provider_message_id=payload.get("dispatch_id"))
        if status == 429:
            reset = resp.headers.get("x-ratelimit-reset")
            wait = retry_after_seconds(resp.headers)
            if wait is None and reset:
                try:
                    wait = clamp_delay(float(reset) - time.time())
                except ValueError:
                    wait = None
            return Retryable("rate_limited", wait)
        if status >= 500:
            return Retryable(f"HTTP_{status}", retry_after_seconds(resp.headers))
        if status in (401, 403):  # the REST key is wrong or lacks messages.send: the tenant's setup
            return SendOutcome(message.message_id, "unauthorized", f"HTTP_{status}")
        detail = str(payload.get("message") or "")[:200]
        return SendOutcome(message.message_id, "failed", f"HTTP_{status}:{detail}" if detail else f"HTTP_{status}")

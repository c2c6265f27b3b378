"""OneSignal Create Message: ``POST {base}/notifications`` with ``Authorization: Key <app api key>``.

Every request carries ``idempotency_key`` (body field, remembered 30 days by OneSignal), so a retry or a duplicate
tick can never send twice. HTTP 200 can still mean "nothing sent": empty ``id`` plus ``errors``.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import TYPE_CHECKING, Any, Literal

from shared.push.providers.base import HttpProvider, PushMessage, SendOutcome, json_object, retry_after_seconds
from shared.push.retry import Retryable, RetryPolicy

if TYPE_CHECKING:
    import httpx

    from shared.push.credentials import OneSignalCredentials

DEFAULT_BASE_URL = "https://api.onesignal.com"
RATE_LIMIT_FALLBACK = 100.0  # OneSignal's advice for non-urgent sends when no Retry-After came back


def idempotency_key(message: PushMessage) -> str:
    """OneSignal wants a UUID: take the message's key if it is one, else derive one deterministically from it."""
    key = message.idempotency_key or message.message_id
    try:
        return str(uuid.UUID(key))
    except ValueError:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"landline:{key}"))


class OneSignalProvider(HttpProvider):
    name = "onesignal"
    idempotent = True  # the idempotency key makes a resend after a timeout safe

    def __init__(
        self,
        credentials: OneSignalCredentials,
        *,
        base_url: str | None = None,
        target: Literal["subscription_id", "external_id"] = "subscription_id",
        max_concurrency: int = 32,
        rate_per_second: float = 150.0,  # free-plan limit; paid apps get 6,000 req/s
        retry_policy: RetryPolicy | None = None,
        client: httpx.AsyncClient | None = None,
        timeout: float = 30.0,
    ) -> None:
        super().__init__(
            base_url=base_url or credentials.base_url or DEFAULT_BASE_URL,
            http2=False,
            max_concurrency=max_concurrency,
            rate_per_second=rate_per_second,
            retry_policy=retry_policy,
            timeout=timeout,
            client=client,
        )
        self.creds = credentials
        self.target = target
        self._headers = {"authorization": f"Key {credentials.api_key.reveal()}", "content-type": "application/json"}

    def build_body(self, message: PushMessage) -> dict[str, Any]:
        body: dict[str, Any] = {
            "app_id": self.creds.app_id,
            "idempotency_key": idempotency_key(message),
            "headings": {"en": message.title},
            "contents": {"en": message.body},
            "priority": 10 if message.priority == "high" else 5,
        }
        if self.target == "external_id":
            body["include_aliases"] = {"external_id": [message.contact_id]}
            body["target_channel"] = "push"
        else:
            body["include_subscription_ids"] = [message.token]
        if message.data:
            body["data"] = dict(message.data)
        if message.deep_link:
            body["app_url"] = message.deep_link
        if message.collapse_key:
            body["collapse_id"] = message.collapse_key
        if message.expires_at is not None:
            body["ttl"] = max(0, int(message.expires_at.timestamp() - time.time()))
        return body

    async def _send_one(self, message: PushMessage) -> SendOutcome | Retryable:
        content = json.dumps(self.build_body(message)).encode()
        resp = await self._client.post(f"{self.base_url}/notifications", content=content, headers=self._headers)
        status = resp.status_code
        payload = json_object(resp)
        if status == 200:
            errors = payload.get("errors")
            if _has_invalid_recipients(errors):
                return SendOutcome(message.message_id, "invalid_token", "invalid_recipient")
            if payload.get("id"):
                return SendOutcome(message.message_id, "sent", provider_message_id=str(payload["id"]))
            return SendOutcome(message.message_id, "failed", _first_error(errors) or "not_sent")
        if status == 429:
            ra = retry_after_seconds(resp.headers)
            return Retryable("rate_limited", ra, 0.0 if ra is not None else RATE_LIMIT_FALLBACK)
        if status >= 500:
            return Retryable(f"HTTP_{status}", retry_after_seconds(resp.headers))
        detail = _first_error(payload.get("errors")) or ""
        if status in (401, 403) or (status == 400 and "app_id" in detail):
            return SendOutcome(message.message_id, "unauthorized", f"HTTP_{status}")  # the app key or app id
        return SendOutcome(message.message_id, "failed", f"HTTP_{status}:{detail}")


def _has_invalid_recipients(errors: Any) -> bool:
    if isinstance(errors, dict):
        return bool(errors.get("invalid_player_ids") or errors.get("invalid_aliases"))
    if isinstance(errors, list):
        return any("not subscribed" in str(e) for e in errors)
    return False


def _first_error(errors: Any) -> str | None:
    if isinstance(errors, list) and errors:
        return str(errors[0])[:200]
    if isinstance(errors, dict) and errors:
        return str(next(iter(errors)))
    return None

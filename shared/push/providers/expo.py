"""Expo push service: ``POST {base}/--/api/v2/push/send`` with up to 100 messages per request, one ticket each.

A ticket ``ok`` only means Expo accepted the message; delivery errors (``DeviceNotRegistered`` ...) arrive later as
receipts: poll ``fetch_receipts`` with the ticket ids (``provider_message_id``) some minutes after sending.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any, Literal

from shared.push.providers.base import (
    NOT_SENT_EXCEPTIONS,
    RETRYABLE_EXCEPTIONS,
    HttpProvider,
    PushMessage,
    Receipt,
    SendOutcome,
    json_object,
    retry_after_seconds,
)
from shared.push.retry import Deferral, Retryable, RetryPolicy, call_with_retry

if TYPE_CHECKING:
    from collections.abc import Sequence

    import httpx

    from shared.push.credentials import ExpoCredentials

DEFAULT_BASE_URL = "https://exp.host"
MAX_BATCH = 100
MAX_RECEIPT_IDS = 300  # the service takes 1000; the Node SDK chunks at 300
FAILED_ERRORS = {"MessageTooBig", "MismatchSenderId", "InvalidCredentials", "DeveloperError", "ProviderError"}


class ExpoProvider(HttpProvider):
    name = "expo"
    has_receipts = True

    def __init__(
        self,
        credentials: ExpoCredentials | None = None,
        *,
        base_url: str | None = None,
        max_concurrency: int = 6,  # Expo's guidance: at most 6 concurrent connections
        rate_per_second: float = 600.0,  # notifications per second per project
        retry_policy: RetryPolicy | None = None,
        client: httpx.AsyncClient | None = None,
        timeout: float = 30.0,
    ) -> None:
        creds = credentials
        super().__init__(
            base_url=base_url or (creds.base_url if creds else None) or DEFAULT_BASE_URL,
            http2=False,
            max_concurrency=max_concurrency,
            rate_per_second=rate_per_second,
            burst=max(rate_per_second, MAX_BATCH),
            retry_policy=retry_policy,
            timeout=timeout,
            client=client,
        )
        self._headers = {"content-type": "application/json", "accept": "application/json"}
        if creds and creds.access_token is not None:
            self._headers["authorization"] = f"Bearer {creds.access_token.reveal()}"

    @staticmethod
    def build_ticket_request(message: PushMessage) -> dict[str, Any]:
        body: dict[str, Any] = {
            "to": message.token,
            "title": message.title,
            "body": message.body,
            "priority": "high" if message.priority == "high" else "normal",
            "sound": "default",
        }
        data: dict[str, Any] = dict(message.data)
        if message.deep_link:
            data.setdefault("url", message.deep_link)
        if data:
            body["data"] = data
        if message.expires_at is not None:
            body["expiration"] = int(message.expires_at.timestamp())
        if message.collapse_key:
            body["collapseId"] = message.collapse_key
        return body

    async def _send_one(self, message: PushMessage) -> SendOutcome | Retryable:
        raise NotImplementedError("Expo sends in batches: use send_many")

    async def send_many(self, messages: Sequence[PushMessage], *, deadline: float) -> list[SendOutcome]:
        batches = [list(messages[i : i + MAX_BATCH]) for i in range(0, len(messages), MAX_BATCH)]
        results = await asyncio.gather(*(self._send_batch(b, deadline) for b in batches))
        by_id = {o.message_id: o for r in results for o in r}
        return [by_id[m.message_id] for m in messages]

    async def _send_batch(self, batch: list[PushMessage], deadline: float) -> list[SendOutcome]:
        done: dict[str, SendOutcome] = {}
        pending = list(batch)

        async def attempt() -> Retryable | None:
            nonlocal pending
            wait_until = await self._bucket.acquire(len(pending), deadline=deadline)
            if wait_until is not None:
                return Retryable("rate_limited", max(0.0, wait_until - time.time()))
            try:
                retry = await self._post_batch(pending, done)
            except NOT_SENT_EXCEPTIONS as exc:
                return Retryable(f"connection:{type(exc).__name__}")
            except RETRYABLE_EXCEPTIONS as exc:
                # The batch may have reached Expo (no idempotency key): never resend it.
                for m in pending:
                    done[m.message_id] = SendOutcome(m.message_id, "failed", f"outcome_unknown:{type(exc).__name__}")
                pending = []
                return None
            pending = [m for m in pending if m.message_id not in done]
            return retry if pending else None

        async with self._semaphore:
            result = await call_with_retry(attempt, deadline=deadline, policy=self.retry_policy)
        if isinstance(result, Deferral):
            for m in pending:
                done[m.message_id] = SendOutcome(m.message_id, "deferred", result.reason, retry_after=result.until)
        return [done[m.message_id] for m in batch]

    async def _post_batch(self, pending: list[PushMessage], done: dict[str, SendOutcome]) -> Retryable | None:
        """One request; final outcomes go into ``done``; returns a Retryable for what is left (if anything)."""
        content = json.dumps([self.build_ticket_request(m) for m in pending]).encode()
        resp = await self._client.post(f"{self.base_url}/--/api/v2/push/send", content=content, headers=self._headers)
        payload = json_object(resp)
        if resp.status_code == 429 or resp.status_code >= 500:
            return Retryable(_request_error(payload) or f"HTTP_{resp.status_code}", retry_after_seconds(resp.headers))
        tickets = payload.get("data")
        if resp.status_code in (401, 403):  # the access token: the tenant's setup, not these messages
            reason = _request_error(payload) or f"HTTP_{resp.status_code}"
            for m in pending:
                done[m.message_id] = SendOutcome(m.message_id, "unauthorized", reason)
            return None
        if resp.status_code != 200 or not isinstance(tickets, list) or len(tickets) != len(pending):
            reason = _request_error(payload) or f"HTTP_{resp.status_code}"
            for m in pending:
                done[m.message_id] = SendOutcome(m.message_id, "failed", reason)
            return None
        retry: Retryable | None = None
        for m, ticket in zip(pending, tickets, strict=True):
            if ticket.get("status") == "ok":
                done[m.message_id] = SendOutcome(m.message_id, "sent", provider_message_id=ticket.get("id"))
                continue
            error = (ticket.get("details") or {}).get("error") or "ExpoError"
            if error == "DeviceNotRegistered":
                done[m.message_id] = SendOutcome(m.message_id, "invalid_token", error)
            elif error == "InvalidCredentials":  # the app's FCM/APNs credentials stored at Expo
                done[m.message_id] = SendOutcome(m.message_id, "unauthorized", error)
            elif error == "MessageRateExceeded":
                retry = Retryable(error)  # per-device throttle: this message goes again after a backoff
            else:
                done[m.message_id] = SendOutcome(m.message_id, "failed", error)
        return retry

    async def fetch_receipts(self, ticket_ids: Sequence[str]) -> dict[str, Receipt]:
        """Receipts for the given tickets (``getReceipts``); ids without a receipt yet (not ready, or older than
        ~24 h) are absent. Transport errors raise: the caller polls again on a later tick."""
        out: dict[str, Receipt] = {}
        url = f"{self.base_url}/--/api/v2/push/getReceipts"
        for i in range(0, len(ticket_ids), MAX_RECEIPT_IDS):
            chunk = list(ticket_ids[i : i + MAX_RECEIPT_IDS])
            resp = await self._client.post(url, content=json.dumps({"ids": chunk}).encode(), headers=self._headers)
            resp.raise_for_status()
            receipts = json_object(resp).get("data") or {}
            for ticket_id, receipt in receipts.items():
                if receipt.get("status") == "ok":
                    out[ticket_id] = Receipt(ticket_id, "ok")
                    continue
                error = (receipt.get("details") or {}).get("error") or "ExpoError"
                status: Literal["invalid_token", "failed"] = (
                    "invalid_token" if error == "DeviceNotRegistered" else "failed"
                )
                out[ticket_id] = Receipt(ticket_id, status, error)
        return out


def _request_error(payload: dict[str, Any]) -> str | None:
    errors = payload.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        return str(errors[0].get("code") or errors[0].get("message"))
    return None

"""Firebase Cloud Messaging, HTTP v1: one POST per message over pooled HTTP/2 connections (``shared.push.transport``).

Access tokens come from google-auth (service-account JWT-bearer grant to the JSON's ``token_uri``), refreshed in a
thread (google-auth's transport is blocking ``requests``) and cached until google-auth's refresh threshold; cached per
service account per process so that every adapter instance of a tenant shares one token.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from typing import TYPE_CHECKING, Any

import google.auth.exceptions

from shared.errors import TransientError
from shared.push.providers.base import (
    H2Provider,
    ProviderAuthError,
    PushMessage,
    SendOutcome,
    json_object,
    retry_after_seconds,
)
from shared.push.retry import Retryable, RetryPolicy

if TYPE_CHECKING:
    from collections.abc import Mapping

    import httpx

    from shared.push.credentials import FcmCredentials
    from shared.push.transport import Response

DEFAULT_BASE_URL = "https://fcm.googleapis.com"
SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
QUOTA_MIN_DELAY = 60.0  # FCM: "min initial delay 1 minute" on QUOTA_EXCEEDED without Retry-After
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"


class _TokenSource:
    """One google-auth credential, refreshed at most once at a time; shared by all adapters of a service account."""

    def __init__(self, info: dict[str, Any]) -> None:
        from google.oauth2 import service_account

        self._creds = service_account.Credentials.from_service_account_info(info, scopes=[SCOPE])
        self._lock = asyncio.Lock()
        self.refreshes = 0

    async def token(self, *, force: bool = False, stale: str | None = None) -> str:
        creds = self._creds
        if not force and creds.valid:
            return str(creds.token)
        async with self._lock:
            # Another task may have refreshed while we waited (or replaced the stale token already).
            if creds.valid and not (force and creds.token == stale):
                return str(creds.token)
            from google.auth.transport.requests import Request

            await asyncio.to_thread(creds.refresh, Request())
            self.refreshes += 1
            return str(creds.token)


_TOKEN_SOURCES: dict[tuple[str, str, str, str], _TokenSource] = {}


def token_source(info: dict[str, Any]) -> _TokenSource:
    """Process-wide token source per service account *and key*: the identifiers alone are not secret, so a second
    tenant naming the same client_email and key id must not get the first tenant's access token."""
    key_hash = hashlib.sha256(str(info.get("private_key", "")).encode()).hexdigest()
    key = (info["client_email"], info.get("private_key_id", ""), info["token_uri"], key_hash)
    src = _TOKEN_SOURCES.get(key)
    if src is None:
        src = _TOKEN_SOURCES[key] = _TokenSource(info)
    return src


def build_message(message: PushMessage) -> dict[str, Any]:
    """The v1 ``Message`` for one token. Raises ValueError on non-string data (FCM would answer 400)."""
    data = dict(message.data)
    if message.deep_link:
        data.setdefault("deep_link", message.deep_link)
    for key, value in data.items():
        if not isinstance(value, str):
            raise ValueError(f"data[{key!r}] is {type(value).__name__}, FCM data values must be strings")
    body: dict[str, Any] = {"token": message.token, "notification": {"title": message.title, "body": message.body}}
    if data:
        body["data"] = data
    android: dict[str, Any] = {"priority": "HIGH" if message.priority == "high" else "NORMAL"}
    apns_headers = {"apns-priority": "10" if message.priority == "high" else "5"}
    if message.collapse_key:
        android["collapse_key"] = message.collapse_key
        apns_headers["apns-collapse-id"] = message.collapse_key[:64]
    if message.expires_at is not None:
        ttl = max(0, int(message.expires_at.timestamp() - time.time()))
        android["ttl"] = f"{ttl}s"
        apns_headers["apns-expiration"] = str(int(message.expires_at.timestamp()))
    body["android"] = android
    body["apns"] = {"headers": apns_headers}
    return body


# The tenant's setup, not the message: pause the tenant instead of failing messages for good. THIRD_PARTY_AUTH_ERROR
# is the APNs key (or web push key) uploaded to the Firebase project; PERMISSION_DENIED without an FCM error code is
# a service account without firebase.messaging rights. SENDER_ID_MISMATCH stays a per-message failure: it is one
# token registered to another project, and pausing a tenant for one foreign token would let one row block them all.
_CONFIG_CODES = ("THIRD_PARTY_AUTH_ERROR", "APNS_AUTH_ERROR")


def _classify_error(status: int, payload: Any, headers: Mapping[str, str]) -> tuple[str, str | None]:
    """(kind, code) with kind in invalid_token | failed | retry | reauth | unauthorized."""
    err = payload.get("error", {}) if isinstance(payload, dict) else {}
    details = err.get("details") or []
    code = next((d.get("errorCode") for d in details if d.get("@type") == FCM_ERROR_TYPE), None)
    canonical = err.get("status")
    if code == "UNREGISTERED":
        return "invalid_token", code
    if code == "INVALID_ARGUMENT" or (status == 400 and canonical == "INVALID_ARGUMENT"):
        violations = [
            v.get("field", "")
            for d in details
            if d.get("@type") == BAD_REQUEST_TYPE
            for v in d.get("fieldViolations", [])
        ]
        message = str(err.get("message", ""))
        if "message.token" in violations or "not a valid FCM registration token" in message:
            return "invalid_token", "INVALID_ARGUMENT"
        return "failed", "INVALID_ARGUMENT"
    if code in _CONFIG_CODES:
        return "unauthorized", code
    if code == "SENDER_ID_MISMATCH":
        return "failed", code
    if status == 403 and canonical == "PERMISSION_DENIED":
        return "unauthorized", canonical
    if status == 401:
        return "reauth", canonical or "UNAUTHENTICATED"
    if code == "QUOTA_EXCEEDED" or status == 429:
        return "retry", code or "QUOTA_EXCEEDED"
    if status in (500, 502, 503, 504):
        return "retry", code or canonical or f"HTTP_{status}"
    return "failed", code or canonical or f"HTTP_{status}"


class FcmProvider(H2Provider):
    name = "fcm"

    def __init__(
        self,
        credentials: FcmCredentials,
        *,
        base_url: str | None = None,
        max_concurrency: int = 100,  # FCM caps concurrent streams per HTTP/2 connection at 100
        rate_per_second: float = 10_000.0,  # project default is 600k/min
        retry_policy: RetryPolicy | None = None,
        client: httpx.AsyncClient | None = None,
        connections: int = 2,
        max_streams_per_connection: int = 100,
        timeout: float = 30.0,
    ) -> None:
        super().__init__(
            base_url=base_url or credentials.base_url or DEFAULT_BASE_URL,
            max_concurrency=max_concurrency,
            rate_per_second=rate_per_second,
            burst=rate_per_second,
            retry_policy=retry_policy,
            timeout=timeout,
            client=client,
            connections=connections,
            max_streams_per_connection=max_streams_per_connection,
        )
        self.project_id = credentials.project_id
        self.path = f"/v1/projects/{self.project_id}/messages:send"
        self.url = self.base_url + self.path
        self.tokens = token_source(credentials.service_account.reveal())
        self._headers: tuple[str, list[tuple[bytes, bytes]]] = ("", [])

    async def _post(self, body: bytes, token: str) -> Response | httpx.Response:  # type: ignore[override]
        cached_token, headers = self._headers
        if token != cached_token:  # one header list per access token: h2's HPACK table indexes it after one use
            headers = [(b"authorization", f"Bearer {token}".encode()), (b"content-type", b"application/json")]
            self._headers = (token, headers)
        return await super()._post(self.path, headers, body)

    async def preflight(self) -> None:
        """Get (or reuse) an access token before anything is claimed: a revoked key or an unknown service account
        pauses the tenant instead of costing a chunk of claims."""
        try:
            await self.tokens.token()
        except google.auth.exceptions.RefreshError:
            raise ProviderAuthError("AUTH_REFRESH_FAILED") from None
        except google.auth.exceptions.TransportError as exc:
            raise TransientError(f"FCM token endpoint unreachable: {type(exc).__name__}") from None

    async def _send_one(self, message: PushMessage) -> SendOutcome | Retryable:
        try:
            body = json.dumps({"message": build_message(message)}).encode()
        except ValueError:
            return SendOutcome(message.message_id, "failed", "INVALID_DATA")
        try:
            token = await self.tokens.token()
            resp = await self._post(body, token)
            if resp.status_code == 401 and _classify_error(401, json_object(resp), resp.headers)[0] == "reauth":
                token = await self.tokens.token(force=True, stale=token)
                resp = await self._post(body, token)
        except google.auth.exceptions.RefreshError:
            # The token endpoint refused the service account (revoked key, wrong token_uri): a config problem.
            return SendOutcome(message.message_id, "unauthorized", "AUTH_REFRESH_FAILED")
        except google.auth.exceptions.TransportError as exc:
            return Retryable(f"auth_transport:{type(exc).__name__}")
        if resp.status_code == 200:
            name = json_object(resp).get("name") if resp.content else None
            return SendOutcome(message.message_id, "sent", provider_message_id=name)
        kind, code = _classify_error(resp.status_code, json_object(resp), resp.headers)
        if kind == "invalid_token":
            return SendOutcome(message.message_id, "invalid_token", code)
        if kind in ("unauthorized", "reauth"):  # reauth: still 401 with a freshly refreshed token
            return SendOutcome(message.message_id, "unauthorized", code)
        if kind == "retry":
            retry_after = retry_after_seconds(resp.headers)
            min_delay = QUOTA_MIN_DELAY if code == "QUOTA_EXCEEDED" and retry_after is None else 0.0
            return Retryable(code or "retry", retry_after, min_delay)
        return SendOutcome(message.message_id, "failed", code)

"""Apple Push Notification service, token (JWT) auth, HTTP/2: ``POST {base}/3/device/{token}``.

The ES256 provider token is cached per (team_id, key_id, hash of the key) in-process and re-signed only after ``JWT_TTL`` (Apple: no
more than once every 20 min, no less than once every 60 min; re-signing too often gets 429
TooManyProviderTokenUpdates). Across instances the signed token should live in shared storage (e.g. a Secret Manager
version or Firestore doc with its iat) so that cold starts reuse it instead of minting their own.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import jwt

from shared.push.providers.base import (
    H2Provider,
    ProviderAuthError,
    PushMessage,
    SendOutcome,
    epoch_to_datetime,
    json_object,
    retry_after_seconds,
)
from shared.push.retry import Retryable, RetryPolicy

if TYPE_CHECKING:
    from datetime import datetime

    import httpx

    from shared.push.credentials import ApnsCredentials
    from shared.push.transport import Response

PRODUCTION_URL = "https://api.push.apple.com"
SANDBOX_URL = "https://api.sandbox.push.apple.com"
JWT_TTL = 50 * 60.0
MAX_PAYLOAD = 4096
INVALID_TOKEN_REASONS = {"Unregistered", "ExpiredToken", "BadDeviceToken"}
RETRY_STATUSES = {429, 500, 503}
# The tenant's key, team or app (topic) is wrong: pause the tenant, do not fail the message for good.
CONFIG_REASONS = {
    "InvalidProviderToken",
    "MissingProviderToken",
    "ExpiredProviderToken",  # still expired right after re-signing: the clock or the key is wrong
    "BadCertificate",
    "BadCertificateEnvironment",
    "Forbidden",
    "BadTopic",
    "MissingTopic",
    "TopicDisallowed",
}


@dataclass(slots=True)
class _SignedToken:
    value: str
    issued_at: float


class ProviderTokenCache:
    """Signed provider JWTs per (team_id, key_id, hash of the private key), shared by every adapter in the process.

    The identifiers are not secret: keyed by them alone, a second tenant naming the same team and key id would be
    handed the first tenant's signed token. ``signs`` counts signatures per (team_id, key_id)."""

    def __init__(self, ttl: float = JWT_TTL) -> None:
        self.ttl = ttl
        self._tokens: dict[tuple[str, str, str], _SignedToken] = {}
        self.signs: dict[tuple[str, str], int] = {}

    def get(self, team_id: str, key_id: str, private_key: str, *, stale: str | None = None) -> str:
        """The cached token, or a new one if it is older than ``ttl`` or equals ``stale`` (APNs said it expired)."""
        key = (team_id, key_id, hashlib.sha256(private_key.encode()).hexdigest())
        now = time.time()
        cur = self._tokens.get(key)
        if cur is not None and now - cur.issued_at < self.ttl and cur.value != stale:
            return cur.value
        iat = int(now)
        value = jwt.encode({"iss": team_id, "iat": iat}, private_key, algorithm="ES256", headers={"kid": key_id})
        self._tokens[key] = _SignedToken(value, iat)
        self.signs[(team_id, key_id)] = self.signs.get((team_id, key_id), 0) + 1
        return value

    def clear(self) -> None:
        self._tokens.clear()
        self.signs.clear()


TOKEN_CACHE = ProviderTokenCache()


def apns_id(message: PushMessage) -> str:
    """A stable canonical UUID per message (apns-id is echoed back and shows in Apple's delivery log)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"landline:{message.idempotency_key or message.message_id}"))


def build_payload(message: PushMessage) -> dict[str, Any]:
    payload: dict[str, Any] = {k: v for k, v in message.data.items() if k != "aps"}
    payload["aps"] = {"alert": {"title": message.title, "body": message.body}, "sound": "default"}
    if message.deep_link:
        payload.setdefault("deep_link", message.deep_link)
    return payload


class ApnsProvider(H2Provider):
    name = "apns"

    def __init__(
        self,
        credentials: ApnsCredentials,
        *,
        base_url: str | None = None,
        max_concurrency: int = 100,
        rate_per_second: float = 5_000.0,
        retry_policy: RetryPolicy | None = None,
        client: httpx.AsyncClient | None = None,
        token_cache: ProviderTokenCache | None = None,
        connections: int = 2,
        max_streams_per_connection: int = 1000,  # APNs advertises 500-1,500 and lowers it at will; we follow SETTINGS
        timeout: float = 30.0,
    ) -> None:
        default = PRODUCTION_URL if credentials.environment == "production" else SANDBOX_URL
        super().__init__(
            base_url=base_url or credentials.base_url or default,
            max_concurrency=max_concurrency,
            rate_per_second=rate_per_second,
            retry_policy=retry_policy,
            timeout=timeout,
            client=client,
            connections=connections,
            max_streams_per_connection=max_streams_per_connection,
        )
        self.creds = credentials
        self.tokens = token_cache or TOKEN_CACHE
        self._resign_lock = asyncio.Lock()
        self._fixed: tuple[str, list[tuple[bytes, bytes]]] = ("", [])

    def _jwt(self, stale: str | None = None) -> str:
        """The signed provider token; ``ProviderAuthError`` when the key cannot sign (malformed, not EC P-256)."""
        c = self.creds
        try:
            return self.tokens.get(c.team_id, c.key_id, c.private_key.reveal(), stale=stale)
        except Exception as exc:  # PyJWT/cryptography raise several types for a bad key
            raise ProviderAuthError(f"InvalidPrivateKey:{type(exc).__name__}") from None

    async def preflight(self) -> None:
        self._jwt()

    async def _post(self, message: PushMessage, body: bytes, jwt_token: str) -> Response | httpx.Response:  # type: ignore[override]
        cached, fixed = self._fixed
        if jwt_token != cached:  # the per-connection headers, rebuilt only when the provider token changes
            fixed = [
                (b"authorization", f"bearer {jwt_token}".encode()),
                (b"apns-topic", self.creds.topic.encode()),
                (b"apns-push-type", b"alert"),
            ]
            self._fixed = (jwt_token, fixed)
        headers = [
            *fixed,
            (b"apns-priority", b"10" if message.priority == "high" else b"5"),
            (b"apns-id", apns_id(message).encode()),
        ]
        if message.expires_at is not None:
            headers.append((b"apns-expiration", str(int(message.expires_at.timestamp())).encode()))
        if message.collapse_key:
            headers.append((b"apns-collapse-id", message.collapse_key[:64].encode()))
        # A device token is hex; anything else is percent-encoded so it can never change the request's path.
        return await super()._post(f"/3/device/{quote(message.token, safe='')}", headers, body)

    async def _send_one(self, message: PushMessage) -> SendOutcome | Retryable:
        body = json.dumps(build_payload(message), separators=(",", ":")).encode()
        if len(body) > MAX_PAYLOAD:
            return SendOutcome(message.message_id, "failed", "PayloadTooLarge")
        try:
            token = self._jwt()
            resp = await self._post(message, body, token)
            reason = _reason(resp)
            if resp.status_code == 403 and reason == "ExpiredProviderToken":
                async with self._resign_lock:  # one re-sign for all streams that saw the same expired token
                    token = self._jwt(stale=token)
                resp = await self._post(message, body, token)
                reason = _reason(resp)
        except ProviderAuthError as exc:
            return SendOutcome(message.message_id, "unauthorized", exc.reason)
        status = resp.status_code
        if status == 200:
            return SendOutcome(message.message_id, "sent", provider_message_id=resp.headers.get("apns-id"))
        if reason in INVALID_TOKEN_REASONS and status in (400, 410):
            invalidated = None
            if status == 410:
                invalidated = _invalidated_at(json_object(resp).get("timestamp"))
            return SendOutcome(message.message_id, "invalid_token", reason, token_invalidated_at=invalidated)
        if reason in CONFIG_REASONS:
            return SendOutcome(message.message_id, "unauthorized", reason)
        if status in RETRY_STATUSES:
            return Retryable(reason or f"HTTP_{status}", retry_after_seconds(resp.headers))
        return SendOutcome(message.message_id, "failed", reason or f"HTTP_{status}")


def _invalidated_at(ms: Any) -> datetime | None:
    """APNs 410 ``timestamp`` (ms since the epoch) as a datetime; None when it is not a usable number."""
    if isinstance(ms, bool) or not isinstance(ms, int | float):
        return None
    try:
        seconds = ms / 1000
    except OverflowError:  # an int beyond float range
        return None
    return epoch_to_datetime(seconds) if math.isfinite(seconds) else None


def _reason(resp: Response | httpx.Response) -> str | None:
    if resp.status_code == 200 or not resp.content:
        return None
    reason = json_object(resp).get("reason")
    return str(reason) if reason else None

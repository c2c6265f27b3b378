"""What every provider adapter shares: the message/outcome types and the send loop.

The loop (bounded concurrency, rate limit, retry with backoff honouring Retry-After, defer past the deadline) lives
here once, so each provider module only says how to build one request and how to read one response.
"""

from __future__ import annotations

import abc
import asyncio
import importlib.util
import logging
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

import h2.exceptions
import httpx

from shared.push.ratelimit import TokenBucket
from shared.push.retry import Deferral, Retryable, RetryPolicy, call_with_retry

if TYPE_CHECKING:
    from collections.abc import Sequence

log = logging.getLogger(__name__)

# httpcore 1.0.x runs `import sniffio` inside every request/lock setup; anyio 4 no longer installs sniffio, so each
# failed import rescans sys.path (~4 per request, ~40% of our client CPU at loopback rates). A None entry in
# sys.modules is Python's documented way to make that import fail fast; httpcore then falls back to "asyncio".
# Only done when sniffio really is absent. (Better: add sniffio to the dependencies.)
if importlib.util.find_spec("sniffio") is None:
    sys.modules.setdefault("sniffio", None)  # type: ignore[arg-type]

Status = Literal["sent", "failed", "deferred", "invalid_token"]
Priority = Literal["high", "normal"]


@dataclass(frozen=True, slots=True)
class PushMessage:
    """One notification to one device/recipient. ``token`` is the provider's address (device token, subscription id,
    Expo push token; Braze addresses ``contact_id`` as external_user_id)."""

    message_id: str
    contact_id: str
    token: str
    title: str
    body: str
    data: dict[str, str] = field(default_factory=dict)
    deep_link: str | None = None
    collapse_key: str | None = None
    priority: Priority = "high"
    expires_at: datetime | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """The result of one message: what the caller records in ``message_sends``.

    ``deferred`` means "not sent, try again at ``retry_after``" (throttled or transient and the tick's budget ran out);
    ``invalid_token`` means the address is dead and should be marked (``token_invalidated_at`` when the provider says
    since when, e.g. APNs 410).
    """

    message_id: str
    status: Status
    reason: str | None = None
    provider_message_id: str | None = None
    retry_after: datetime | None = None
    token_invalidated_at: datetime | None = None


class Provider(abc.ABC):
    """A push provider adapter. One instance per (tenant credentials, process); reuse it across ticks."""

    name: str

    @abc.abstractmethod
    async def send_many(self, messages: Sequence[PushMessage], *, deadline: float) -> list[SendOutcome]:
        """Send ``messages``; return one outcome per message, in order.

        ``deadline`` is an absolute ``time.time()`` value: no wait (backoff, Retry-After, rate limit) extends past it;
        such messages come back ``deferred`` with ``retry_after``. Never raises for per-message failures.
        """

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close the shared HTTP client."""

    async def __aenter__(self) -> Provider:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


# Connection-level failures that a retry on a (new) stream/connection can fix: resets, GOAWAY on a retiring HTTP/2
# connection (surfaces as RemoteProtocolError / WriteError / LocalProtocolError "max outbound streams"), timeouts.
RETRYABLE_EXCEPTIONS: tuple[type[BaseException], ...] = (httpx.TransportError, h2.exceptions.ProtocolError)


def retry_after_seconds(headers: httpx.Headers, now: float | None = None) -> float | None:
    """Parse ``Retry-After`` (delta seconds or HTTP date) into seconds from now."""
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


def epoch_to_datetime(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


class HttpProvider(Provider):
    """Per-message request/response providers (FCM, APNs, OneSignal, Braze): subclasses implement ``_send_one``.

    One ``httpx.AsyncClient`` per provider instance (connection reuse; HTTP/2 where the provider speaks it), a
    semaphore for concurrency and a token bucket for pacing.
    """

    def __init__(
        self,
        *,
        base_url: str,
        http2: bool,
        max_concurrency: int,
        rate_per_second: float,
        burst: float | None = None,
        retry_policy: RetryPolicy | None = None,
        timeout: float = 30.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        # h2c (cleartext HTTP/2, the fakes) needs prior knowledge: http1=False. Over TLS ALPN picks h2.
        cleartext = self.base_url.startswith("http://")
        self._client = client or httpx.AsyncClient(
            http2=http2,
            http1=not (http2 and cleartext),
            timeout=timeout,
            limits=httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency),
        )
        self._owns_client = client is None
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._bucket = TokenBucket(rate_per_second, burst if burst is not None else max(1.0, rate_per_second))
        self.retry_policy = retry_policy or RetryPolicy()

    @abc.abstractmethod
    async def _send_one(self, message: PushMessage) -> SendOutcome | Retryable:
        """One HTTP attempt: a final outcome, or ``Retryable`` (reason, server Retry-After, minimum delay)."""

    async def _attempt(self, message: PushMessage) -> SendOutcome | Retryable:
        try:
            return await self._send_one(message)
        except RETRYABLE_EXCEPTIONS as exc:
            return Retryable(f"connection:{type(exc).__name__}")

    async def _send_with_retry(self, message: PushMessage, deadline: float) -> SendOutcome:
        async with self._semaphore:
            wait = await self._bucket.acquire(deadline=deadline)
            if wait is not None:
                return SendOutcome(message.message_id, "deferred", "rate_limited", retry_after=epoch_to_datetime(wait))
            result = await call_with_retry(lambda: self._attempt(message), deadline=deadline, policy=self.retry_policy)
        if isinstance(result, Deferral):
            return SendOutcome(message.message_id, "deferred", result.reason, retry_after=result.until)
        return result

    async def send_many(self, messages: Sequence[PushMessage], *, deadline: float) -> list[SendOutcome]:
        return list(await asyncio.gather(*(self._send_with_retry(m, deadline) for m in messages)))

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

"""What every provider adapter shares: the message/outcome types and the send loop.

The loop (bounded concurrency, rate limit, retry with backoff honouring Retry-After, defer past the deadline) lives
here once, so each provider module only says how to build one request and how to read one response.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import h2.exceptions
import httpx

from shared.push import transport
from shared.push.ratelimit import TokenBucket
from shared.push.retry import Deferral, Retryable, RetryPolicy, call_with_retry

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

log = logging.getLogger(__name__)

Status = Literal["sent", "failed", "deferred", "invalid_token", "unauthorized"]
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
    since when, e.g. APNs 410); ``unauthorized`` means the provider refused the tenant's credentials or configuration
    (not this message's fault: the caller defers it and pauses the tenant until the secret is fixed). ``failed`` with
    reason ``outcome_unknown:<error>`` means the request may have reached the provider without an answer (a timeout
    or reset after sending): it is never resent, since the provider has no way to drop the second copy.
    """

    message_id: str
    status: Status
    reason: str | None = None
    provider_message_id: str | None = None
    retry_after: datetime | None = None
    token_invalidated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Receipt:
    """A delivery result that arrives after the provider accepted a send (Expo's receipts): ``ok`` (handed on),
    ``invalid_token`` (the address is dead) or ``failed`` (``reason`` = the provider's error code). ``ticket_id`` is
    the send's ``provider_message_id``."""

    ticket_id: str
    status: Literal["ok", "invalid_token", "failed"]
    reason: str | None = None


class ProviderAuthError(Exception):
    """The provider's credentials cannot work (a key that does not sign, a service account the token endpoint
    refuses): found before anything is claimed or sent. ``reason`` is a code, never a secret."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Provider(abc.ABC):
    """A push provider adapter. One instance per (tenant credentials, process); reuse it across ticks."""

    name: str
    # True when the provider drops a repeated request itself (an idempotency key): only then is a request that may
    # have reached it resent after a timeout or reset.
    idempotent: bool = False
    # True when delivery results arrive later as receipts (``fetch_receipts``): the tick then polls the receipts of
    # earlier sends after sending, with time to spare, and records them as rows of their own (status ``receipt``).
    has_receipts: ClassVar[bool] = False

    async def preflight(self) -> None:  # noqa: B027 - optional hook; most providers can only tell by sending
        """Check what can be checked about the credentials without sending (raises ``ProviderAuthError``)."""

    @abc.abstractmethod
    async def send_many(self, messages: Sequence[PushMessage], *, deadline: float) -> list[SendOutcome]:
        """Send ``messages``; return one outcome per message, in order.

        ``deadline`` is an absolute ``time.time()`` value: no wait (backoff, Retry-After, rate limit) extends past it;
        such messages come back ``deferred`` with ``retry_after``. Never raises for per-message failures.
        """

    async def fetch_receipts(self, ticket_ids: Sequence[str]) -> dict[str, Receipt]:
        """Receipts of earlier sends by ``provider_message_id``; an id without one yet is absent. Transport errors
        raise (the caller polls again on a later tick). Providers without receipts have none."""
        return {}

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close the shared HTTP client."""

    async def __aenter__(self) -> Provider:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


# Connection-level failures. Only ``NOT_SENT_EXCEPTIONS`` prove that nothing of the request left this process
# (connect failures, a stream the server refused or never processed under GOAWAY): those are resent. The others
# (timeouts, resets and closed connections after the request was written) are ambiguous: the provider may have
# delivered it, so without an idempotency key the message is recorded ``failed/outcome_unknown`` instead.
RETRYABLE_EXCEPTIONS: tuple[type[BaseException], ...] = (
    httpx.TransportError,
    h2.exceptions.ProtocolError,
    transport.TransportError,
)
NOT_SENT_EXCEPTIONS: tuple[type[BaseException], ...] = (
    transport.RequestNotSent,
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)
MAX_RETRY_AFTER_S = 86_400.0  # a provider asking for more than a day (or for 10**400 s) is clamped, not obeyed


def connection_failure(message: PushMessage, exc: BaseException, *, idempotent: bool) -> SendOutcome | Retryable:
    """A transport exception as an outcome: resend only when nothing was sent or the provider deduplicates."""
    if idempotent or isinstance(exc, NOT_SENT_EXCEPTIONS):
        return Retryable(f"connection:{type(exc).__name__}")
    return SendOutcome(message.message_id, "failed", f"outcome_unknown:{type(exc).__name__}")


def clamp_delay(seconds: float | None) -> float | None:
    """A server-given wait in seconds, within 0..``MAX_RETRY_AFTER_S``; None when it is not a number."""
    if seconds is None or math.isnan(seconds):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER_S)


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Parse ``Retry-After`` (delta seconds or HTTP date) into seconds from now, clamped to a day."""
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return clamp_delay(float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return clamp_delay(when.timestamp() - (now if now is not None else time.time()))


def epoch_to_datetime(seconds: float) -> datetime | None:
    """A provider's epoch seconds as a UTC datetime; None when it is not a representable time (NaN, 1e400, ...)."""
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


class PerMessageProvider(Provider):
    """Providers with one request per message (FCM, APNs, OneSignal, Braze): subclasses implement ``_send_one``.

    A semaphore caps messages in flight and a token bucket paces them; retries go through ``call_with_retry`` only
    after a first attempt came back ``Retryable`` (building a tenacity loop per message costs more CPU than the HTTP/2
    request itself on the fast path).
    """

    def __init__(
        self,
        *,
        base_url: str,
        max_concurrency: int,
        rate_per_second: float,
        burst: float | None = None,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
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
            return connection_failure(message, exc, idempotent=self.idempotent)

    async def _send_with_retry(self, message: PushMessage, deadline: float) -> SendOutcome:
        async with self._semaphore:
            wait = await self._bucket.acquire(deadline=deadline)
            if wait is not None:
                return SendOutcome(message.message_id, "deferred", "rate_limited", retry_after=epoch_to_datetime(wait))
            first = await self._attempt(message)
            if not isinstance(first, Retryable):
                return first
            pending = [first]

            async def attempt() -> SendOutcome | Retryable:
                return pending.pop() if pending else await self._attempt(message)

            result = await call_with_retry(attempt, deadline=deadline, policy=self.retry_policy)
        if isinstance(result, Deferral):
            return SendOutcome(message.message_id, "deferred", result.reason, retry_after=result.until)
        return result

    async def send_many(self, messages: Sequence[PushMessage], *, deadline: float) -> list[SendOutcome]:
        return list(await asyncio.gather(*(self._send_with_retry(m, deadline) for m in messages)))


class HttpProvider(PerMessageProvider):
    """Per-message providers over one ``httpx.AsyncClient`` (connection reuse), for the HTTP/1.1 JSON APIs."""

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
        super().__init__(
            base_url=base_url,
            max_concurrency=max_concurrency,
            rate_per_second=rate_per_second,
            burst=burst,
            retry_policy=retry_policy,
        )
        # h2c (cleartext HTTP/2, the fakes) needs prior knowledge: http1=False. Over TLS ALPN picks h2.
        cleartext = self.base_url.startswith("http://")
        self._client = client or httpx.AsyncClient(
            http2=http2,
            http1=not (http2 and cleartext),
            timeout=timeout,
            limits=httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency),
        )
        self._owns_client = client is None

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()


class H2Provider(PerMessageProvider):
    """Per-message providers that speak HTTP/2 (FCM, APNs) over ``shared.push.transport.H2Pool``.

    ``connections`` HTTP/2 connections of at most ``max_streams_per_connection`` streams each; a second connection only
    opens when the first is full (``max_concurrency`` above the per-connection cap) or retiring (GOAWAY). An injected
    ``httpx.AsyncClient`` (``client=``) is still honoured, e.g. for tests with a mock transport.
    """

    def __init__(
        self,
        *,
        base_url: str,
        max_concurrency: int,
        rate_per_second: float,
        burst: float | None = None,
        retry_policy: RetryPolicy | None = None,
        timeout: float = 30.0,
        connections: int = 2,
        max_streams_per_connection: int = 100,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(
            base_url=base_url,
            max_concurrency=max_concurrency,
            rate_per_second=rate_per_second,
            burst=burst,
            retry_policy=retry_policy,
        )
        self._client = client
        self._pool = transport.H2Pool(
            self.base_url, connections=connections, max_streams=max_streams_per_connection, timeout=timeout
        )

    async def _post(
        self, path: str, headers: Sequence[tuple[bytes, bytes]], body: bytes
    ) -> transport.Response | httpx.Response:
        """POST to ``base_url + path``; ``path`` already percent-encoded where needed."""
        if self._client is not None:
            return await self._client.post(self.base_url + path, content=body, headers=list(headers))
        return await self._pool.post(path.encode(), headers, body)

    async def aclose(self) -> None:
        await self._pool.aclose()


def json_object(resp: transport.Response | httpx.Response) -> dict[str, Any]:
    """A response's JSON body when it is an object, else ``{}``: providers' error bodies are not always JSON."""
    try:
        value = resp.json()
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}

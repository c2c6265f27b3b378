"""Retry with exponential backoff + jitter that honours Retry-After, bounded by the tick's deadline.

A scheduled function must not sleep through a 60 s Retry-After (or a Braze reset at the top of the hour): when the
next wait would end after ``deadline`` the call returns a ``Deferral`` ("try again at T") and the scheduler carries
the message to a later tick. Built on tenacity (its ``AsyncRetrying`` loop, ``stop_after_attempt`` and
``wait_exponential_jitter``); only the "defer instead of sleeping" hook and the Retry-After wait are ours.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_result, stop_after_attempt, wait_exponential_jitter

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

T = TypeVar("T")

MAX_DEFER_S = 86_400.0  # no wait is longer than a day, whatever a server says (inf, 10**400 or a date in year 9999)


def bounded_delay(seconds: float) -> float:
    """``seconds`` within 0..``MAX_DEFER_S`` (NaN -> the maximum): a datetime can always be made from it."""
    return MAX_DEFER_S if math.isnan(seconds) else min(max(0.0, seconds), MAX_DEFER_S)


@dataclass(frozen=True, slots=True)
class Retryable:
    """A failed attempt that may succeed later. ``retry_after``: the server's hint in seconds; ``min_delay``: a floor
    the provider documents (FCM QUOTA_EXCEEDED: 60 s when no Retry-After)."""

    reason: str
    retry_after: float | None = None
    min_delay: float = 0.0


@dataclass(frozen=True, slots=True)
class Deferral:
    """Not done within the budget: try again at ``until``."""

    reason: str
    until: datetime


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``max_attempts`` HTTP attempts per call; backoff ``initial * 2**n`` (capped at ``maximum``) plus up to
    ``jitter`` seconds of random jitter."""

    max_attempts: int = 5
    initial: float = 0.5
    maximum: float = 30.0
    jitter: float = 0.5

    def wait_for(self, retry_state: RetryCallState) -> float:
        """Seconds to wait before the next attempt: the server's Retry-After if it gave one, else exponential backoff
        with jitter; never below the provider's documented minimum."""
        last = retry_state.outcome.result() if retry_state.outcome and not retry_state.outcome.failed else None
        backoff = wait_exponential_jitter(multiplier=self.initial, max=self.maximum, jitter=self.jitter)(retry_state)
        if isinstance(last, Retryable):
            base = last.retry_after if last.retry_after is not None else backoff
            return bounded_delay(max(base, last.min_delay))
        return backoff


class _Defer(Exception):
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


async def call_with_retry(
    attempt: Callable[[], Awaitable[T | Retryable]],
    *,
    deadline: float,
    policy: RetryPolicy,
    clock: Callable[[], float] = time.time,
) -> T | Deferral:
    """Run ``attempt`` until it returns something other than ``Retryable``.

    Returns the final value, or a ``Deferral`` when the next wait would pass ``deadline`` (absolute ``time.time()``)
    or the attempts are used up (a transient failure is never turned into a permanent one here).
    """
    import asyncio

    last: list[Retryable] = []

    async def run() -> T | Retryable:
        result = await attempt()
        if isinstance(result, Retryable):
            last[:] = [result]
        return result

    async def sleep(seconds: float) -> None:
        if clock() + seconds > deadline:
            raise _Defer(seconds)
        await asyncio.sleep(seconds)

    def give_up(state: RetryCallState) -> Retryable:
        # Attempts used up: defer by one more backoff rather than sleeping it.
        raise _Defer(policy.wait_for(state))

    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.max_attempts),
        wait=policy.wait_for,
        retry=retry_if_result(lambda r: isinstance(r, Retryable)),
        sleep=sleep,
        retry_error_callback=give_up,
        reraise=True,
    )
    try:
        result: T | Retryable = await retrying(run)
    except _Defer as defer:
        reason = last[-1].reason if last else "retry"
        return Deferral(reason, datetime.fromtimestamp(clock() + bounded_delay(defer.seconds), tz=UTC))
    assert not isinstance(result, Retryable)
    return result

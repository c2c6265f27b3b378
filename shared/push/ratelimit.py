"""Async token bucket, one per provider (per tenant credentials) per process.

Providers throttle per project/app (FCM 600k/min, Expo 600/s, OneSignal 6k req/s, Braze 250k/h): pacing ourselves is
cheaper than collecting 429s. A wait that would pass the tick's deadline is not taken: the caller defers instead.
"""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` banked. Waiters are served in order (one lock)."""

    def __init__(self, rate: float, burst: float) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._updated = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self, now: float) -> None:
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    async def acquire(self, tokens: float = 1.0, *, deadline: float | None = None) -> float | None:
        """Take ``tokens``, sleeping if needed. Returns None when taken, or the ``time.time()`` at which they would be
        available when that is after ``deadline`` (nothing is taken then)."""
        if tokens > self.burst:
            raise ValueError(f"cannot take {tokens} tokens from a bucket of {self.burst}")
        async with self._lock:
            now = time.monotonic()
            self._refill(now)
            missing = tokens - self._tokens
            if missing > 0:
                wait = missing / self.rate
                if deadline is not None and time.time() + wait > deadline:
                    return time.time() + wait
                await asyncio.sleep(wait)
                self._refill(time.monotonic())
            self._tokens -= tokens
            return None

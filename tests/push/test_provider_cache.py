"""The per-instance provider cache (shared/push/tick.py ``provider_for``) under threads: functions-framework serves
several requests of one instance at once, and a campaign's shards may land on the same instance. Every thread shares
one provider (one HTTP/2 pool); replacing it (credentials re-read after the TTL, or refused) must never close it under
a send another thread has in flight: that failed the in-flight requests (``ConnectionClosed`` -> recorded
``outcome_unknown``, never resent) and every waiting one (``StreamNotOpened`` -> deferred to a later tick)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from shared.config import Tenant
from shared.push import tick


class Closable:
    """A provider whose send fails if the provider is closed while the send is in flight, like an HTTP/2 pool."""

    made = 0

    def __init__(self) -> None:
        Closable.made += 1
        self.closed = False

    async def send(self, seconds: float) -> str:
        await asyncio.sleep(seconds)
        if self.closed:
            raise ConnectionError("connection closed by client")
        return "sent"

    async def aclose(self) -> None:
        self.closed = True


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A clean cache, providers made slowly (as reading a secret and building a client is), and the secret reads."""
    reads: list[str] = []

    class Secrets:
        def get(self, tenant: str, name: str) -> Any:
            reads.append(tenant)
            time.sleep(0.2)
            return object()

    Closable.made = 0
    monkeypatch.setattr(tick, "_providers", {})
    monkeypatch.setattr(tick, "_creating", {})
    monkeypatch.setattr(tick, "secret_source", Secrets)
    monkeypatch.setattr(tick, "create_provider", lambda credentials, **kw: Closable())
    return reads


ACME = Tenant(name="acme", region="europe-west1", bucket="b-acme", dataset="d_acme", push_provider="fcm")


def test_threads_asking_at_once_share_one_provider(cache: list[str]) -> None:
    # GIVEN eight threads that ask for the tenant's provider at the same moment
    got: list[Any] = []
    threads = [threading.Thread(target=lambda: got.append(tick.provider_for(ACME, "fcm"))) for _ in range(8)]
    # WHEN they run
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    # THEN the secret was read once and every thread holds the same open provider
    assert len(got) == 8 and len({id(p) for p in got}) == 1 and Closable.made == 1 and cache == ["acme"]
    assert not got[0].closed


@pytest.mark.parametrize("replace", ["ttl", "refused"])
def test_a_replaced_provider_is_closed_only_after_the_sends_using_it(
    cache: list[str], monkeypatch: pytest.MonkeyPatch, replace: str
) -> None:
    # GIVEN a thread sending through the tenant's provider (a send that takes 0.5 s), and a close delay of 1 s
    monkeypatch.setattr(tick, "RETIRED_PROVIDER_CLOSE_S", 1.0)
    first = tick.provider_for(ACME, "fcm")
    assert isinstance(first, Closable)
    in_flight = asyncio.run_coroutine_threadsafe(first.send(0.5), tick._event_loop().loop)
    # WHEN another thread replaces it meanwhile: its credentials are re-read after the TTL, or were refused
    if replace == "ttl":
        monkeypatch.setattr(tick, "_PROVIDER_TTL_S", 0.0)
        second = tick.provider_for(ACME, "fcm")
        assert second is not first and Closable.made == 2
    else:
        tick.forget_provider(ACME, "fcm")
    # THEN the send in flight completes, and the old provider is closed once the delay has passed
    assert in_flight.result(5) == "sent"
    assert not first.closed
    deadline = time.monotonic() + 5
    while not first.closed and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.closed

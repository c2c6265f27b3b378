"""The router's bookkeeping behind `landline wait`: what is still expected, whatever order events arrive in."""

from __future__ import annotations

from infra.local import router
from infra.local.router import RouterState


def test_an_object_handled_before_it_is_announced_is_not_waited_for() -> None:
    # GIVEN a small object ingested (settled) before `landline drop` told the router to expect it
    state = RouterState(max_delivery_attempts=5)
    with state.lock:
        state.settle("bucket/a.gz#1", None)
    # WHEN the expectation arrives late, together with one for an object not handled yet
    state.expect(["bucket/a.gz#1", "bucket/b.gz#2"])
    # THEN only the unhandled object is waited for, and settling it clears it
    assert state.snapshot()["expected_objects"] == ["bucket/b.gz#2"]
    with state.lock:
        state.settle("bucket/b.gz#2", "msg:7")
    assert state.snapshot()["expected_objects"] == []


def test_the_memory_of_settled_keys_is_bounded(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # GIVEN a small limit
    monkeypatch.setattr(router, "_SETTLED_LIMIT", 3)
    state = RouterState(max_delivery_attempts=5)
    # WHEN more keys than that settle
    with state.lock:
        state.settle("k1", "k2", "k3", "k4", "k5")
    # THEN the oldest are forgotten first
    assert list(state.settled) == ["k3", "k4", "k5"]

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


def _notification(bucket: str, event: str = "OBJECT_FINALIZE") -> dict[str, object]:
    return {"messageId": "9", "data": "", "attributes": {
        "eventType": event, "bucketId": bucket, "objectId": "segment-logs/a.gz", "objectGeneration": "5"}}


def test_the_router_plays_each_tenant_buckets_notification_config(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # GIVEN two tenants' buckets in the registry the functions read
    registry = tmp_path / "tenants.json"
    registry.write_text('{"acme": {"bucket": "b-acme"}, "globex": {"bucket": "b-globex"}}')
    # WHEN the storage emulator reports objects (it sends every bucket's events to one topic)
    # THEN a finalized object of a tenant's bucket goes to that tenant's notification topic, as Terraform's
    # per-bucket notification config sends it; other buckets (claims) and other event types have no config
    assert router.notification_target(_notification("b-acme"), str(registry), "object-notifications") == (
        "object-notifications.acme"
    )
    assert router.notification_target(_notification("b-globex"), str(registry), "object-notifications") == (
        "object-notifications.globex"
    )
    assert router.notification_target(_notification("b-acme-claims"), str(registry), "object-notifications") is None
    assert router.notification_target(_notification("b-acme", "OBJECT_DELETE"), str(registry), "x") is None
    # ... and `landline wait` knows the object by the key `landline drop` announced
    attributes = _notification("b-acme")["attributes"]
    assert router.object_key(attributes) == "b-acme/segment-logs/a.gz#5"  # type: ignore[arg-type]


def test_an_object_stays_expected_until_its_tenants_delivery_settles() -> None:
    # GIVEN an announced object, whose notification the router republished to its tenant's topic
    state = RouterState(max_delivery_attempts=2)
    state.expect(["b/a.gz#5"])
    with router._Delivery(state, "notifications", "1", "b/a.gz#5", settle_key=False) as fan_out:
        fan_out.ok = True
    # THEN it is still waited for (the tenant's delivery to ingest_file has not happened yet) ...
    assert state.snapshot()["expected_objects"] == ["b/a.gz#5"]
    # ... until that delivery fails its last attempt (the emulator then parks it in the dead-letter topic)
    for _ in range(2):
        with router._Delivery(state, "ingest_file", "2", "b/a.gz#5"):
            pass
    snapshot = state.snapshot()
    assert (snapshot["expected_objects"], snapshot["dead_lettered"], snapshot["awaiting_retry"]) == ([], 1, 0)

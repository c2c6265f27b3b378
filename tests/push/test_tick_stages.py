"""The tick's stages without a stack: ``decide`` is pure (no query, no write), and receipts are polled through the
provider hook (``Provider.has_receipts`` / ``fetch_receipts``) for any provider that has them, and never for one that
has not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.config import Tenant
from shared.push import tick
from shared.push.providers import ExpoProvider, FcmProvider, Receipt, provider_class
from shared.push.providers.base import Provider
from shared.warehouse.rows import InvalidTokenRow, SendRow
from tests.push.test_tick_isolation import candidate

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def tenant(provider: str) -> Tenant:
    return Tenant(name="acme", region="europe-west1", bucket="b-acme", dataset="d_acme", push_provider=provider)


def test_decide_is_pure_and_splits_records_from_sends(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN no I/O at all is allowed
    def no_io(*a: Any, **k: Any) -> Any:
        raise AssertionError("decide did I/O")

    monkeypatch.setattr(tick, "run_query", no_io)
    monkeypatch.setattr(tick, "write_rows", no_io)
    rows = [candidate("expired", expires_at=NOW - timedelta(minutes=1)), candidate("due"),
            candidate("later", send_at=None, local_send_time="2026-12-02T08:00")]  # fmt: skip
    # WHEN the candidates are decided
    records, due = tick.decide(tenant("fcm"), rows, {}, NOW, "tick1")
    # THEN the expired one is a record, the due one a send (with its message), the later one neither
    assert [(r.message_id, r.status, r.reason, r.provider) for r in records] == [("expired", "skipped", "expired", "fcm")]
    assert [(d.message_id, d.provider, d.attempt, d.message.token) for d in due] == [("due", "fcm", 0, "tok-due")]


def test_receipts_are_a_provider_capability() -> None:
    assert ExpoProvider.has_receipts and not FcmProvider.has_receipts
    assert [name for name in ("fcm", "apns", "onesignal", "braze", "expo") if provider_class(name).has_receipts] == [  # type: ignore[union-attr]
        "expo"
    ]


def test_a_provider_without_receipts_is_never_polled(monkeypatch: pytest.MonkeyPatch) -> None:
    queries: list[str] = []
    monkeypatch.setattr(tick, "run_query", lambda name, sql, params: queries.append(sql) or [])
    tick.run_tick(tenant("fcm"), now=NOW)
    assert queries and not any("provider_message_id IS NOT NULL" in sql for sql in queries)


def test_receipts_are_recorded_as_their_own_rows_through_the_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN two earlier sends awaiting receipts, one delivered and one to a dead token, and one not ready
    pending = [
        {"message_id": "m1", "contact_id": "c1", "provider_message_id": "t1", "push_token": "tok1"},
        {"message_id": "m2", "contact_id": "c2", "provider_message_id": "t2", "push_token": "tok2"},
        {"message_id": "m3", "contact_id": "c3", "provider_message_id": "t3", "push_token": "tok3"},
    ]
    asked: list[dict[str, Any]] = []

    def run_query(name: str, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        if "provider_message_id IS NOT NULL" in sql:
            asked.append(params)
            return pending
        return []

    class WithReceipts(ExpoProvider):
        async def fetch_receipts(self, ticket_ids: Any) -> dict[str, Receipt]:
            assert list(ticket_ids) == ["t1", "t2", "t3"]
            return {"t1": Receipt("t1", "ok"), "t2": Receipt("t2", "invalid_token", "DeviceNotRegistered")}

    written: list[Any] = []
    monkeypatch.setattr(tick, "run_query", run_query)
    monkeypatch.setattr(tick, "fan_out", lambda t, now: tick.FanOut())
    monkeypatch.setattr(tick, "provider_for", lambda t, name: WithReceipts())
    monkeypatch.setattr(tick, "write_rows", lambda client, t, rows, processor: written.extend(rows))
    monkeypatch.setattr(tick, "bigquery_client", lambda: None)
    # WHEN the tenant ticks
    result = tick.run_tick(tenant("expo"), now=NOW)
    # THEN the provider's sends were asked for, and each ready receipt is one row of status receipt; the dead token is
    # marked; the one not ready waits for the next tick
    assert asked and asked[0]["provider"] == "expo"
    sends = [(r.message_id, r.status, r.reason, r.provider) for r in written if isinstance(r, SendRow)]
    assert sends == [("m1", "receipt", "ok", "expo"), ("m2", "receipt", "DeviceNotRegistered", "expo")]
    assert [(r.contact_id, r.push_token) for r in written if isinstance(r, InvalidTokenRow)] == [("c2", "tok2")]
    assert result.counts == {"receipt_ok": 1, "receipt_failed": 1}


def test_a_failing_receipt_poll_is_only_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    def run_query(name: str, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        if "provider_message_id IS NOT NULL" in sql:
            raise RuntimeError("receipts store down")
        return []

    monkeypatch.setattr(tick, "run_query", run_query)
    monkeypatch.setattr(tick, "fan_out", lambda t, now: tick.FanOut())
    result = tick.run_tick(tenant("expo"), now=NOW)
    assert result.counts == {"receipt_poll_failed": 1} and result.paused is None


def test_the_hook_defaults_to_no_receipts() -> None:
    import asyncio

    class Bare(Provider):
        name = "bare"

        async def send_many(self, messages: Any, *, deadline: float) -> list[Any]:
            return []

        async def aclose(self) -> None:
            pass

    assert not Bare.has_receipts and asyncio.run(Bare().fetch_receipts(["x"])) == {}

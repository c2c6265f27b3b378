"""The tick's blast radius without a stack: one tenant's failure never stops another, all tenants share one deadline,
one bad row or one failing claim never strands the others; credential caches never cross tenants."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.config import Tenant
from shared.errors import SetupError, TransientError
from shared.push import tick
from shared.push.claims import Claim
from shared.push.credentials import parse_credentials
from shared.push.providers.apns import ProviderTokenCache
from shared.push.providers.fcm import token_source
from shared.warehouse.rows import SendRow

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def tenant(name: str, **kw: Any) -> Tenant:
    return Tenant(name=name, region="europe-west1", bucket=f"b-{name}", dataset=f"d_{name}", push_provider="fcm", **kw)


class Clock:
    """A clock the test moves: what a tenant's tick "takes" is added by the fake run_tick."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_tenants_failure_never_stops_the_others(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    # GIVEN four tenants: a missing secret, a bug, BigQuery unavailable, and a healthy one
    ran: list[str] = []

    def fake_run_tick(t: Tenant, **_: Any) -> tick.TickResult:
        ran.append(t.name)
        if t.name == "nosecret":
            raise SetupError("no fcm credentials for tenant 'nosecret'", "add them")
        if t.name == "buggy":
            raise KeyError("surprise")
        if t.name == "flaky":
            raise TransientError("BigQuery 503")
        return tick.TickResult(t.name, Counter(sent=3))

    monkeypatch.setattr(tick, "run_tick", fake_run_tick)
    tenants = [tenant(n) for n in ("nosecret", "buggy", "flaky", "healthy")]
    # WHEN one invocation ticks them all
    results = tick.run_ticks(tenants)
    # THEN every tenant ran; the healthy one sent; each failure is recorded with its class and the setup one with its fix
    assert sorted(ran) == sorted(t.name for t in tenants)
    assert results["healthy"] == {"sent": 3}
    assert results["nosecret"] == {"error": "setup", "problem": "no fcm credentials for tenant 'nosecret'",
                                   "fix": "add them"}
    assert results["buggy"]["error"] == "KeyError" and results["flaky"]["error"] == "TransientError"


def test_all_tenants_share_one_deadline_and_none_starts_after_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN three tenants whose ticks each take 300 s of a 420 s budget
    clock = Clock()
    given: dict[str, float] = {}

    def slow_run_tick(t: Tenant, *, deadline: float, **_: Any) -> tick.TickResult:
        given[t.name] = deadline
        clock.now += 300
        return tick.TickResult(t.name, Counter(sent=1))

    monkeypatch.setattr(tick, "run_tick", slow_run_tick)
    start = clock.now
    # WHEN one invocation ticks them
    results = tick.run_ticks([tenant("a"), tenant("b"), tenant("c")], budget_s=420, clock=clock)
    # THEN the first tenant got a fair share (a third), the second half of what was left (120 s after the first), and
    # the third was left for the next tick: nothing started after the shared deadline, no deadline handed out was past it
    first, second = (name for name in given)
    assert given[first] == pytest.approx(start + 140)
    assert given[second] == pytest.approx(start + 300 + 60)
    assert len(given) == 2 and max(given.values()) <= start + 420
    assert sorted(results.values(), key=str) == [{"left_for_next_tick": 1}, {"sent": 1}, {"sent": 1}]


def test_the_starting_tenant_rotates_so_none_is_always_last(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN three tenants and a budget that only ever lets the first one run
    firsts: set[str] = set()
    clock = Clock()

    def hog(t: Tenant, **_: Any) -> tick.TickResult:
        clock.now += 10_000
        return tick.TickResult(t.name)

    monkeypatch.setattr(tick, "run_tick", hog)
    # WHEN many invocations run
    for _ in range(60):
        results = tick.run_ticks([tenant("a"), tenant("b"), tenant("c")], budget_s=420, clock=clock)
        firsts.update(name for name, r in results.items() if "left_for_next_tick" not in r)
    # THEN every tenant got to go first at some point
    assert firsts == {"a", "b", "c"}


def candidate(message_id: str, **kw: Any) -> dict[str, Any]:
    row = {"message_id": message_id, "contact_id": f"c-{message_id}", "provider": None, "title": "T", "body": "B",
           "data": None, "deep_link": None, "send_at": NOW - timedelta(minutes=1), "local_send_time": None,
           "expires_at": None, "collapse_key": None, "priority": "high", "deferrals": 0, "policy_deferrals": 0,
           "push_token": f"tok-{message_id}", "timezone": "Europe/Paris", "properties": None, "token_dead": False}
    row.update(kw)
    return row


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[SendRow]:
    rows: list[SendRow] = []
    monkeypatch.setattr(tick, "_write", lambda t, r, result: (rows.extend(r), result.add(r)))
    return rows


def test_a_malformed_row_is_recorded_failed_and_the_others_go_on(
    monkeypatch: pytest.MonkeyPatch, recorded: list[SendRow]
) -> None:
    # GIVEN candidates with an impossible local time, an unsafe message id, a row that breaks policy, and good ones
    rows = [
        candidate("bad-time", send_at=None, local_send_time="2024-13-45T99:99"),
        candidate("bad\nid"),
        candidate("bad-row", policy_deferrals=None),  # anything unexpected in a row
        candidate("good-1"),
        candidate("good-2", send_at=None, local_send_time="2026-12-01T08:00"),
    ]
    monkeypatch.setattr(tick, "run_query", lambda name, sql, params: rows if "message_schedule" in sql else [])
    sent: list[str] = []
    monkeypatch.setattr(tick, "_claim_and_send", lambda t, due, *a: sent.extend(d.row["message_id"] for d in due))
    # WHEN the tenant ticks
    tick.run_tick(tenant("acme"), now=NOW)
    # THEN each bad row is failed with its reason, and both good rows went on to be claimed and sent
    assert {(r.message_id, r.status, r.reason) for r in recorded} == {
        ("bad-time", "failed", "invalid_local_send_time"),
        ("bad\nid", "failed", "invalid_message_id"),
        ("bad-row", "failed", "invalid_row:TypeError"),
    }
    assert sent == ["good-1", "good-2"]


def test_one_failing_claim_does_not_strand_the_rest_of_the_chunk(
    monkeypatch: pytest.MonkeyPatch, recorded: list[SendRow]
) -> None:
    # GIVEN a chunk of five where the claims store refuses one claim (e.g. a 400 for its object name)
    def fake_claim(t: Tenant, message_id: str, attempt: int, tick_id: str) -> Claim:
        if message_id == "m2":
            raise TransientError("claiming m2: 400 Bad Request")
        return Claim(True, NOW)

    monkeypatch.setattr(tick, "claim", fake_claim)
    due = [tick._Due(candidate(f"m{i}"), 0, "fcm", tick._push_message(tenant("acme"), candidate(f"m{i}")))
           for i in range(5)]
    result = tick.TickResult("acme")
    # WHEN the chunk is claimed
    won = tick._claim_all(tenant("acme"), due, "tick1", NOW, result)
    # THEN the four others are won (they go on to be sent) and the refused one is deferred to its next attempt
    assert [d.row["message_id"] for d in won] == ["m0", "m1", "m3", "m4"]
    assert [(r.message_id, r.status, r.reason) for r in recorded] == [("m2", "deferred", "claim_error:TransientError")]


def test_a_send_that_raises_after_claiming_records_the_chunk_as_unknown(
    monkeypatch: pytest.MonkeyPatch, recorded: list[SendRow]
) -> None:
    # GIVEN a provider whose send raises after the chunk was claimed
    class Broken:
        async def send_many(self, messages: Any, *, deadline: float) -> Any:
            raise RuntimeError("provider bug")

    due = [tick._Due(candidate(f"m{i}"), 0, "fcm", tick._push_message(tenant("acme"), candidate(f"m{i}")))
           for i in range(3)]
    # WHEN it is sent / THEN the error reaches the tenant's isolation, after every message was recorded (never left
    # claimed and unrecorded, never resent)
    with pytest.raises(RuntimeError):
        tick._send(tenant("acme"), "fcm", Broken(), due, "tick1", 2e9, tick.TickResult("acme"), lambda: 0.0)  # type: ignore[arg-type]
    assert [(r.message_id, r.status, r.reason) for r in recorded] == [
        (f"m{i}", "failed", "outcome_unknown") for i in range(3)
    ]


def test_our_own_claim_met_again_after_a_lost_response_is_won(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a claim object our own tick already wrote (its create response was lost and the client retried)
    from google.api_core import exceptions as gexc

    from shared.push import claims

    stored = b'{"tick": "tick-1", "claimed_at": "2026-12-01T12:00:00+00:00"}'

    class Blob:
        def upload_from_string(self, *a: Any, **kw: Any) -> None:
            raise gexc.PreconditionFailed("412")

        def download_as_bytes(self) -> bytes:
            return stored

    class Client:
        def bucket(self, name: str) -> Any:
            return type("B", (), {"blob": lambda self, path: Blob()})()

    monkeypatch.setattr(claims, "storage_client", Client)
    # WHEN the same tick, and another tick, claim that attempt
    ours = claims.claim(tenant("acme"), "m1", 0, "tick-1")
    theirs = claims.claim(tenant("acme"), "m1", 0, "tick-2")
    # THEN it is ours for the tick that wrote it, and lost for any other
    assert ours.won and not theirs.won
    assert ours.claimed_at == theirs.claimed_at == NOW


def test_credential_caches_are_keyed_by_the_key_not_only_its_public_names() -> None:
    # GIVEN two tenants whose APNs team/key ids (and FCM email/key id/token uri) are the same but whose keys differ
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    def pem() -> str:
        key = ec.generate_private_key(ec.SECP256R1())
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()).decode()

    cache = ProviderTokenCache()
    a, b = pem(), pem()
    # WHEN each signs a provider token / gets an access-token source
    token_a = cache.get("TEAM", "KEY", a)
    token_b = cache.get("TEAM", "KEY", b)
    sa = {"client_email": "x@y", "private_key_id": "k", "token_uri": "https://oauth2.googleapis.com/token"}
    rsa_pems = []
    from cryptography.hazmat.primitives.asymmetric import rsa

    for _ in range(2):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        rsa_pems.append(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()).decode())
    # THEN neither gets the other's token
    assert token_a != token_b and cache.get("TEAM", "KEY", a) == token_a
    assert token_source({**sa, "private_key": rsa_pems[0]}) is not token_source({**sa, "private_key": rsa_pems[1]})


def test_endpoints_in_a_secret_are_ignored_outside_the_local_stack() -> None:
    # GIVEN secrets that point a provider and the FCM token exchange at a host of the tenant's choosing
    sa = {"project_id": "p", "client_email": "a@b", "private_key": "k", "token_uri": "http://169.254.169.254/x"}
    # WHEN parsed in the cloud, and on the local stack
    cloud_fcm = parse_credentials("fcm", {"service_account": sa, "base_url": "http://evil"}, where="s",
                                  trust_endpoints=False)
    cloud_braze = parse_credentials("braze", {"api_key": "k", "base_url": "http://evil"}, where="s",
                                    trust_endpoints=False)
    local_braze = parse_credentials("braze", {"api_key": "k", "base_url": "http://127.0.0.1:1"}, where="s",
                                    trust_endpoints=True)
    # THEN the cloud uses the providers' own endpoints and Google's token endpoint; the local stack keeps its fakes
    assert cloud_fcm.base_url is None and cloud_braze.base_url is None
    assert cloud_fcm.service_account.reveal()["token_uri"] == "https://oauth2.googleapis.com/token"  # type: ignore[union-attr]
    assert local_braze.base_url == "http://127.0.0.1:1"


def test_a_secret_that_is_not_an_object_is_a_setup_error() -> None:
    for raw in (["a"], "text", 3):
        with pytest.raises(SetupError, match="malformed"):
            parse_credentials("expo", raw, where="s", trust_endpoints=False)  # type: ignore[arg-type]


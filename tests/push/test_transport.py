"""shared.push.transport: the hand-written HTTP/2 client (stream limits, pool, GOAWAY, closes, flow control, TLS)."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import os
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shared.push.credentials import ApnsCredentials, FcmCredentials
from shared.push.providers.apns import ApnsProvider, ProviderTokenCache
from shared.push.providers.base import RETRYABLE_EXCEPTIONS
from shared.push.providers.fcm import FcmProvider
from shared.push.retry import RetryPolicy
from shared.push.transport import (
    ConnectError,
    ConnectionClosed,
    H2Pool,
    RequestNotSent,
    RequestTimeout,
    TransportError,
)
from shared.secrets import Secret
from tests.push.conftest import FAST_RETRY, ROOT, FakeServer, _free_port_base, _pem, _public_pem, _uid
from tests.push.h2server import MiniH2Server
from tests.push.helpers import deadline, msg

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

    from cryptography.hazmat.primitives.asymmetric import rsa

    from shared.push.transport import Response


def run(server: MiniH2Server, body: Callable[[str], Awaitable[Any]]) -> Any:
    async def go() -> Any:
        url = await server.start()
        try:
            return await body(url)
        finally:
            await server.stop()

    return asyncio.run(go())


async def post_many(pool: H2Pool, n: int, body: bytes = b"{}") -> list[Response]:
    return list(
        await asyncio.gather(*(pool.post(b"/x", [(b"content-type", b"application/json")], body) for _ in range(n)))
    )


def test_server_stream_limit_is_respected():
    # GIVEN a server that allows 3 concurrent streams per connection (our own cap is 100)
    server = MiniH2Server(max_streams=3, delay=0.02)

    async def body(url: str) -> list[Response]:
        pool = H2Pool(url, connections=1, max_streams=100)
        try:
            return await post_many(pool, 20)
        finally:
            await pool.aclose()

    # WHEN 20 requests are fired at once over one connection
    out = run(server, body)
    # THEN all succeed and the server never saw more than 3 streams in flight
    assert [r.status_code for r in out] == [200] * 20
    assert server.stats.connections == 1 and server.stats.max_concurrent == {1: 3}


def test_pool_adds_connections_beyond_one_connections_limit():
    # GIVEN a server allowing 5 streams per connection and a pool of up to 3 connections
    server = MiniH2Server(max_streams=5, delay=0.05)

    async def body(url: str) -> list[Response]:
        pool = H2Pool(url, connections=3)
        try:
            return await post_many(pool, 30)
        finally:
            await pool.aclose()

    # WHEN 30 requests are fired at once
    out = run(server, body)
    # THEN the pool spreads them over 3 connections, 5 streams each at most
    assert all(r.status_code == 200 for r in out)
    assert server.stats.connections == 3
    assert max(server.stats.max_concurrent.values()) == 5
    assert {json.loads(r.content)["conn"] for r in out} == {1, 2, 3}


def test_goaway_mid_flight_retries_unprocessed_streams_on_a_new_connection():
    # GIVEN a server that sends a graceful GOAWAY after its 10th stream and answers only the streams up to it
    server = MiniH2Server(goaway_after=10, delay=0.05)

    async def body(url: str) -> tuple[list[Response], int]:
        pool = H2Pool(url, connections=2)
        try:
            return await post_many(pool, 30), pool.connections_opened
        finally:
            await pool.aclose()

    # WHEN 30 requests are in flight on the first connection when GOAWAY arrives
    out, opened = run(server, body)
    # THEN every request succeeds: the first 10 answered on connection 1 after GOAWAY, the rest resent elsewhere
    assert [r.status_code for r in out] == [200] * 30
    conns = [json.loads(r.content)["conn"] for r in out]
    assert conns.count(1) == 10 and 1 not in conns[10:]
    assert server.stats.goaways >= 1 and opened >= 2
    assert server.stats.answered == 30


def test_server_closing_the_connection_after_the_request_is_never_resent(ec_key: ec.EllipticCurvePrivateKey):
    # GIVEN a server that drops the TCP connection as soon as a request arrives
    server = MiniH2Server(close_on_request=True)

    async def body(url: str) -> tuple[BaseException, list]:
        pool = H2Pool(url)
        try:
            with pytest.raises(TransportError) as caught:
                await pool.post(b"/x", [], b"{}")
        finally:
            await pool.aclose()
        creds = ApnsCredentials("TEAM", "KEY", Secret(_pem(ec_key)), "com.example.app", "sandbox", url)
        async with ApnsProvider(creds, retry_policy=FAST_RETRY, token_cache=ProviderTokenCache()) as provider:
            outcomes = await provider.send_many([msg(1)], deadline=deadline(3))
        return caught.value, outcomes

    # WHEN a raw request and a provider send go through it
    exc, outcomes = run(server, body)
    # THEN the transport raises ConnectionClosed, which does not say the request stayed here (the server had it), so
    # the provider does not resend it: one connection, and the message is recorded as an unknown outcome
    assert isinstance(exc, ConnectionClosed) and isinstance(exc, RETRYABLE_EXCEPTIONS)
    assert not isinstance(exc, RequestNotSent)
    assert (outcomes[0].status, outcomes[0].reason) == ("failed", "outcome_unknown:ConnectionClosed")
    assert server.stats.connections == 1 + 1  # the raw request's, and the provider's single attempt


def test_connection_reused_across_calls_then_closed():
    # GIVEN one pool used for two batches
    server = MiniH2Server()

    async def body(url: str) -> tuple[int, BaseException | None]:
        pool = H2Pool(url, connections=4)
        await post_many(pool, 5)
        await post_many(pool, 5)
        opened = pool.connections_opened
        await pool.aclose()
        try:
            await pool.post(b"/x", [], b"")
        except TransportError as exc:
            return opened, exc
        return opened, None

    # WHEN both batches are sent and the pool is closed
    opened, after_close = run(server, body)
    # THEN one connection carried both batches, and the closed pool refuses new requests
    assert opened == 1 and server.stats.connections == 1
    assert isinstance(after_close, ConnectionClosed)


def test_large_body_waits_for_flow_control_window():
    # GIVEN a body 5x the peer's default 64 KiB window
    server = MiniH2Server()
    payload = b"x" * 330_000

    async def body(url: str) -> Response:
        pool = H2Pool(url)
        try:
            return await pool.post(b"/x", [], payload)
        finally:
            await pool.aclose()

    # WHEN posted / THEN it arrives whole (the rest was sent as the server's WINDOW_UPDATEs came in)
    assert json.loads(run(server, body).content)["len"] == len(payload)


def test_timeout_frees_the_stream_slot():
    # GIVEN a server slower than the request timeout, and one stream per connection
    server = MiniH2Server(delay=1.0)

    async def body(url: str) -> tuple[BaseException, int]:
        pool = H2Pool(url, connections=1, max_streams=1, timeout=0.1)
        try:
            with pytest.raises(RequestTimeout) as caught:
                await pool.post(b"/x", [], b"")
            with pytest.raises(RequestTimeout):  # the slot was released, so a second request can go out
                await pool.post(b"/x", [], b"")
            return caught.value, pool._conns[0].reserved
        finally:
            await pool.aclose()

    exc, reserved = run(server, body)
    assert isinstance(exc, RETRYABLE_EXCEPTIONS) and reserved == 0


def _tls_contexts(alpn: list[str]) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"landline-tls-{_uid()}.pem"
    tmp.write_bytes(cert_pem + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ))  # fmt: skip
    try:
        server.load_cert_chain(tmp)
    finally:
        tmp.unlink()
    server.set_alpn_protocols(alpn)
    client = ssl.create_default_context(cadata=cert_pem.decode())
    return server, client


@pytest.mark.parametrize("alpn", [["h2"], ["http/1.1"]])
def test_tls_with_alpn_h2(alpn: list[str]):
    # GIVEN a TLS server offering h2 (or only http/1.1) via ALPN, with a certificate the client trusts
    server_ctx, client_ctx = _tls_contexts(alpn)
    server = MiniH2Server(ssl_context=server_ctx)

    async def body(url: str) -> Response | BaseException:
        pool = H2Pool(url, ssl_context=client_ctx)
        try:
            return await pool.post(b"/x", [], b"{}")
        except TransportError as exc:
            return exc
        finally:
            await pool.aclose()

    # WHEN a request is made over https://
    out = run(server, body)
    # THEN h2 is used when negotiated; otherwise the connect fails (retryably) rather than speaking h2 to an h1 server
    if alpn == ["h2"]:
        assert not isinstance(out, BaseException) and out.status_code == 200
    else:
        assert isinstance(out, ConnectError)


# --- against the real fake (hypercorn) with --max-requests-per-connection --------------------------------------------


@pytest.fixture(scope="module")
def retiring_fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeServer]:
    """A second fake whose connections send GOAWAY after 40 requests (hypercorn ``keep_alive_max_requests``)."""
    state_dir = tmp_path_factory.mktemp("fakes-goaway")
    base = _free_port_base()
    proc = subprocess.Popen(
        [sys.executable, "-m", "infra.local.fakes", "--port-base", str(base), "--state-dir", str(state_dir),
         "--max-requests-per-connection", "40"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    stop = time.monotonic() + 20
    while not (state_dir / "ready.json").exists():
        if proc.poll() is not None or time.monotonic() > stop:
            proc.kill()
            raise RuntimeError("fake server did not start")
        time.sleep(0.05)
    server = FakeServer(base, proc)
    try:
        yield server
    finally:
        server.control.close()
        proc.terminate()
        proc.wait(timeout=10)


def test_goaway_from_the_fake_mid_flight_nothing_sent_twice(retiring_fake: FakeServer, rsa_key: rsa.RSAPrivateKey):
    # GIVEN the fake FCM retiring each connection after 40 requests
    email = f"sender-{_uid()}@demo-proj.iam.gserviceaccount.com"
    retiring_fake.register(fcm={"client_email": email, "public_key_pem": _public_pem(rsa_key)})
    sa = {
        "type": "service_account",
        "project_id": "demo-proj",
        "private_key_id": _uid(),
        "private_key": _pem(rsa_key),
        "client_email": email,
        "client_id": "1",
        "token_uri": f"{retiring_fake.url('fcm')}/token",
    }
    creds = FcmCredentials("demo-proj", Secret(sa), retiring_fake.url("fcm"))

    # hypercorn cannot answer the streams still in flight below last_stream_id once it has sent GOAWAY (its h2 state
    # machine is closed), although it handled them: those fail after the grace period as ConnectionTerminated, an
    # ambiguous outcome. Streams above last_stream_id were never processed: they are resent on a new connection.
    policy = RetryPolicy(max_attempts=10, initial=0.02, maximum=0.2, jitter=0.02)

    async def go() -> list:
        async with FcmProvider(creds, retry_policy=policy, max_concurrency=30) as p:
            p._pool.goaway_grace = 0.2
            return await p.send_many([msg(i) for i in range(200)], deadline=deadline())

    # WHEN 200 messages are sent with 30 in flight
    out = asyncio.run(go())
    # THEN no device got a message twice; every message is sent, or (its answer lost to the GOAWAY) recorded as an
    # unknown outcome, never resent; the rest went out over several connections
    outcomes = {(o.status, o.reason) for o in out}
    assert outcomes <= {("sent", None), ("failed", "outcome_unknown:ConnectionTerminated")}, outcomes
    stats = retiring_fake.stats("fcm")
    assert max(stats["by_token"].values()) == 1
    assert sum(o.status == "sent" for o in out) >= 50, sorted(outcomes)
    assert stats["connections"] >= 3


def test_memoised_hpack_blocks_round_trip():
    # GIVEN our memoising encoder/decoder against hpack's plain ones, over repeated, changing and resized header sets
    from hpack import Decoder, Encoder

    from shared.push.transport import _MemoDecoder, _MemoEncoder

    enc, plain_dec = _MemoEncoder(), Decoder()
    plain_enc, dec = Encoder(), _MemoDecoder(65_536)
    auth = [(b"authorization", b"Bearer " + b"t" * 200), (b"content-type", b"application/json")]
    sets = [auth, auth, [(b"x-a", b"1"), *auth], auth, [(b"x-a", b"2")], auth, auth]
    for i, headers in enumerate(sets * 3):
        if i == 9:  # a SETTINGS_HEADER_TABLE_SIZE change from the peer shrinks the table mid-stream
            enc.header_table_size = 256
            plain_dec.header_table_size = 256
        # WHEN encoded by ours and decoded by hpack's, and encoded by hpack's and decoded by ours
        # THEN both directions give back exactly the headers sent
        assert [tuple(h) for h in plain_dec.decode(enc.encode(list(headers)), raw=True)] == headers
        assert [tuple(h) for h in dec.decode(plain_enc.encode(list(headers)), raw=True)] == headers
    # and once indexed (default 4 KiB table), a repeated header set reuses the previous block: two index bytes
    fresh = _MemoEncoder()
    fresh.encode(list(auth))
    first = fresh.encode(list(auth))
    assert fresh.encode(list(auth)) is first and len(first) == 2

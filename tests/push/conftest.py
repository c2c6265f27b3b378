"""The fake providers run as a real subprocess on free ports for the whole session; each test resets its counters.

Keys are generated here (RSA for the FCM service account, EC P-256 for APNs); nothing secret is committed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from shared.push.credentials import (
    ApnsCredentials,
    BrazeCredentials,
    ExpoCredentials,
    FcmCredentials,
    OneSignalCredentials,
)
from shared.push.names import PROVIDER_NAMES
from shared.push.retry import RetryPolicy
from shared.secrets import Secret
from tests.stack_support import free_port_base

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parents[2]
PROVIDERS = PROVIDER_NAMES  # the fakes listen on one port each, in this order
FAST_RETRY = RetryPolicy(max_attempts=4, initial=0.05, maximum=0.5, jitter=0.05)


def _free_port_base(count: int = len(PROVIDERS)) -> int:
    return free_port_base(count)


class FakeServer:
    """Handle on the fake providers' subprocess: URLs and the control endpoints."""

    def __init__(self, base: int, proc: subprocess.Popen[bytes]) -> None:
        self.base = base
        self.proc = proc
        self.control = httpx.Client(base_url=f"http://127.0.0.1:{base}", timeout=10)

    def url(self, provider: str) -> str:
        return f"http://127.0.0.1:{self.base + PROVIDERS.index(provider)}"

    def stats(self, provider: str) -> dict[str, Any]:
        return dict(self.control.get("/_fake/stats").raise_for_status().json()[provider])

    def reset(self) -> None:
        self.control.post("/_fake/reset", json={}).raise_for_status()

    def script(self, *rules: dict[str, Any]) -> None:
        self.control.post("/_fake/script", json={"rules": list(rules)}).raise_for_status()

    def register(self, **providers: Any) -> None:
        self.control.post("/_fake/register", json=providers).raise_for_status()


@pytest.fixture(scope="session")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeServer]:
    state_dir = tmp_path_factory.mktemp("fakes")
    base = _free_port_base()
    log = (state_dir / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "infra.local.fakes", "--port-base", str(base), "--state-dir", str(state_dir)],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    ready = state_dir / "ready.json"
    deadline = time.monotonic() + 20
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"fake server did not start: {(state_dir / 'server.log').read_text()}")
        time.sleep(0.05)
    assert json.loads(ready.read_text())["ports"]["fcm"] == base
    server = FakeServer(base, proc)
    try:
        yield server
    finally:
        server.control.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(autouse=True)
def _reset_fake(request: pytest.FixtureRequest) -> None:
    if "fake" in request.fixturenames:
        request.getfixturevalue("fake").reset()


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem(key: Any) -> str:
    return str(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
    )


def _public_pem(key: Any) -> str:
    return str(
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _uid() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def service_account(fake: FakeServer, rsa_key: rsa.RSAPrivateKey) -> dict[str, Any]:
    """A throwaway service account (unique email per test, so google-auth token caches don't leak between tests)."""
    email = f"sender-{_uid()}@demo-proj.iam.gserviceaccount.com"
    fake.register(fcm={"client_email": email, "public_key_pem": _public_pem(rsa_key)})
    return {
        "type": "service_account",
        "project_id": "demo-proj",
        "private_key_id": _uid(),
        "private_key": _pem(rsa_key),
        "client_email": email,
        "client_id": "1",
        "token_uri": f"{fake.url('fcm')}/token",
    }


@pytest.fixture
def fcm_creds(fake: FakeServer, service_account: dict[str, Any]) -> FcmCredentials:
    return FcmCredentials("demo-proj", Secret(service_account), fake.url("fcm"))


@pytest.fixture
def apns_creds(fake: FakeServer, ec_key: ec.EllipticCurvePrivateKey) -> ApnsCredentials:
    team, key_id = _uid().upper(), _uid().upper()
    fake.register(apns={"team_id": team, "key_id": key_id, "public_key_pem": _public_pem(ec_key)})
    return ApnsCredentials(team, key_id, Secret(_pem(ec_key)), "com.example.app", "sandbox", fake.url("apns"))


@pytest.fixture
def onesignal_creds(fake: FakeServer) -> OneSignalCredentials:
    app_id, key = str(uuid.uuid4()), f"os_v2_app_test{_uid()}"
    fake.register(onesignal={"app_id": app_id, "api_key": key})
    return OneSignalCredentials(app_id, Secret(key), fake.url("onesignal"))


@pytest.fixture
def braze_creds(fake: FakeServer) -> BrazeCredentials:
    key = f"braze-test-{_uid()}"
    fake.register(braze={"api_key": key})
    return BrazeCredentials(Secret(key), fake.url("braze"))


@pytest.fixture
def expo_creds(fake: FakeServer) -> ExpoCredentials:
    return ExpoCredentials(None, fake.url("expo"))

"""Credentials (file and Secret Manager), redaction, retry decisions and the token bucket (no server needed)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.errors import SetupError
from shared.push.credentials import ApnsCredentials, FcmCredentials
from shared.push.ratelimit import TokenBucket
from shared.push.retry import Deferral, Retryable, RetryPolicy, call_with_retry
from shared.secrets import FileSecrets, SecretManagerSecrets
from shared.secrets import secret_source as credential_source

SECRETS = {
    "acme": {
        "fcm": {
            "service_account": {
                "project_id": "p1",
                "client_email": "a@b",
                "private_key": "PK-SENTINEL",
                "token_uri": "u",
            }
        },
        "apns": {"team_id": "T", "key_id": "K", "private_key": "P8-SENTINEL", "topic": "com.acme"},
        "onesignal": {"app_id": "app", "api_key": "OS-SENTINEL"},
        "braze": {"api_key": "BZ-SENTINEL", "base_url": "https://rest.iad-01.braze.com"},
        "expo": {},
    }
}


def test_file_secrets_parse_and_redact(tmp_path, caplog):
    # GIVEN a local secrets file
    path = tmp_path / "secrets.json"
    path.write_text(json.dumps(SECRETS))
    source = credential_source(secrets_file=path)
    # WHEN every provider's credentials are loaded and logged
    creds = [source.get("acme", p) for p in ("fcm", "apns", "onesignal", "braze", "expo")]
    with caplog.at_level(logging.INFO):
        for c in creds:
            logging.getLogger("t").info("loaded %s %r", c, c)
    # THEN they are typed, and no secret value appears in any repr or log line
    assert isinstance(creds[0], FcmCredentials) and creds[0].project_id == "p1"
    assert isinstance(creds[1], ApnsCredentials) and creds[1].private_key.reveal() == "P8-SENTINEL"
    text = caplog.text + "".join(repr(c) + str(c) + f"{c}" for c in creds)
    assert "SENTINEL" not in text


def test_missing_entry_and_field_name_the_fix(tmp_path):
    # GIVEN a secrets file without braze for a tenant, and one with an APNs entry lacking its key
    path = tmp_path / "secrets.json"
    path.write_text(json.dumps({"acme": {"apns": {"team_id": "T", "key_id": "K", "topic": "t"}}}))
    source = FileSecrets(path)
    # WHEN loaded / THEN SetupError names what is missing, never a value
    with pytest.raises(SetupError, match="no braze credentials"):
        source.get("acme", "braze")
    with pytest.raises(SetupError, match="lack private_key"):
        source.get("acme", "apns")


def test_secret_manager_rest(monkeypatch):
    # GIVEN a Secret Manager REST response for landline-acme-onesignal
    class Resp:
        status_code = 200

        def __init__(self, data: dict[str, Any]) -> None:
            self._data = data

        def json(self) -> dict[str, Any]:
            return self._data

        def raise_for_status(self) -> None:
            pass

    calls: list[str] = []

    class Session:
        def get(self, url: str, timeout: float) -> Resp:
            calls.append(url)
            payload = base64.b64encode(json.dumps(SECRETS["acme"]["onesignal"]).encode()).decode()
            return Resp({"payload": {"data": payload}})

    source = SecretManagerSecrets("proj", session=Session())
    # WHEN read twice
    a = source.get("acme", "onesignal")
    b = source.get("acme", "onesignal")
    # THEN one REST call to the latest version, cached, value redacted
    assert calls == [
        "https://secretmanager.googleapis.com/v1/projects/proj/secrets/landline-acme-onesignal/versions/latest:access"
    ]
    assert a == b and "OS-SENTINEL" not in repr(a)


def test_privacy_salt_comes_from_the_tenants_secrets_and_never_shows(tmp_path):
    # GIVEN a secrets file with a salt for one tenant, a too-short salt for another and none for a third
    path = tmp_path / "secrets.json"
    path.write_text(json.dumps({"acme": {"privacy": {"salt": "SALT-SENTINEL-0123456789"}},
                                "short": {"privacy": {"salt": "abc"}}, "none": {}}))
    source = FileSecrets(path)
    # WHEN the salts are read
    salt = source.privacy_salt("acme")
    # THEN the salt is there but redacted in repr/str
    assert salt.reveal() == "SALT-SENTINEL-0123456789"
    assert "SENTINEL" not in repr(salt) + str(salt) + f"{salt}"
    # AND a short or missing salt is a setup error that says how to fix it, without echoing the value
    with pytest.raises(SetupError, match="under 16 characters") as short:
        source.privacy_salt("short")
    assert "abc" not in short.value.problem
    with pytest.raises(SetupError, match="has no privacy salt") as missing:
        source.privacy_salt("none")
    assert '"privacy": {"salt"' in missing.value.fix


def test_privacy_salt_from_secret_manager_uses_its_own_secret():
    # GIVEN Secret Manager holding landline-acme-privacy
    calls: list[str] = []

    class Resp:
        status_code = 200

        def json(self) -> dict[str, Any]:
            return {"payload": {"data": base64.b64encode(b'{"salt": "0123456789abcdef0123"}').decode()}}

        def raise_for_status(self) -> None:
            pass

    class Session:
        def get(self, url: str, timeout: float) -> Resp:
            calls.append(url)
            return Resp()

    source = SecretManagerSecrets("proj", session=Session())
    # WHEN the salt is read twice / THEN one call to that secret, cached
    assert source.privacy_salt("acme").reveal() == source.privacy_salt("acme").reveal() == "0123456789abcdef0123"
    assert calls == [
        "https://secretmanager.googleapis.com/v1/projects/proj/secrets/landline-acme-privacy/versions/latest:access"
    ]


def test_retry_defers_when_wait_passes_deadline():
    # GIVEN an attempt that always asks to come back in 50 s, and a 2 s budget
    calls = 0

    async def attempt() -> Retryable:
        nonlocal calls
        calls += 1
        return Retryable("busy", retry_after=50)

    # WHEN retried
    result = asyncio.run(call_with_retry(attempt, deadline=time.time() + 2, policy=RetryPolicy()))
    # THEN no sleep: one attempt, deferred ~50 s out
    assert calls == 1 and isinstance(result, Deferral) and result.reason == "busy"
    assert 45 < (result.until - datetime.now(UTC)).total_seconds() <= 51


def test_retry_exhaustion_defers_not_fails():
    # GIVEN an attempt that always fails transiently
    async def attempt() -> Retryable:
        return Retryable("HTTP_503")

    # WHEN retried with 3 fast attempts
    policy = RetryPolicy(max_attempts=3, initial=0.01, maximum=0.02, jitter=0.0)
    result = asyncio.run(call_with_retry(attempt, deadline=time.time() + 10, policy=policy))
    # THEN deferred (a transient failure is never turned into a permanent one)
    assert isinstance(result, Deferral) and result.reason == "HTTP_503"


def test_token_bucket_paces_and_defers():
    async def go() -> tuple[float, float | None]:
        bucket = TokenBucket(rate=100, burst=10)
        t0 = time.monotonic()
        for _ in range(30):  # 10 banked + 20 at 100/s = ~0.2 s
            assert await bucket.acquire() is None
        elapsed = time.monotonic() - t0
        # a 10-token take needs ~0.1 s: not possible within a 10 ms budget
        return elapsed, await bucket.acquire(10, deadline=time.time() + 0.01)

    elapsed, deferred_until = asyncio.run(go())
    assert 0.15 < elapsed < 1.0
    assert deferred_until is not None and deferred_until > time.time()

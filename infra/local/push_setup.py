"""Local push credentials: generate a tenant's provider credentials, store them in the stack's secrets file (the local
stand-in for Secret Manager) pointed at the fake provider, and register their public halves with the fakes.

The keys are generated per tenant at run time, once, and never leave the state folder (files 0600 in a 0700
folder).
"""

from __future__ import annotations

import json
import secrets
import uuid
from typing import TYPE_CHECKING, Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from infra.local.secrets_file import (
    locked,
    make_private_dir,
    read_local_secrets,
    write_local_secret,
    write_private_file,
)

if TYPE_CHECKING:
    from infra.local.stack_config import StackConfig

PROVIDER_PORT_OFFSET = {"fcm": 0, "apns": 1, "onesignal": 2, "braze": 3, "expo": 4}


def _pem(key: Any) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _public_pem(key: Any) -> str:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def fake_url(cfg: StackConfig, provider: str) -> str:
    return f"http://127.0.0.1:{cfg.port('fakes') + PROVIDER_PORT_OFFSET[provider]}"


def make_credentials(cfg: StackConfig, tenant: str, provider: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(secret entry for the secrets file, public registration for the fake)."""
    base = fake_url(cfg, provider)
    if provider == "fcm":
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        email = f"landline-{tenant.replace('_', '-')}@{cfg.project}.iam.gserviceaccount.com"
        account = {
            "type": "service_account",
            "project_id": f"{tenant.replace('_', '-')}-app",
            "private_key_id": uuid.uuid4().hex,
            "private_key": _pem(rsa_key),
            "client_email": email,
            "client_id": "1",
            "token_uri": f"{base}/token",
        }
        return {"service_account": account, "base_url": base}, {"client_email": email, "public_key_pem": _public_pem(rsa_key)}
    if provider == "apns":
        key = ec.generate_private_key(ec.SECP256R1())
        team, key_id = uuid.uuid4().hex[:10].upper(), uuid.uuid4().hex[:10].upper()
        entry = {"team_id": team, "key_id": key_id, "private_key": _pem(key), "topic": "com.example.landline",
                 "environment": "sandbox", "base_url": base}
        return entry, {"team_id": team, "key_id": key_id, "public_key_pem": _public_pem(key)}
    if provider == "onesignal":
        app_id, api_key = str(uuid.uuid4()), f"os_v2_app_{secrets.token_hex(16)}"
        return {"app_id": app_id, "api_key": api_key, "base_url": base}, {"app_id": app_id, "api_key": api_key}
    if provider == "braze":
        api_key = secrets.token_hex(16)
        return {"api_key": api_key, "base_url": base}, {"api_key": api_key}
    if provider == "expo":
        token = secrets.token_hex(16)
        return {"access_token": token, "base_url": base}, {"access_token": token}
    raise ValueError(f"unknown provider {provider!r}")


def setup_local_push(cfg: StackConfig, tenant: str, provider: str) -> bool:
    """Generate and register the tenant's credentials for ``provider``, unless it has some already (re-running
    `landline tenant add` keeps the keys the fake knows). True if new credentials were made."""
    if read_local_secrets(cfg, tenant).get(provider):
        return False
    entry, registration = make_credentials(cfg, tenant, provider)
    if not write_local_secret(cfg, tenant, provider, entry, keep_existing=True):
        return False
    register_file = cfg.home / "fakes" / "register.json"
    make_private_dir(register_file.parent)
    with locked(register_file):  # it holds the OneSignal, Braze and Expo keys as they are: 0600 like the secrets
        registered = json.loads(register_file.read_text()) if register_file.exists() else {}
        registered.setdefault(provider, []).append(registration)
        write_private_file(register_file, json.dumps(registered))  # read again by the fakes when they restart
    httpx.post(f"{fake_url(cfg, provider)}/_fake/register", json={provider: registration}, timeout=10).raise_for_status()
    return True

"""Typed push provider credentials, parsed from a tenant's secret entry (``shared/secrets.py`` says where entries
live: the local secrets file or Secret Manager).

Entry per provider::

    "fcm":       {"service_account": {<service-account JSON>}, "project_id": "optional, else from the JSON"},
    "apns":      {"team_id": "ABCDE12345", "key_id": "KEY1234567", "private_key": "-----BEGIN PRIVATE KEY-----...",
                  "topic": "com.example.app", "environment": "production" | "sandbox"},
    "onesignal": {"app_id": "...", "api_key": "os_v2_app_..."},
    "braze":     {"api_key": "...", "base_url": "https://rest.iad-01.braze.com"},
    "expo":      {"access_token": "optional"},

On the local stack an entry may carry ``"base_url"`` (and FCM a ``token_uri``): that is how tenants are pointed at
the fakes. Anywhere else both are ignored (provider defaults, Google's token endpoint): a tenant who can write its own
secret must not be able to send our requests, or its key's signed assertion, to a host of its choosing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from shared.errors import SetupError
from shared.push.names import PROVIDER_NAMES, ProviderName
from shared.secrets import Secret


@dataclass(frozen=True, slots=True)
class FcmCredentials:
    project_id: str
    service_account: Secret  # the service-account JSON (dict); its token_uri is where tokens come from
    base_url: str | None = None
    provider: ProviderName = "fcm"


@dataclass(frozen=True, slots=True)
class ApnsCredentials:
    team_id: str
    key_id: str
    private_key: Secret  # the .p8 PEM
    topic: str
    environment: Literal["production", "sandbox"] = "production"
    base_url: str | None = None
    provider: ProviderName = "apns"


@dataclass(frozen=True, slots=True)
class OneSignalCredentials:
    app_id: str
    api_key: Secret
    base_url: str | None = None
    provider: ProviderName = "onesignal"


@dataclass(frozen=True, slots=True)
class BrazeCredentials:
    api_key: Secret
    base_url: str | None = None  # instance-specific, e.g. https://rest.iad-01.braze.com
    provider: ProviderName = "braze"


@dataclass(frozen=True, slots=True)
class ExpoCredentials:
    access_token: Secret | None = None  # only with Expo's "enhanced security"
    base_url: str | None = None
    provider: ProviderName = "expo"


ProviderCredentials = FcmCredentials | ApnsCredentials | OneSignalCredentials | BrazeCredentials | ExpoCredentials


GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"


def _endpoints_trusted() -> bool:
    from shared.config import settings

    return settings().is_local


def parse_credentials(
    provider: str, raw: dict[str, Any], *, where: str, trust_endpoints: bool | None = None
) -> ProviderCredentials:
    """Build the typed credentials for ``provider`` from its JSON object; errors name the field, never a value.

    ``trust_endpoints`` (default: only on the local stack) keeps a secret's ``base_url`` and FCM ``token_uri``."""
    trusted = _endpoints_trusted() if trust_endpoints is None else trust_endpoints
    try:
        if not isinstance(raw, dict):
            raise TypeError("not a JSON object")
        base_url = raw.get("base_url") if trusted else None
        if provider == "fcm":
            sa = raw["service_account"]
            if isinstance(sa, str):
                sa = json.loads(sa)
            for key in ("client_email", "private_key", "token_uri"):
                if key not in sa:
                    raise KeyError(f"service_account.{key}")
            if not trusted:
                sa = {**sa, "token_uri": GOOGLE_TOKEN_URI}
            return FcmCredentials(raw.get("project_id") or sa["project_id"], Secret(sa), base_url)
        if provider == "apns":
            env = raw.get("environment", "production")
            if env not in ("production", "sandbox"):
                raise ValueError("environment must be production or sandbox")
            return ApnsCredentials(
                raw["team_id"], raw["key_id"], Secret(raw["private_key"]), raw["topic"], env, base_url
            )
        if provider == "onesignal":
            return OneSignalCredentials(raw["app_id"], Secret(raw["api_key"]), base_url)
        if provider == "braze":
            return BrazeCredentials(Secret(raw["api_key"]), base_url)
        if provider == "expo":
            token = raw.get("access_token")
            return ExpoCredentials(Secret(token) if token else None, base_url)
    except KeyError as exc:
        raise SetupError(
            f"{where}: {provider} credentials lack {exc.args[0]!s}",
            f"add it to {where} (see shared/push/credentials.py)",
        ) from None
    except (ValueError, TypeError) as exc:
        raise SetupError(
            f"{where}: {provider} credentials are malformed ({type(exc).__name__})", f"fix {where}"
        ) from None
    raise SetupError(f"unknown push provider {provider!r}", f"use one of {', '.join(PROVIDER_NAMES)}")

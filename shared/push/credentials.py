"""Per-tenant secrets (provider credentials, the privacy salt): a local secrets JSON file, or Secret Manager in the cloud.

Secret values are wrapped in ``Secret`` so that repr/str/logging of any credential object shows ``***``; code has to
call ``reveal()`` on purpose. Nothing here logs a value.

Secrets file (``LANDLINE_SECRETS_FILE``)::

    {"<tenant>": {
        "fcm":       {"service_account": {<service-account JSON>}, "project_id": "optional, else from the JSON"},
        "apns":      {"team_id": "ABCDE12345", "key_id": "KEY1234567", "private_key": "-----BEGIN PRIVATE KEY-----...",
                      "topic": "com.example.app", "environment": "production" | "sandbox"},
        "onesignal": {"app_id": "...", "api_key": "os_v2_app_..."},
        "braze":     {"api_key": "...", "base_url": "https://rest.iad-01.braze.com"},
        "expo":      {"access_token": "optional"},
        "privacy":   {"salt": "<random, 16+ characters; only for privacy mode hash>"}},
     ...}

On the local stack an entry may carry ``"base_url"`` (and FCM a ``token_uri``): that is how tenants are pointed at
the fakes. Anywhere else both are ignored (provider defaults, Google's token endpoint): a tenant who can write its own
secret must not be able to send our requests, or its key's signed assertion, to a host of its choosing. In the cloud the same JSON
object for one (tenant, provider) is stored as Secret Manager secret ``landline-<tenant>-<provider>`` (latest
version), the privacy salt as ``landline-<tenant>-privacy``, and read with the function's own identity through the
REST API.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from shared.errors import SetupError

if TYPE_CHECKING:
    from collections.abc import Callable

ProviderName = Literal["fcm", "apns", "onesignal", "braze", "expo"]
PROVIDERS: tuple[ProviderName, ...] = ("fcm", "apns", "onesignal", "braze", "expo")


class Secret:
    """A secret string or mapping that never shows itself in repr/str/format."""

    __slots__ = ("_value",)

    def __init__(self, value: Any) -> None:
        self._value = value

    def reveal(self) -> Any:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(json.dumps(self._value, sort_keys=True))

    def __reduce__(self) -> Any:  # keep secrets out of pickles (multiprocessing, caches)
        raise TypeError("Secret values are not picklable")


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
    raise SetupError(f"unknown push provider {provider!r}", f"use one of {', '.join(PROVIDERS)}")


PRIVACY_ENTRY = "privacy"
MIN_SALT_CHARS = 16


def parse_privacy_salt(raw: Any, *, tenant: str, where: str, fix: str) -> Secret:
    """The tenant's pseudonymisation salt (privacy mode ``hash``); errors name the place, never a value."""
    salt = raw.get("salt") if isinstance(raw, dict) else None
    if not isinstance(salt, str) or len(salt) < MIN_SALT_CHARS:
        state = "has no privacy salt" if salt is None else f"has a privacy salt under {MIN_SALT_CHARS} characters"
        raise SetupError(f"tenant {tenant!r} uses privacy mode 'hash' but {where} {state}", fix)
    return Secret(salt)


class FileSecrets:
    """The local secrets file; re-read when it changes (``landline`` commands may edit it while the stack runs)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._mtime: float | None = None
        self._data: dict[str, Any] = {}

    def _load(self) -> dict[str, Any]:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            raise SetupError(
                f"secrets file {self.path} does not exist", "create it or fix LANDLINE_SECRETS_FILE"
            ) from None
        with self._lock:
            if mtime != self._mtime:
                try:
                    self._data = json.loads(self.path.read_text())
                except json.JSONDecodeError as exc:
                    raise SetupError(f"secrets file {self.path} is not JSON (line {exc.lineno})", "fix it") from None
                self._mtime = mtime
            return self._data

    def get(self, tenant: str, provider: str) -> ProviderCredentials:
        entry = self._load().get(tenant, {}).get(provider)
        if entry is None:
            raise SetupError(
                f"no {provider} credentials for tenant {tenant!r} in {self.path}",
                f'add "{tenant}": {{"{provider}": ...}}',
            )
        return parse_credentials(provider, entry, where=str(self.path))

    def privacy_salt(self, tenant: str) -> Secret:
        entry = self._load().get(tenant, {}).get(PRIVACY_ENTRY)
        fix = f'add "{tenant}": {{"privacy": {{"salt": "<random>"}}}}'
        return parse_privacy_salt(entry, tenant=tenant, where=str(self.path), fix=fix)


class SecretManagerSecrets:
    """Secret Manager over its REST API with google-auth (no extra client library in the function bundle).

    Values are cached in memory for ``ttl`` seconds so a tick does not fetch per message.
    """

    API = "https://secretmanager.googleapis.com/v1"

    def __init__(self, project: str, *, ttl: float = 300.0, session: Any = None, api: str | None = None) -> None:
        self.project = project
        self.ttl = ttl
        self.api = (api or self.API).rstrip("/")
        self._session = session
        self._cache: dict[tuple[str, str], tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def _authorized_session(self) -> Any:
        if self._session is None:
            import google.auth
            from google.auth.transport.requests import AuthorizedSession

            creds, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
            self._session = AuthorizedSession(creds)
        return self._session

    @staticmethod
    def secret_id(tenant: str, provider: str) -> str:
        return f"landline-{tenant}-{provider}"

    def _cached(self, tenant: str, entry: str, parse: Callable[[Any, str], Any]) -> Any:
        """The parsed JSON of secret ``landline-<tenant>-<entry>`` (latest version), cached for ``ttl`` seconds."""
        key = (tenant, entry)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit and hit[0] > now:
                return hit[1]
        name = f"projects/{self.project}/secrets/{self.secret_id(tenant, entry)}/versions/latest"
        resp = self._authorized_session().get(f"{self.api}/{name}:access", timeout=10)
        if resp.status_code in (403, 404):
            raise SetupError(
                f"secret {name} is not readable (HTTP {resp.status_code})",
                "create it, and grant the function's service account roles/secretmanager.secretAccessor on it",
            )
        resp.raise_for_status()
        payload = base64.b64decode(resp.json()["payload"]["data"])
        value = parse(json.loads(payload), f"secret {name}")
        with self._lock:
            self._cache[key] = (now + self.ttl, value)
        return value

    def get(self, tenant: str, provider: str) -> ProviderCredentials:
        creds: ProviderCredentials = self._cached(
            tenant, provider, lambda raw, where: parse_credentials(provider, raw, where=where)
        )
        return creds

    def privacy_salt(self, tenant: str) -> Secret:
        fix = f'add a version {{"salt": "<random>"}} to secret {self.secret_id(tenant, PRIVACY_ENTRY)}'
        salt: Secret = self._cached(
            tenant, PRIVACY_ENTRY, lambda raw, where: parse_privacy_salt(raw, tenant=tenant, where=where, fix=fix)
        )
        return salt


CredentialSource = FileSecrets | SecretManagerSecrets


def credential_source(
    secrets_file: Path | None = None, project: str | None = None, *, settings: Callable[[], Any] | None = None
) -> CredentialSource:
    """The local file when ``LANDLINE_SECRETS_FILE`` is set, else Secret Manager in the settings' project."""
    if secrets_file is None and project is None:
        from shared.config import settings as default_settings

        cfg = (settings or default_settings)()
        secrets_file, project = cfg.secrets_file, cfg.project
    if secrets_file is not None:
        return FileSecrets(Path(secrets_file))
    if not project:
        raise SetupError("no credential source", "set LANDLINE_SECRETS_FILE or LANDLINE_PROJECT")
    return SecretManagerSecrets(project)

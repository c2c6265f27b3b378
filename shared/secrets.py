"""Where a tenant's secrets come from: the local secrets file (``LANDLINE_SECRETS_FILE``) or Secret Manager in the
cloud. One entry per (tenant, name): a push provider's credentials (parsed into typed credentials by
``shared/push/credentials.py``) or ``privacy`` (the pseudonymisation salt).

Secret values are wrapped in ``Secret`` so that repr/str/logging of anything holding one shows ``***``; code has to
call ``reveal()`` on purpose. Nothing here logs a value.

Secrets file::

    {"<tenant>": {"<provider>": {...its credentials, see shared/push/credentials.py...},
                  "privacy":    {"salt": "<random, 16+ characters; only for privacy mode hash>"}},
     ...}

In the cloud the same JSON object for one (tenant, entry) is Secret Manager secret ``landline-<tenant>-<entry>``
(latest version), read with the function's own identity through the REST API.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from shared.errors import SetupError

if TYPE_CHECKING:
    from collections.abc import Callable

    from shared.push.credentials import ProviderCredentials

T = TypeVar("T")

PRIVACY_ENTRY = "privacy"
MIN_SALT_CHARS = 16


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


def parse_privacy_salt(raw: Any, *, tenant: str, where: str, fix: str) -> Secret:
    """The tenant's pseudonymisation salt (privacy mode ``hash``); errors name the place, never a value."""
    salt = raw.get("salt") if isinstance(raw, dict) else None
    if not isinstance(salt, str) or len(salt) < MIN_SALT_CHARS:
        state = "has no privacy salt" if salt is None else f"has a privacy salt under {MIN_SALT_CHARS} characters"
        raise SetupError(f"tenant {tenant!r} uses privacy mode 'hash' but {where} {state}", fix)
    return Secret(salt)


def _provider_credentials(provider: str, raw: Any, where: str) -> ProviderCredentials:
    # Imported on use: the loader reads only salts and never loads push code.
    from shared.push.credentials import parse_credentials

    return parse_credentials(provider, raw, where=where)


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

    def where(self, tenant: str, entry: str) -> str:
        return f'the "{tenant}": {{"{entry}": ...}} entry of {self.path}'

    def get(self, tenant: str, provider: str) -> ProviderCredentials:
        """The tenant's typed credentials for ``provider``; a SetupError naming the fix when missing or malformed."""
        entry = self._load().get(tenant, {}).get(provider)
        if entry is None:
            raise SetupError(
                f"no {provider} credentials for tenant {tenant!r} in {self.path}",
                f'add "{tenant}": {{"{provider}": ...}}',
            )
        return _provider_credentials(provider, entry, str(self.path))

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
    def secret_id(tenant: str, entry: str) -> str:
        return f"landline-{tenant}-{entry}"

    def where(self, tenant: str, entry: str) -> str:
        return f"Secret Manager secret {self.secret_id(tenant, entry)} (add a new version)"

    def _cached(self, tenant: str, entry: str, parse: Callable[[Any, str], T]) -> T:
        """The parsed JSON of secret ``landline-<tenant>-<entry>`` (latest version), cached for ``ttl`` seconds."""
        key = (tenant, entry)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit and hit[0] > now:
                cached: T = hit[1]
                return cached
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
        """The tenant's typed credentials for ``provider``; a SetupError naming the fix when missing or malformed."""
        return self._cached(tenant, provider, lambda raw, where: _provider_credentials(provider, raw, where))

    def privacy_salt(self, tenant: str) -> Secret:
        fix = f'add a version {{"salt": "<random>"}} to secret {self.secret_id(tenant, PRIVACY_ENTRY)}'
        return self._cached(
            tenant, PRIVACY_ENTRY, lambda raw, where: parse_privacy_salt(raw, tenant=tenant, where=where, fix=fix)
        )


SecretSource = FileSecrets | SecretManagerSecrets


def secret_source(
    secrets_file: Path | None = None, project: str | None = None, *, settings: Callable[[], Any] | None = None
) -> SecretSource:
    """The local file when ``LANDLINE_SECRETS_FILE`` is set, else Secret Manager in the settings' project."""
    if secrets_file is None and project is None:
        from shared.config import settings as default_settings

        cfg = (settings or default_settings)()
        secrets_file, project = cfg.secrets_file, cfg.project
    if secrets_file is not None:
        return FileSecrets(Path(secrets_file))
    if not project:
        raise SetupError("no secret source", "set LANDLINE_SECRETS_FILE or LANDLINE_PROJECT")
    return SecretManagerSecrets(project)

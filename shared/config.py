"""Settings (environment, prefix ``LANDLINE_``) and the tenant registry.

The same code runs in Cloud Functions and on the local stack; only these settings differ. Emulators are found through
the variables the Google clients already honour (``PUBSUB_EMULATOR_HOST``, ``STORAGE_EMULATOR_HOST``) plus
``LANDLINE_BIGQUERY_ENDPOINT``, which the BigQuery client has no variable for.
"""

from __future__ import annotations

import json
import threading
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.errors import SetupError

TENANT_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,39}$"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LANDLINE_", extra="ignore")

    project: str = "landline-local"
    raw_events_topic: str = "raw-events"
    send_requests_topic: str = "send-requests"
    # Where tenants are described: a JSON file (local stack, or a file shipped with a deployment) or inline JSON.
    tenants_file: Path | None = None
    tenants_json: str | None = None
    bigquery_endpoint: str | None = None
    # Batching of raw lines into Pub/Sub messages: well under the 10 MB message limit and the 10 MB request limit.
    batch_max_lines: int = Field(default=1000, ge=1, le=100_000)
    batch_max_bytes: int = Field(default=2_000_000, ge=1024, le=8_000_000)
    # Future-timestamp policy (issue 4): events more than this after receivedAt are rejected.
    max_future_skew_hours: float = 24.0
    # Secrets for push providers on the local stack (Secret Manager in the cloud).
    secrets_file: Path | None = None

    @property
    def is_local(self) -> bool:
        return self.bigquery_endpoint is not None


@lru_cache(maxsize=1)
def settings() -> Settings:
    return Settings()


# -- per-tenant topics ------------------------------------------------------------------------------------------------
# Tenant isolation on Pub/Sub (issue 9): every tenant has its own copy of each data topic (raw lines, send requests,
# object notifications), named ``<base>.<tenant>``. Who may publish is decided by IAM on that topic, and a function
# takes the tenant from the topic its subscription delivers from (the CloudEvent source, set by infrastructure),
# never from a message attribute that any publisher could set. Tenant names cannot contain ".".
TENANT_TOPIC_SEPARATOR = "."


def tenant_topic(base: str, tenant: str) -> str:
    """The topic ``base`` of ``tenant``, e.g. ``raw-events.acme``."""
    return f"{base}{TENANT_TOPIC_SEPARATOR}{tenant}"


def tenant_of_topic(base: str, topic: str | None) -> str | None:
    """The tenant whose copy of ``base`` ``topic`` is (``raw-events.acme`` -> ``acme``); None for any other topic."""
    if not topic:
        return None
    prefix = base + TENANT_TOPIC_SEPARATOR
    return topic.removeprefix(prefix) if topic.startswith(prefix) and len(topic) > len(prefix) else None


class PushPolicy(BaseModel):
    """Per-tenant sending policy. Quiet hours are in the contact's own timezone (UTC when unknown)."""

    quiet_hours_start: str | None = Field(default=None, pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    quiet_hours_end: str | None = Field(default=None, pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    frequency_cap: int = Field(default=3, ge=1, description="sends per contact per rolling window")
    frequency_window_hours: float = Field(default=24.0, gt=0)
    # A contact opts out when any of these user properties is true.
    opt_out_properties: tuple[str, ...] = ("push_opt_out", "unsubscribed_push")
    max_deferrals: int = Field(default=20, ge=1)


class PrivacyConfig(BaseModel):
    """Per-tenant PII policy for event metadata (compiled by ``shared.privacy.policy_for``).

    ``mode="hash"`` keeps personal values joinable inside the tenant (salted sha256) instead of removing them. The
    salt is a secret, so it is not here: it lives with the tenant's other secrets (``"privacy": {"salt": ...}``), and
    a per-tenant salt means two tenants' pseudonyms of one email never match.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")  # frozen: hashable, so compiled policies are cached

    mode: Literal["remove", "hash"] = "remove"
    # Keys this tenant's data uses for personal values, on top of the built-in list (e.g. "member_no").
    extra_pii_keys: tuple[str, ...] = ()
    # Context sections copied into event metadata; None keeps the built-in allow-list.
    context_keep: tuple[str, ...] | None = None
    # Look inside string values for emails, phone numbers and IPs (off only for data known to be free of them).
    scan_values: bool = True


class Tenant(BaseModel):
    """One customer: its bucket and dataset, pinned to ``region``."""

    name: str = Field(pattern=TENANT_NAME_PATTERN)
    region: str
    bucket: str
    dataset: str
    # Optional prefix before ``segment-logs/`` in the bucket (Segment lets customers choose one).
    prefix: str = ""
    push_provider: str | None = None
    push_policy: PushPolicy = Field(default_factory=PushPolicy)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)

    @field_validator("region")
    @classmethod
    def _lower_region(cls, value: str) -> str:
        return value.lower()


class TenantRegistry:
    """Tenants by name and by bucket. Re-reads its file when it changes, so `landline tenant add` needs no restart."""

    def __init__(self, cfg: Settings) -> None:
        self._cfg = cfg
        self._lock = threading.Lock()
        self._mtime: float | None = None
        self._tenants: dict[str, Tenant] = {}

    def _load(self) -> dict[str, Tenant]:
        cfg = self._cfg
        if cfg.tenants_json:
            raw = json.loads(cfg.tenants_json)
        elif cfg.tenants_file:
            path = cfg.tenants_file
            mtime = path.stat().st_mtime if path.exists() else None
            with self._lock:
                if mtime == self._mtime and self._tenants:
                    return self._tenants
                raw = json.loads(path.read_text()) if mtime is not None else {}
                self._mtime = mtime
                self._tenants = {name: Tenant.model_validate(t) for name, t in raw.items()}
                return self._tenants
        else:
            raise SetupError(
                "no tenants are configured", "set LANDLINE_TENANTS_FILE or LANDLINE_TENANTS_JSON for the function"
            )
        return {name: Tenant.model_validate(t) for name, t in raw.items()}

    def all(self) -> list[Tenant]:
        return list(self._load().values())

    def get(self, name: str) -> Tenant:
        tenants = self._load()
        if name not in tenants:
            raise SetupError(f"unknown tenant {name!r}", f"create it with `landline tenant add {name} --region R`")
        return tenants[name]

    def by_bucket(self, bucket: str) -> Tenant | None:
        return next((t for t in self._load().values() if t.bucket == bucket), None)


@lru_cache(maxsize=1)
def tenants() -> TenantRegistry:
    return TenantRegistry(settings())

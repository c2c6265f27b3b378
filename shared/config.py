"""Settings (environment, prefix ``LANDLINE_``) and the tenant registry.

The same code runs in Cloud Functions and on the local stack; only these settings differ. Emulators are found through
the variables the Google clients already honour (``PUBSUB_EMULATOR_HOST``, ``STORAGE_EMULATOR_HOST``) plus
``LANDLINE_BIGQUERY_ENDPOINT`` and ``LANDLINE_BIGQUERY_WRITE_ENDPOINT`` (its Storage Write API, gRPC), which the
BigQuery clients have no variable for.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import logging
import re
import threading
from collections import defaultdict
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.errors import SetupError
from shared.push.names import ProviderName

TENANT_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,39}$"
log = logging.getLogger("landline.config")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LANDLINE_", extra="ignore")

    project: str = "landline-local"
    raw_events_topic: str = "raw-events"
    send_requests_topic: str = "send-requests"
    send_shards_topic: str = "send-shards"
    # Where a tenant bucket's OBJECT_FINALIZE notifications arrive, as object-notifications.<tenant> (ingest_file).
    object_notifications_topic: str = "object-notifications"
    # Where tenants are described: a JSON file (local stack, or a file shipped with a deployment) or inline JSON.
    tenants_file: Path | None = None
    tenants_json: str | None = None
    bigquery_endpoint: str | None = None
    # The emulator's Storage Write API (gRPC host:port); in the cloud the client's default endpoint is used.
    bigquery_write_endpoint: str | None = None
    # Batching of raw lines into Pub/Sub messages: well under the 10 MB message limit and the 10 MB request limit.
    batch_max_lines: int = Field(default=1000, ge=1, le=100_000)
    batch_max_bytes: int = Field(default=2_000_000, ge=1024, le=8_000_000)
    # Future-timestamp policy: events more than this after receivedAt are rejected.
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
# Tenant isolation on Pub/Sub (ARCHITECTURE.md "Tenants and regions"): every tenant has its own copy of each data topic (raw lines, send requests,
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
    # Days a rejected line's raw payload is kept (``rejected`` partitions expire after this): it is the line as it came,
    # personal data unscrubbed and, in hash mode, unhashed. A replay must happen within this window.
    rejected_retention_days: int = Field(default=30, ge=1, le=3650)


class ActivityLevels(BaseModel):
    """Per-tenant thresholds of the ``contact_activity`` view: a contact's level from its events over the last
    ``ACTIVITY_WINDOW_DAYS`` days. Fewer than ``low`` events: dormant; at least ``low``: low; at least ``medium``:
    medium; at least ``high``: high. The defaults: 0 dormant, 1-2 low, 3-9 medium, 10+ high."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    low: int = Field(default=1, ge=1)
    medium: int = Field(default=3, ge=2)
    high: int = Field(default=10, ge=3)

    @model_validator(mode="after")
    def _ordered(self) -> ActivityLevels:
        if not self.low < self.medium < self.high:
            raise ValueError(f"thresholds must rise: low {self.low} < medium {self.medium} < high {self.high}")
        return self


ACTIVITY_WINDOW_DAYS = 30


# -- names the cloud accepts (checked here, so that the local stack refuses what Google Cloud would) ------------------
# Google Cloud regions (multi-regions such as "eu" are not: functions, topics and buckets are pinned to one region).
# Only `landline tenant add` checks a region against this list (with a "did you mean"): a region Google adds later
# must not make an existing deployment's tenants unreadable, so the model only checks the format.
KNOWN_REGIONS: frozenset[str] = frozenset({
    "africa-south1", "asia-east1", "asia-east2", "asia-northeast1", "asia-northeast2", "asia-northeast3",
    "asia-south1", "asia-south2", "asia-southeast1", "asia-southeast2", "australia-southeast1",
    "australia-southeast2", "europe-central2", "europe-north1", "europe-north2", "europe-southwest1", "europe-west1",
    "europe-west2", "europe-west3", "europe-west4", "europe-west6", "europe-west8", "europe-west9", "europe-west10",
    "europe-west12", "me-central1", "me-central2", "me-west1", "northamerica-northeast1", "northamerica-northeast2",
    "northamerica-south1", "southamerica-east1", "southamerica-west1", "us-central1", "us-east1", "us-east4",
    "us-east5", "us-south1", "us-west1", "us-west2", "us-west3", "us-west4",
})  # fmt: skip
REGION_PATTERN = re.compile(r"[a-z]+-[a-z]+[0-9]{1,2}")
# BigQuery dataset ids: letters, digits and underscores, at most 1,024.
DATASET_PATTERN = re.compile(r"[A-Za-z0-9_]{1,1024}")
# Cloud Storage bucket names: lowercase letters, digits, "-", "_" and "."; start and end with a letter or digit; 3-63
# characters (up to 222 with dots, each dot-separated part at most 63); not an IP address; no "goog" prefix and no
# "google" (or look-alikes) inside.
_BUCKET_CHARS = re.compile(r"[a-z0-9][a-z0-9._-]*[a-z0-9]")
_GOOGLE_LOOKALIKE = re.compile(r"g[o0]{2}g[l1]e")
CLAIMS_BUCKET_SUFFIX = "-claims"  # shared/push/claims.py: every tenant also gets <bucket>-claims
STAGING_BUCKET_SUFFIX = "-staging"  # shared/bulk.py: a bulk backfill's validated rows, until their load jobs ran


def tenant_buckets(bucket: str) -> tuple[str, str, str]:
    """A tenant's own bucket and the two beside it, in its region: claims and staging."""
    return bucket, bucket + CLAIMS_BUCKET_SUFFIX, bucket + STAGING_BUCKET_SUFFIX


def bucket_name_problem(name: str) -> str | None:
    """Why Cloud Storage would refuse ``name`` as a bucket name, or None."""
    if not 3 <= len(name) <= 222 or not _BUCKET_CHARS.fullmatch(name):
        return "use 3-63 lowercase letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
    if "." not in name and len(name) > 63:
        return "at most 63 characters (222 with dots)"
    if any(not 1 <= len(part) <= 63 for part in name.split(".")):
        return "each dot-separated part must have 1-63 characters"
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        return "a bucket name cannot be an IP address"
    if name.startswith("goog") or _GOOGLE_LOOKALIKE.search(name):
        return "a bucket name cannot start with 'goog' or contain 'google'"
    return None


def region_problem(region: str) -> str | None:
    """Why ``region`` is not a Google Cloud region (with the nearest known one), or None."""
    if region in KNOWN_REGIONS:
        return None
    close = difflib.get_close_matches(region, KNOWN_REGIONS, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else "regions look like 'europe-west1' or 'us-central1'"
    return f"unknown region {region!r} ({hint})"


class Tenant(BaseModel):
    """One customer: its bucket and dataset, pinned to ``region``. Names are checked as Google Cloud checks them."""

    name: str = Field(pattern=TENANT_NAME_PATTERN)
    region: str
    bucket: str
    dataset: str
    # Optional prefix before ``segment-logs/`` in the bucket (Segment lets customers choose one).
    prefix: str = ""
    push_provider: ProviderName | None = None
    push_policy: PushPolicy = Field(default_factory=PushPolicy)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    activity: ActivityLevels = Field(default_factory=ActivityLevels)

    @field_validator("region")
    @classmethod
    def _check_region(cls, value: str) -> str:
        value = value.lower()
        if not REGION_PATTERN.fullmatch(value):
            raise ValueError(f"{value!r} is not a Google Cloud region (they look like 'europe-west1')")
        return value

    @field_validator("bucket")
    @classmethod
    def _check_bucket(cls, value: str) -> str:
        for name in tenant_buckets(value):
            problem = bucket_name_problem(name)
            if problem:
                raise ValueError(f"bucket {name!r} is not a valid Cloud Storage bucket name: {problem}")
        return value

    @field_validator("dataset")
    @classmethod
    def _check_dataset(cls, value: str) -> str:
        if not DATASET_PATTERN.fullmatch(value):
            raise ValueError(f"{value!r} is not a BigQuery dataset id (letters, digits and '_', at most 1,024)")
        return value


def validation_message(exc: ValidationError) -> str:
    """A pydantic error as one line: ``field: message; ...`` (no input echo, no documentation URL)."""
    return "; ".join(
        f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()
    )


def parse_registry(raw: dict[str, Any]) -> tuple[dict[str, Tenant], dict[str, str]]:
    """(usable tenants, problem per unusable tenant). A tenant that does not validate, or that shares a bucket or a
    dataset with another, is unusable: a shared bucket or dataset would mix two tenants' data, so neither of the two
    gets anything until one is fixed, and nothing about one tenant makes the others unusable."""
    tenants: dict[str, Tenant] = {}
    problems: dict[str, str] = {}
    for name, value in raw.items():
        try:
            tenants[name] = Tenant.model_validate(value)
        except ValidationError as exc:
            problems[name] = validation_message(exc)
    owners: dict[tuple[str, str], list[str]] = defaultdict(list)
    for name, tenant in tenants.items():
        for bucket in tenant_buckets(tenant.bucket):
            owners["bucket", bucket].append(name)
        owners["dataset", tenant.dataset].append(name)
    for (kind, value), names in owners.items():
        if len(names) > 1:
            for name in names:
                others = ", ".join(sorted(set(names) - {name})) or name
                problems[name] = f"shares {kind} {value!r} with tenant {others}"
    for name in problems:
        tenants.pop(name, None)
    return tenants, problems


class TenantRegistry:
    """Tenants by name and by bucket. Re-reads its file when it changes, so `landline tenant add` needs no restart.

    An unusable tenant (invalid, or sharing a bucket or dataset) is left out and logged, and asking for it is a setup
    error that says why; the other tenants are not affected.
    """

    def __init__(self, cfg: Settings) -> None:
        self._cfg = cfg
        self._lock = threading.Lock()
        self._source: object = None
        self._tenants: dict[str, Tenant] = {}
        self._problems: dict[str, str] = {}

    def _load(self) -> dict[str, Tenant]:
        cfg = self._cfg
        source: object
        if cfg.tenants_json:
            source = cfg.tenants_json
        elif cfg.tenants_file:
            try:
                st = cfg.tenants_file.stat()
                source = (st.st_ino, st.st_mtime_ns, st.st_size)  # a new inode on every atomic replace
            except FileNotFoundError:
                source = None
        else:
            raise SetupError(
                "no tenants are configured", "set LANDLINE_TENANTS_FILE or LANDLINE_TENANTS_JSON for the function"
            )
        with self._lock:
            if source != self._source or not self._tenants:
                if cfg.tenants_json:
                    raw = json.loads(cfg.tenants_json)
                else:
                    raw = json.loads(cfg.tenants_file.read_text()) if source and cfg.tenants_file else {}
                self._tenants, problems = parse_registry(raw)
                for name, problem in problems.items():
                    if self._problems.get(name) != problem:
                        log.error("tenant %r is not usable: %s", name, problem)
                self._problems = problems
                self._source = source
            return self._tenants

    def all(self) -> list[Tenant]:
        return list(self._load().values())

    def problem(self, name: str) -> str | None:
        """Why a registered tenant is not usable, or None."""
        self._load()
        return self._problems.get(name)

    def get(self, name: str) -> Tenant:
        tenants = self._load()
        if name not in tenants:
            if name in self._problems:
                raise SetupError(
                    f"tenant {name!r} is not usable: {self._problems[name]}",
                    f"correct its entry in the tenants file (or re-run `landline tenant add {name}` with valid values)",
                )
            raise SetupError(f"unknown tenant {name!r}", f"create it with `landline tenant add {name} --region R`")
        return tenants[name]

    def by_bucket(self, bucket: str) -> Tenant | None:
        return next((t for t in self._load().values() if t.bucket == bucket), None)


@lru_cache(maxsize=1)
def tenants() -> TenantRegistry:
    return TenantRegistry(settings())

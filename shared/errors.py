"""The three failure classes, decided once (ARCHITECTURE.md "Guarantees").

Every stage raises one of these and the function wrappers decide what the platform sees:

* ``PermanentError`` - bad data. Record it (ledger row, rejected row) and *ack*: retrying cannot help.
* ``TransientError`` - 5xx, 429, timeouts, ``stopped`` rows. *Raise* so Pub/Sub / Eventarc redeliver with backoff.
* ``SetupError`` - permissions, missing topic/bucket/dataset, region mismatch. *Raise* (so nothing is lost while a
  human fixes it) and log an error whose message names the fix.
"""

from __future__ import annotations


class LandlineError(Exception):
    """Base class of every error the product raises on purpose."""


class PermanentError(LandlineError):
    """Bad input: record it with ``reason`` and move on."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class TransientError(LandlineError):
    """Worth retrying later: the platform redelivers."""


class SetupError(LandlineError):
    """Misconfiguration that only a human can fix; the message says how."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(f"{problem}. Fix: {fix}")
        self.problem = problem
        self.fix = fix


class RegionMismatchError(SetupError):
    """A tenant's dataset lives in another location than the tenant's configured region."""

    def __init__(self, dataset: str, dataset_location: str, tenant: str, region: str) -> None:
        super().__init__(
            f"dataset {dataset} is in location {dataset_location!r} but tenant {tenant!r} is pinned to {region!r}; "
            "nothing was written",
            f"move the tenant's data to a dataset created in {region!r} (dataset locations cannot change) "
            f"or correct the tenant's region with `landline tenant add {tenant} --region {dataset_location}`",
        )
        self.dataset_location = dataset_location
        self.region = region

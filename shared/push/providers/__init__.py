"""One adapter per push provider, all behind ``Provider.send_many``; ``create_provider`` picks one from credentials."""

from __future__ import annotations

from typing import Any

from shared.push.credentials import (
    ApnsCredentials,
    BrazeCredentials,
    ExpoCredentials,
    FcmCredentials,
    OneSignalCredentials,
    ProviderCredentials,
)
from shared.push.providers.apns import ApnsProvider
from shared.push.providers.base import Provider, PushMessage, SendOutcome
from shared.push.providers.braze import BrazeProvider
from shared.push.providers.expo import ExpoProvider, ExpoReceipt
from shared.push.providers.fcm import FcmProvider
from shared.push.providers.onesignal import OneSignalProvider

__all__ = [
    "ApnsProvider",
    "BrazeProvider",
    "ExpoProvider",
    "ExpoReceipt",
    "FcmProvider",
    "OneSignalProvider",
    "Provider",
    "PushMessage",
    "SendOutcome",
    "create_provider",
]


def create_provider(credentials: ProviderCredentials, *, base_url: str | None = None, **options: Any) -> Provider:
    """The adapter for ``credentials``. ``base_url`` overrides the credential's and the provider's default (fakes).
    Create one per (tenant, provider) per process and reuse it: it owns the pooled HTTP client."""
    if isinstance(credentials, FcmCredentials):
        return FcmProvider(credentials, base_url=base_url, **options)
    if isinstance(credentials, ApnsCredentials):
        return ApnsProvider(credentials, base_url=base_url, **options)
    if isinstance(credentials, OneSignalCredentials):
        return OneSignalProvider(credentials, base_url=base_url, **options)
    if isinstance(credentials, BrazeCredentials):
        return BrazeProvider(credentials, base_url=base_url, **options)
    if isinstance(credentials, ExpoCredentials):
        return ExpoProvider(credentials, base_url=base_url, **options)
    raise TypeError(f"unsupported credentials {type(credentials).__name__}")

"""One adapter per push provider, all behind ``Provider.send_many``; ``create_provider`` picks one from credentials."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared.push.credentials import (
    ApnsCredentials,
    BrazeCredentials,
    ExpoCredentials,
    FcmCredentials,
    OneSignalCredentials,
    ProviderCredentials,
)
from shared.push.providers.apns import ApnsProvider
from shared.push.providers.base import Provider, PushMessage, Receipt, SendOutcome
from shared.push.providers.braze import BrazeProvider
from shared.push.providers.expo import ExpoProvider
from shared.push.providers.fcm import FcmProvider
from shared.push.providers.onesignal import OneSignalProvider

if TYPE_CHECKING:
    from shared.push.names import ProviderName

__all__ = [
    "ApnsProvider",
    "BrazeProvider",
    "ExpoProvider",
    "FcmProvider",
    "OneSignalProvider",
    "Provider",
    "PushMessage",
    "Receipt",
    "SendOutcome",
    "create_provider",
    "provider_class",
]

_CLASSES: dict[str, type[Provider]] = {
    cls.name: cls for cls in (FcmProvider, ApnsProvider, OneSignalProvider, BrazeProvider, ExpoProvider)
}


def provider_class(name: ProviderName | str) -> type[Provider] | None:
    """The adapter class of a provider name (what it can do, e.g. ``has_receipts``), without its credentials."""
    return _CLASSES.get(name)


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

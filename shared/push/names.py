"""The push providers landline speaks, as one type: tenants (``Tenant.push_provider``), send requests
(``SendRequest.provider``), credentials and the local fakes all name a provider with ``ProviderName``.

Kept free of imports so that ``shared.config`` can use it without loading any provider adapter.
"""

from __future__ import annotations

from typing import Literal, get_args

ProviderName = Literal["fcm", "apns", "onesignal", "braze", "expo"]
PROVIDER_NAMES: tuple[ProviderName, ...] = get_args(ProviderName)

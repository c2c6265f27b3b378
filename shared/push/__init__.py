"""Push sending: provider adapters (``shared.push.providers``), credentials, retry and pacing.

Scheduling, policy and claiming (issue 5's caller side) build on ``create_provider(...).send_many(...)``.
"""

from __future__ import annotations

from shared.push.credentials import credential_source, parse_credentials
from shared.push.providers import Provider, PushMessage, SendOutcome, create_provider

__all__ = ["Provider", "PushMessage", "SendOutcome", "create_provider", "credential_source", "parse_credentials"]

"""The local stand-in for Secret Manager: one JSON file in the stack's state folder, readable only by its owner.

Layout as ``shared/push/credentials.py`` reads it: ``{"<tenant>": {"<entry>": {...}}}`` where an entry is a push
provider's credentials or ``privacy`` (the pseudonymisation salt).
"""

from __future__ import annotations

import json
import secrets
from typing import TYPE_CHECKING, Any

from shared.push.credentials import PRIVACY_ENTRY

if TYPE_CHECKING:
    from infra.local.stack import StackConfig


def write_local_secret(cfg: StackConfig, tenant: str, entry: str, value: dict[str, Any]) -> None:
    """Set one entry; written to a 0600 temp file and renamed, so readers never see a half-written file."""
    path = cfg.paths.secrets
    current = json.loads(path.read_text() or "{}") if path.exists() else {}
    current.setdefault(tenant, {})[entry] = value
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(current, indent=2))
    tmp.chmod(0o600)
    tmp.replace(path)


def ensure_local_privacy_salt(cfg: StackConfig, tenant: str) -> None:
    """Give a hash-mode tenant a random salt, once: a new salt would change every pseudonym it has written."""
    path = cfg.paths.secrets
    current = json.loads(path.read_text() or "{}") if path.exists() else {}
    if "salt" not in current.get(tenant, {}).get(PRIVACY_ENTRY, {}):
        write_local_secret(cfg, tenant, PRIVACY_ENTRY, {"salt": secrets.token_hex(32)})

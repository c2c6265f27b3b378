"""Exactly one send per message attempt: a claim is a tiny Cloud Storage object created with
``if_generation_match=0`` (create-if-absent), taken before the provider is called.

Why Cloud Storage: it is the one precondition the local emulator enforces (multipart uploads through the client
library), and in the cloud it is strongly consistent, regional (the tenant's claims bucket sits in its region) and
needs no extra database. Two ticks racing for the same attempt: exactly one upload succeeds.

The client library retries an upload whose response was lost; that retry meets our own object (412). The object
says which tick wrote it, so a 412 on a claim holding our own tick id is a claim we won, not one we lost.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from google.api_core import exceptions as gexc

from shared.clients import storage_client
from shared.errors import SetupError, TransientError

if TYPE_CHECKING:
    from shared.config import Tenant


def claims_bucket(tenant: Tenant) -> str:
    return f"{tenant.bucket}-claims"


@dataclass(frozen=True, slots=True)
class Claim:
    won: bool
    claimed_at: datetime | None = None  # when the holder claimed it (for a lost claim: the other holder)


def claim(tenant: Tenant, message_id: str, attempt: int, tick_id: str) -> Claim:
    blob = storage_client().bucket(claims_bucket(tenant)).blob(f"claims/{message_id}/{attempt}")
    now = datetime.now(UTC)
    body = json.dumps({"tick": tick_id, "claimed_at": now.isoformat()})
    try:
        blob.upload_from_string(body, content_type="application/json", if_generation_match=0)
        return Claim(True, now)
    except gexc.PreconditionFailed:
        try:
            held = json.loads(blob.download_as_bytes())
            claimed_at = datetime.fromisoformat(held["claimed_at"])
        except (gexc.NotFound, ValueError, KeyError, TypeError):
            return Claim(False, None)
        return Claim(held.get("tick") == tick_id, claimed_at)
    except gexc.NotFound as exc:
        raise SetupError(
            f"claims bucket {claims_bucket(tenant)} does not exist",
            f"run `landline tenant add {tenant.name} --region {tenant.region}` (creates it) or apply infra/terraform",
        ) from exc
    except gexc.Forbidden as exc:
        raise SetupError(
            f"cannot write claims to {claims_bucket(tenant)}",
            "grant the send_due service account roles/storage.objectCreator and objectViewer on the claims bucket",
        ) from exc
    except gexc.GoogleAPICallError as exc:
        raise TransientError(f"claiming {message_id}: {exc}") from exc

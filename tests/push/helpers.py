from __future__ import annotations

import time
from typing import Any

from shared.push.providers.base import PushMessage


def msg(i: int | str, token: str | None = None, **kw: Any) -> PushMessage:
    fields: dict[str, Any] = {
        "message_id": f"m{i}",
        "contact_id": f"c{i}",
        "token": token if token is not None else f"{int(str(i).encode().hex(), 16):064x}",
        "title": "Hello",
        "body": "World",
        "data": {"k": "v"},
        "idempotency_key": f"idem-{i}",
    }
    fields.update(kw)
    return PushMessage(**fields)


def deadline(seconds: float = 30.0) -> float:
    return time.time() + seconds

"""What `landline schedule` checks before anything is written: each option on its own, in one line that shows the
expected form (the send request model checks the whole again when it is built)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

from infra.local.cli_support import fail, warn
from shared.tenancy import PUSH_PROVIDERS

LOCAL_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}")


def check_schedule_options(
    at: str | None, local_time: str | None, provider: str | None, data: str | None, title: str, body: str
) -> tuple[datetime | None, dict[str, str]]:
    """(the send time, the data payload), or a one-line refusal naming the option."""
    if at is not None and local_time is not None:
        fail("--at and --local-time exclude each other: give a moment (--at) or a wall-clock time (--local-time)", 2)
    send_at = _parse_at(at) if at is not None else None
    if local_time is not None:
        try:
            ok = bool(LOCAL_TIME.fullmatch(local_time)) and bool(datetime.fromisoformat(local_time))
        except ValueError:
            ok = False
        if not ok:
            fail(f"--local-time must be YYYY-MM-DDTHH:MM without an offset, e.g. 2027-01-01T09:00; got {local_time!r}", 2)
    if provider is not None and provider not in PUSH_PROVIDERS:
        fail(f"--provider must be one of {', '.join(PUSH_PROVIDERS)}; got {provider!r}", 2)
    for option, value in (("--title", title), ("--body", body)):
        if not value.strip():
            fail(f"{option} must not be empty", 2)
    payload = _parse_data(data) if data else {}
    if send_at is not None and send_at < datetime.now(UTC):
        warn(f"--at {at} is in the past: the next tick sends it")
    return send_at, payload


def _parse_at(at: str) -> datetime:
    try:
        moment = datetime.fromisoformat(at)
    except ValueError:
        fail(f"--at must be ISO-8601 with an offset, e.g. 2027-01-01T09:00Z or 2027-01-01T09:00+01:00; got {at!r}", 2)
    if moment.tzinfo is None:
        fail(f"--at needs an offset (Z or +HH:MM), e.g. {at}Z; for the contact's own clock use --local-time", 2)
    return moment


def _parse_data(data: str) -> dict[str, str]:
    try:
        payload = json.loads(data)
    except json.JSONDecodeError:
        payload = None
    if not isinstance(payload, dict) or not all(isinstance(v, str) for v in payload.values()):
        fail(f'--data must be a JSON object of string values, e.g. {{"campaign": "spring"}}; got {data!r}', 2)
    return payload


def contact_has_token(tenant: str, contact: str) -> bool:
    """Whether the contact has a push token (users_latest); True when that cannot be told (a missing view is for
    `landline tables` to report, not a reason to refuse)."""
    from google.api_core import exceptions as gexc

    from shared.warehouse.query import run_query

    try:
        rows = run_query(
            tenant, "SELECT COUNT(*) AS n FROM users_latest WHERE contact_id = @c AND push_token IS NOT NULL",
            {"c": contact},
        )  # fmt: skip
    except gexc.GoogleAPIError:
        return True
    return bool(rows and rows[0]["n"])

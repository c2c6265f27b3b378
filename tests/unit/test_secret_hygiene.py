"""Findings 22 and 23 (local side): secrets never show in repr/str/logs, and the local files that hold them are private
from their first byte."""

from __future__ import annotations

import json
import logging
import os
import stat
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest

from infra.local.push_setup import make_credentials
from infra.local.secrets_file import ensure_local_privacy_salt, write_local_secret, write_private_file
from infra.local.stack import StackConfig
from shared.config import PrivacyConfig
from shared.load import parse_lines
from shared.privacy import policy_for
from shared.push.names import PROVIDER_NAMES as PROVIDERS
from shared.secrets import PRIVACY_ENTRY, FileSecrets
from shared.warehouse.rows import EventRow, Lineage

if TYPE_CHECKING:
    from pathlib import Path

    from tests.faults import Fault

NOW = datetime(2024, 5, 15, tzinfo=UTC)


SECRET_FIELDS = {"salt", "private_key", "private_key_id", "api_key", "access_token"}


def _secret_strings(value: Any, field: str = "") -> list[str]:
    """The secret strings of a secrets entry (keys, tokens, the salt; not ids, topics or URLs)."""
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in _secret_strings(v, k)]
    if isinstance(value, str) and field in SECRET_FIELDS:
        # a PEM: any one line of its body is enough to count as a leak
        return [line for line in value.splitlines() if len(line) >= 16 and "PRIVATE KEY" not in line] or [value]
    return []


@pytest.mark.scenario(
    "The privacy salt and provider credentials never show in repr, str or logs",
    injected="a hash-mode tenant with a salt and credentials for every provider; its policy, credentials and errors "
    "are printed, formatted and logged while 50 lines with emails are parsed",
    findings=[22],
)
def test_the_salt_and_credentials_never_show_in_repr_str_or_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, fault: Fault
) -> None:
    # GIVEN a tenant's secrets as the local stack writes them: a salt and credentials for every provider
    cfg = StackConfig(home=tmp_path, ports={"fakes": 9000})
    ensure_local_privacy_salt(cfg, "acme")
    for provider in PROVIDERS:
        write_local_secret(cfg, "acme", provider, make_credentials(cfg, "acme", provider)[0])
    stored = json.loads(cfg.paths.secrets.read_text())["acme"]
    hidden = _secret_strings(stored)
    assert len(hidden) > len(PROVIDERS)  # the salt, keys and tokens are all looked for
    secrets = FileSecrets(cfg.paths.secrets)
    salt = secrets.privacy_salt("acme")
    policy = policy_for(PrivacyConfig(mode="hash"), salt.reveal())
    credentials = [secrets.get("acme", provider) for provider in PROVIDERS]

    # WHEN the policy and the credentials are shown every way code shows things, and lines are parsed and logged
    caplog.set_level(logging.DEBUG)
    log = logging.getLogger("landline.test")
    shown = [repr(policy), str(policy), f"{policy}", policy.model_dump_json(), repr(policy.model_dump()),
             repr(salt), f"{salt}", *map(repr, credentials), *map(str, credentials)]  # fmt: skip
    log.info("policy %r salt %s credentials %s", policy, salt, credentials)
    log.info("as fields", extra={"fields": {"policy": policy, "credentials": credentials}})
    lines = [
        (n, json.dumps({"type": "track", "userId": f"u{n}", "messageId": f"m{n}", "event": "Signed Up",
                        "timestamp": "2024-05-14T09:21:03Z", "properties": {"email": f"u{n}@example.com"}}).encode())
        for n in range(1, 51)
    ]  # fmt: skip
    batch = parse_lines(lines, fmt="segment", lineage=Lineage("segment", "gs://b/o#1", None, NOW), policy=policy,
                        now=NOW)  # fmt: skip
    (cfg.home / "short.json").write_text(json.dumps({"acme": {PRIVACY_ENTRY: {"salt": "short-secret"}}}))
    try:
        FileSecrets(cfg.home / "short.json").privacy_salt("acme")
    except Exception as exc:  # a setup error about the salt names the place, never the value
        shown.append(str(exc))
        log.exception("setup error")

    # THEN none of the secret strings appears anywhere
    text = "\n".join([*shown, caplog.text, *(json.dumps(r.__dict__, default=str) for r in caplog.records)])
    leaks = sum(text.count(secret) for secret in hidden) + text.count("short-secret")
    assert leaks == 0
    # AND the policy still salts: every email became the tenant's pseudonym, every line a row
    rows = [r for r in batch.rows if isinstance(r, EventRow)]
    assert all(r.metadata["email"] == policy.pseudonym(f"u{n}@example.com") for n, r in enumerate(rows, 1))
    fault.report(
        f"0 of {len(hidden) + 1} secret strings appear in reprs, dumps, error messages or logs; 50 lines parsed",
        lost=len(lines) - len(batch.rows) - len(batch.rejected),
        duplicated=max(len(batch.rows) + len(batch.rejected) - len(lines), 0),
        leaks=leaks,
    )


def test_secret_files_are_created_private_whatever_the_umask(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN the most permissive umask, and chmod disabled: only the mode a file is *created* with counts
    old_umask = os.umask(0)
    monkeypatch.setattr(os, "chmod", lambda *a, **k: None)
    monkeypatch.setattr(type(tmp_path), "chmod", lambda *a, **k: None)
    try:
        cfg = StackConfig(home=tmp_path, ports={"fakes": 9000})
        # WHEN the secrets file is written (a new file, then a rewrite) and any other private file
        write_local_secret(cfg, "acme", "braze", {"api_key": "k" * 32})
        ensure_local_privacy_salt(cfg, "acme")
        write_private_file(tmp_path / "register.json", "{}")
    finally:
        os.umask(old_umask)
    # THEN each is 0600, and no temp file is left behind
    for path in (cfg.paths.secrets, tmp_path / "register.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["register.json", "secrets.json"]

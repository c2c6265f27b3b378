"""The local stand-in for Secret Manager: one JSON file in the stack's state folder, readable only by its owner.

Layout as ``shared/secrets.py`` reads it: ``{"<tenant>": {"<entry>": {...}}}`` where an entry is a push
provider's credentials or ``privacy`` (the pseudonymisation salt).

Files holding keys are never world-readable, not even for a moment: they are written to a temp file that is created
with mode 0600 (``tempfile.mkstemp``) and renamed over the target, never created with the umask's mode and chmod-ed
afterwards. The state folder itself is 0700 (``infra/local/stack.py``).
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.secrets import PRIVACY_ENTRY

if TYPE_CHECKING:
    from collections.abc import Iterator

    from infra.local.stack_config import StackConfig

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


def make_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) if needed, and make it 0700 even if it existed with a wider mode."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    path.chmod(PRIVATE_DIR_MODE)


def write_private_file(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``, atomically (readers never see half a file) and 0600 from its first byte."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # created 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock beside ``path`` while reading, changing and writing it: two `landline` commands at once
    (tests run several) must not overwrite each other's entries."""
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_CREAT | os.O_RDWR, PRIVATE_FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text() or "{}") if path.exists() else {}


def read_local_secrets(cfg: StackConfig, tenant: str) -> dict[str, Any]:
    """The tenant's entries (provider names, ``privacy``) as stored; {} when it has none."""
    entries: dict[str, Any] = _read(cfg.paths.secrets).get(tenant, {})
    return entries


def write_local_secret(
    cfg: StackConfig, tenant: str, entry: str, value: dict[str, Any], *, keep_existing: bool = False
) -> bool:
    """Set one entry of the secrets file; with ``keep_existing``, only if the tenant has none yet. True if written."""
    path = cfg.paths.secrets
    with locked(path):
        current = _read(path)
        entries = current.setdefault(tenant, {})
        if keep_existing and entries.get(entry):
            return False
        entries[entry] = value
        write_private_file(path, json.dumps(current, indent=2))
    return True


def ensure_local_privacy_salt(cfg: StackConfig, tenant: str) -> None:
    """Give a hash-mode tenant a random salt, once: a new salt would change every pseudonym it has written."""
    write_local_secret(cfg, tenant, PRIVACY_ENTRY, {"salt": secrets.token_hex(32)}, keep_existing=True)

"""What the platform sees when a stage fails: the three failure classes become ack / retry / retry-and-alert.

Functions wrap their stage in ``run_stage``: a ``PermanentError`` is logged and acked (the stage already recorded
it), a ``TransientError`` is re-raised (HTTP 500, so Pub/Sub / Eventarc redeliver), a ``SetupError`` is logged at
ERROR with its fix and re-raised, so no event is lost while someone fixes the setup.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import TYPE_CHECKING, Any, TypeVar

from shared.errors import PermanentError, SetupError, TransientError

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")


class _JsonFormatter(logging.Formatter):
    """Cloud Logging's structured format (``severity`` + ``message``); extra fields pass through."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {"severity": record.levelname, "message": record.getMessage(), "logger": record.name}
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def get_logger(name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    if not logging.getLogger("landline").handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(_JsonFormatter())
        root = logging.getLogger("landline")
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        root.propagate = False
    return logger


def run_stage(stage: str, fn: Callable[[], T], **context: Any) -> T | None:
    log = get_logger(f"landline.{stage}")
    try:
        return fn()
    except PermanentError as exc:
        log.warning("permanent failure, acked", extra={"fields": {**context, "reason": exc.reason, "error": str(exc)}})
        return None
    except SetupError as exc:
        log.error(
            "setup error: %s", exc.problem, extra={"fields": {**context, "fix": exc.fix, "error_class": "setup"}}
        )
        raise
    except TransientError as exc:
        log.warning("transient failure, will be retried", extra={"fields": {**context, "error": str(exc)}})
        raise

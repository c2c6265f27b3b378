"""What the platform sees when a stage fails: the three failure classes become ack / retry / retry-and-alert.

Functions hand their whole invocation to ``run_stage``, envelope parsing included: a ``PermanentError`` is logged and
acked (the stage already recorded it), a ``TransientError`` is re-raised (HTTP 500, so Pub/Sub / Eventarc redeliver),
a ``SetupError`` is logged at ERROR with its fix and re-raised, so no event is lost while someone fixes the setup.
Anything else is a bug: it is logged at ERROR as ``error_class="bug"`` with the exception type, the event's context
and the delivery attempt, then re-raised, so the platform retries it and, for Pub/Sub, dead-letters it in the end
(a framework traceback alone says neither which message nor how many attempts are left).
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

# Context is whatever identifies the delivery in a log search; a stage adds its own (origin, message id) once parsed.
StageContext = dict[str, Any]


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


def _event_attribute(cloud_event: Any, name: str) -> Any:
    try:
        return cloud_event.get(name) if hasattr(cloud_event, "get") else cloud_event[name]
    except (KeyError, TypeError):
        return None


def delivery_attempt(cloud_event: Any) -> int | None:
    """The delivery attempt, where the platform says it: a push subscription with a dead-letter policy puts
    ``deliveryAttempt`` in its body (which functions-framework drops when it builds the CloudEvent, hence the look at
    the raw request), a router may pass it as a CloudEvent extension. ``None`` when unknown (Eventarc storage events).
    """
    candidates: list[Any] = [_event_attribute(cloud_event, "deliveryattempt")]
    data = getattr(cloud_event, "data", None)
    if isinstance(data, dict):
        candidates.append(data.get("deliveryAttempt"))
    try:
        import flask

        if flask.has_request_context():
            body = flask.request.get_json(silent=True)
            if isinstance(body, dict):
                candidates.append(body.get("deliveryAttempt"))
    except ImportError:  # pragma: no cover - flask ships with functions-framework
        pass
    for value in candidates:
        try:
            if value is not None:
                return int(value)
        except (TypeError, ValueError):
            continue
    return None


def event_context(cloud_event: Any) -> StageContext:
    """What identifies one delivery of ``cloud_event`` before its payload is parsed (parsing may be what fails)."""
    return {
        "event_id": _event_attribute(cloud_event, "id"),
        "event_type": _event_attribute(cloud_event, "type"),
        "event_source": _event_attribute(cloud_event, "source"),
        "event_subject": _event_attribute(cloud_event, "subject"),
        "delivery_attempt": delivery_attempt(cloud_event),
    }


def run_stage(stage: str, cloud_event: Any, handle: Callable[[StageContext], T]) -> T | None:
    """Run ``handle`` (envelope parsing and the stage) for one delivery and map its failure to what the platform sees.

    ``handle`` receives the context dict and adds what it learns (``origin``, ``message_id``) so that every log line,
    including a bug's, names the input it was working on.
    """
    log = get_logger(f"landline.{stage}")
    context = {k: v for k, v in event_context(cloud_event).items() if v is not None}
    try:
        return handle(context)
    except PermanentError as exc:
        log.warning(
            "permanent failure, acked",
            extra={"fields": {**context, "error_class": "permanent", "reason": exc.reason, "error": str(exc)}},
        )
        return None
    except SetupError as exc:
        log.error(
            "setup error: %s", exc.problem, extra={"fields": {**context, "fix": exc.fix, "error_class": "setup"}}
        )
        raise
    except TransientError as exc:
        log.warning(
            "transient failure, will be retried",
            extra={"fields": {**context, "error_class": "transient", "error": str(exc)}},
        )
        raise
    except Exception as exc:
        log.error(
            "bug: %s: %s",
            type(exc).__name__,
            exc,
            exc_info=True,
            extra={
                "fields": {
                    **context,
                    "error_class": "bug",
                    "exception_type": f"{type(exc).__module__}.{type(exc).__qualname__}",
                    "error": str(exc)[:2000],
                }
            },
        )
        raise

"""Finding 11: what the platform and the logs see when a function fails, through functions-framework's own app.

A bug (an exception none of the three failure classes covers) and a malformed envelope are logged as structured JSON
with ``error_class="bug"``, the exception type, the delivery's context and attempt, and re-raised (HTTP 500), so
Pub/Sub retries and in the end dead-letters the message instead of the failure going unnoticed.
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import functions_framework
import pytest

from shared import runtime
from shared.errors import PermanentError, SetupError, TransientError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from flask.testing import FlaskClient

REPO = Path(__file__).resolve().parents[2]


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.entries: list[dict[str, Any]] = []
        self.setFormatter(runtime._JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.entries.append(json.loads(self.format(record)))  # the structured line, as Cloud Logging would parse it


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    runtime.get_logger("landline.test")  # installs the JSON handler once, as in a function process
    handler = _Collect()
    root = logging.getLogger("landline")
    root.addHandler(handler)
    try:
        yield handler.entries
    finally:
        root.removeHandler(handler)


def app(function: str) -> FlaskClient:
    source = REPO / "functions" / function / "main.py"
    return functions_framework.create_app(function, str(source), "cloudevent").test_client()


def pubsub_push(data: bytes, attempt: int, **attributes: str) -> dict[str, Any]:
    """A raw push request body, as a push subscription with a dead-letter policy sends it."""
    return {
        "message": {
            "data": base64.b64encode(data).decode(),
            "attributes": attributes,
            "messageId": "1234567",
            "publishTime": "2024-05-01T10:00:00Z",
        },
        "subscription": "projects/p/subscriptions/load-events",
        "deliveryAttempt": attempt,
    }


def test_a_bug_in_a_stage_is_logged_with_context_and_attempt_then_retried(
    monkeypatch: pytest.MonkeyPatch, logs: list[dict[str, Any]]
) -> None:
    # GIVEN a loader whose stage raises an exception that is not one of the three failure classes
    def broken(message: Any, topic: Any) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr("shared.load.pipeline.load_message", broken)
    client = app("load_events")
    # WHEN a push subscription delivers a message for the third time
    response = client.post(
        "/projects/p/topics/raw-events", json=pubsub_push(b"{}", attempt=3, tenant="acme")
    )
    # THEN the platform sees a failure (so it retries and, after the last attempt, dead-letters the message)
    assert response.status_code == 500
    # AND one structured ERROR names it a bug, with the exception type, the message id and the delivery attempt
    [entry] = [e for e in logs if e.get("error_class") == "bug"]
    assert entry["severity"] == "ERROR"
    assert entry["exception_type"] == "builtins.KeyError"
    assert entry["message_id"] == "1234567"
    assert entry["delivery_attempt"] == 3
    assert "a bug" in entry["error"]
    assert "Traceback" in entry["exception"]


def test_a_malformed_envelope_is_logged_as_a_bug_inside_the_stage(logs: list[dict[str, Any]]) -> None:
    # GIVEN a CloudEvent whose data is not a Pub/Sub envelope (no message object)
    client = app("load_events")
    headers = {
        "ce-id": "evt-42",
        "ce-specversion": "1.0",
        "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
        "ce-source": "//pubsub.googleapis.com/projects/p/topics/raw-events",
        "ce-deliveryattempt": "2",
    }
    # WHEN it is delivered
    response = client.post("/", json={"message": "not an object"}, headers=headers)
    # THEN it fails (retried, then dead-lettered) and the log names the event and the validation error
    assert response.status_code == 500
    [entry] = [e for e in logs if e.get("error_class") == "bug"]
    assert entry["exception_type"] == "pydantic_core._pydantic_core.ValidationError"
    assert (entry["event_id"], entry["delivery_attempt"]) == ("evt-42", 2)
    assert entry["event_source"].endswith("/topics/raw-events")


def test_a_malformed_storage_event_is_logged_as_a_bug(logs: list[dict[str, Any]]) -> None:
    # GIVEN a finalize CloudEvent without the object's name and generation WHEN ingest_file receives it
    headers = {
        "ce-id": "evt-7",
        "ce-specversion": "1.0",
        "ce-type": "google.cloud.storage.object.v1.finalized",
        "ce-source": "//storage.googleapis.com/projects/_/buckets/b",
        "ce-subject": "objects/x",
    }
    response = app("ingest_file").post("/", json={"bucket": "b"}, headers=headers)
    # THEN it fails and the log entry names the event (no attempt: Eventarc does not say)
    assert response.status_code == 500
    [entry] = [e for e in logs if e.get("error_class") == "bug"]
    assert (entry["event_id"], entry["event_subject"]) == ("evt-7", "objects/x")
    assert "delivery_attempt" not in entry


class _Event(dict[str, Any]):
    data: Any = None


@pytest.mark.parametrize(
    ("error", "raises", "error_class", "severity"),
    [
        (PermanentError("object_gone", "deleted"), False, "permanent", "WARNING"),
        (TransientError("503"), True, "transient", "WARNING"),
        (SetupError("no table", "run tenant add"), True, "setup", "ERROR"),
        (RecursionError("deep"), True, "bug", "ERROR"),
    ],
)
def test_each_failure_class_maps_to_ack_or_retry(
    logs: list[dict[str, Any]], error: Exception, raises: bool, error_class: str, severity: str
) -> None:
    # GIVEN a stage that fails with one class of error
    def stage(context: runtime.StageContext) -> None:
        context["origin"] = "gs://b/o#1"
        raise error

    # WHEN it runs / THEN only a permanent error is acked (returns); everything else is re-raised for a retry
    event = _Event(id="e1", type="t", source="s")
    if raises:
        with pytest.raises(type(error)):
            runtime.run_stage("test", event, stage)
    else:
        assert runtime.run_stage("test", event, stage) is None
    # AND the log entry carries the class and the context the stage added
    [entry] = logs
    assert (entry["error_class"], entry["severity"], entry["origin"]) == (error_class, severity, "gs://b/o#1")

"""Cloud Function: a raw-events message -> validated rows in the tenant's region-pinned dataset."""

from __future__ import annotations

from typing import Any

import functions_framework

from shared.envelopes import pubsub_message
from shared.load.pipeline import load_message
from shared.runtime import run_stage


@functions_framework.cloud_event
def load_events(cloud_event: Any) -> None:
    message = pubsub_message(cloud_event)
    topic = str(cloud_event["source"]).rsplit("/", 1)[-1] if cloud_event["source"] else None
    run_stage("load_events", lambda: load_message(message, topic), message_id=message.message_id)

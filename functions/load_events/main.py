"""Cloud Function: a raw-events message -> validated rows in the tenant's region-pinned dataset."""

from __future__ import annotations

from typing import Any

import functions_framework

from shared.envelopes import pubsub_message
from shared.load.pipeline import LoadResult, load_message
from shared.runtime import StageContext, run_stage


@functions_framework.cloud_event
def load_events(cloud_event: Any) -> None:
    def stage(context: StageContext) -> LoadResult:
        message = pubsub_message(cloud_event)  # inside run_stage: a malformed envelope is logged like any failure
        context["message_id"] = message.message_id
        topic = str(cloud_event["source"]).rsplit("/", 1)[-1] if cloud_event["source"] else None
        return load_message(message, topic)

    run_stage("load_events", cloud_event, stage)

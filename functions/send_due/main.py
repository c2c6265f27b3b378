"""Cloud Function: a scheduler tick (or a send request) -> due pushes through each tenant's provider."""

from __future__ import annotations

from typing import Any

import functions_framework

from shared.envelopes import pubsub_message
from shared.runtime import StageContext, run_stage


@functions_framework.cloud_event
def send_due(cloud_event: Any) -> None:
    def stage(context: StageContext) -> object:
        from shared.push.handler import handle_push_event

        message = pubsub_message(cloud_event)  # inside run_stage: a malformed envelope is logged like any failure
        context["message_id"] = message.message_id
        topic = str(cloud_event["source"]).rsplit("/", 1)[-1] if cloud_event["source"] else ""
        return handle_push_event(message, topic)

    run_stage("send_due", cloud_event, stage)

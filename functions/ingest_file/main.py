"""Cloud Function: a tenant's bucket object finalized -> batches of raw lines on the tenant's raw-events topic."""

from __future__ import annotations

from typing import Any

import functions_framework

from shared.envelopes import finalized_object
from shared.ingest.pipeline import IngestResult, ingest_object
from shared.runtime import StageContext, run_stage


@functions_framework.cloud_event
def ingest_file(cloud_event: Any) -> None:
    def stage(context: StageContext) -> IngestResult | None:
        event = finalized_object(cloud_event)  # inside run_stage: a malformed envelope is logged like any failure
        if event is None:
            return None  # a bucket notification of another event type: nothing to ingest
        context["origin"] = event.obj.origin
        return ingest_object(event.obj, event.topic)

    run_stage("ingest_file", cloud_event, stage)

"""Cloud Function: a tenant's bucket object finalized -> batches of raw lines on raw-events."""

from __future__ import annotations

from typing import Any

import functions_framework

from shared.envelopes import storage_object
from shared.ingest.pipeline import IngestResult, ingest_object
from shared.runtime import StageContext, run_stage


@functions_framework.cloud_event
def ingest_file(cloud_event: Any) -> None:
    def stage(context: StageContext) -> IngestResult:
        obj = storage_object(cloud_event)  # inside run_stage: a malformed envelope is logged like any failure
        context["origin"] = obj.origin
        return ingest_object(obj)

    run_stage("ingest_file", cloud_event, stage)

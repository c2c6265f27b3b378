"""Cloud Function: a tenant's bucket object finalized -> batches of raw lines on raw-events."""

from __future__ import annotations

from typing import Any

import functions_framework

from shared.envelopes import storage_object
from shared.ingest.pipeline import ingest_object
from shared.runtime import run_stage


@functions_framework.cloud_event
def ingest_file(cloud_event: Any) -> None:
    obj = storage_object(cloud_event)
    run_stage("ingest_file", lambda: ingest_object(obj), origin=obj.origin, event_id=cloud_event["id"])

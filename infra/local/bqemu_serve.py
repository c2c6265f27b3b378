"""Runs the BigQuery emulator (local-bigquery, in .venv-bq) with one fix: its insertAll dedup cache is not thread-safe.

local-bigquery serves insertAll on a thread pool, and ``catalog.tabledata._deduplicate`` expires old insertIds by
iterating and deleting from one module-level dict without a lock: two concurrent inserts after the first 60 s both
delete the same key, one gets ``KeyError`` and answers 500. Our writer retries that as transient, but under a burst
(``python -m bench.pipeline_load``: 1,000 batches at once) enough deliveries fail together to trip the Pub/Sub
emulator's stall on concurrent push failures (README, Dead letters and recovery). The cloud's BigQuery has neither
bug, so the emulator is run with the function serialised. Runs under .venv-bq's Python: imports nothing of ours.
"""

from __future__ import annotations

import sys
import threading
from typing import Any


def _serialised(fn: Any) -> Any:
    lock = threading.Lock()

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with lock:
            return fn(*args, **kwargs)

    return wrapper


def main() -> int:
    from local_bigquery.catalog import tabledata
    from local_bigquery.cli import main as serve

    tabledata._deduplicate = _serialised(tabledata._deduplicate)
    sys.argv[0] = "local-bigquery"
    return int(serve() or 0)


if __name__ == "__main__":
    sys.exit(main())

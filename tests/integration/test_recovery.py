"""The recovery tools through the real local stack: a file that could not be ingested is parked in its tenant's
dead-letter topic (ingest has a dead-letter path: bucket notification -> object-notifications.<tenant> -> ingest_file),
`landline dead-letters` lists it and why, `landline replay --dead-letters` loads it after the fix, and
`landline backfill` ingests files that no notification brought; run twice, neither adds a duplicate.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from shared.config import tenant_topic
from shared.tenancy import default_bucket
from tests.faults import pipeline_accounting
from tests.stack_support import segment_file, unique

if TYPE_CHECKING:
    from pathlib import Path

    from tests.faults import Fault
    from tests.stack_support import StackHandle

pytestmark = pytest.mark.stack

LINES = 3


def calls(run: str, lines: int = LINES) -> list[dict[str, Any]]:
    return [
        {
            "type": "track",
            "event": "Item Viewed",
            "userId": f"u{n}",
            "messageId": f"{run}-{n}",
            "timestamp": "2024-05-01T10:00:00Z",
        }
        for n in range(lines)
    ]


def cli_json(stack: StackHandle, *args: str) -> Any:
    return json.loads(stack.cli(*args, "--json").stdout)


def region_of(stack: StackHandle, tenant: str) -> str:
    return str(next(t["region"] for t in json.loads(stack.cli("tenant", "list", "--json").stdout) if t["name"] == tenant))


@dataclass
class Parked:
    tenant: str
    origin: str
    listed: list[dict[str, Any]]


@pytest.fixture(scope="module")
def parked(local_stack: StackHandle, tmp_path_factory: pytest.TempPathFactory) -> Parked:
    """A tenant whose `files` table is missing (tables not created yet, as between `terraform apply` and `landline
    tenant add`), and one Segment file dropped into its bucket: every ingest attempt fails with a setup error."""
    from shared.config import tenants
    from shared.warehouse.client import bigquery_client

    tenant = local_stack.add_tenant()
    client = bigquery_client()
    client.delete_table(f"{client.project}.{tenants().get(tenant).dataset}.files")
    [origin] = local_stack.drop(tenant, segment_file(tmp_path_factory.mktemp("parked"), calls(unique("p"))))
    local_stack.wait(timeout=240)
    return Parked(tenant, origin, listed_once_parked(local_stack, tenant))


def listed_once_parked(stack: StackHandle, tenant: str, timeout: float = 20) -> list[dict[str, Any]]:
    """`landline dead-letters`, once the last failed delivery's message has reached the dead-letter topic (the emulator
    moves it there just after the router saw the failure)."""
    deadline = time.monotonic() + timeout
    while True:
        listed: list[dict[str, Any]] = cli_json(stack, "dead-letters", "--tenant", tenant)
        if listed or time.monotonic() > deadline:
            return listed
        time.sleep(0.5)


@pytest.mark.scenario(
    "A file arrives before its tables exist",
    injected="the tenant's files table is missing while a file is dropped; fixed by `tenant add`, then replayed",
    findings=[10],
)
def test_a_file_that_arrives_before_its_tables_exist_is_parked_listed_and_replayed(
    local_stack: StackHandle, parked: Parked, fault: Fault
) -> None:
    # GIVEN a file whose every ingest attempt failed because the tenant's tables did not exist (the fixture)
    # THEN it is parked in the tenant's dead-letter topic, and `landline dead-letters` says what and why
    [letter] = parked.listed
    bucket, _, rest = parked.origin.removeprefix("gs://").partition("/")
    name, _, generation = rest.rpartition("#")
    assert letter["topic"] == tenant_topic("object-notifications", parked.tenant)
    assert letter["attributes"]["eventType"] == "OBJECT_FINALIZE"
    assert (letter["attributes"]["bucketId"], letter["attributes"]["objectId"]) == (bucket, name)
    assert letter["attributes"]["objectGeneration"] == generation
    assert letter["delivery_attempts"] == 5
    assert "lacks files" in letter["why"] and f"landline tenant add {parked.tenant}" in letter["why"]
    assert letter["replay"] == "republish"
    # ... and listing consumed nothing
    assert len(cli_json(local_stack, "dead-letters", "--tenant", parked.tenant)) == 1

    # WHEN the fix is made (tables created) and the dead letters are replayed
    local_stack.cli("tenant", "add", parked.tenant, "--region", region_of(local_stack, parked.tenant))
    replayed = cli_json(local_stack, "replay", "--tenant", parked.tenant, "--dead-letters")
    local_stack.wait()

    # THEN the file is loaded, every line once, and nothing is parked any more
    assert (replayed["found"], replayed["republished"]) == (1, 1)
    assert cli_json(local_stack, "dead-letters", "--tenant", parked.tenant) == []
    [ledger] = local_stack.query(parked.tenant, "SELECT status, lines FROM files_latest")
    assert ledger == {"status": "loaded", "lines": LINES}
    fault.report(
        "parked after 5 attempts, listed with its cause, loaded once by replay --dead-letters after the fix",
        **pipeline_accounting(local_stack, parked.tenant, LINES),
    )


class _AckLost:
    """A subscriber whose acks are lost: an acked dead letter comes back (as after a crash between the republish
    and the ack)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def acknowledge(self, request: dict[str, Any]) -> None:
        self.inner.modify_ack_deadline(request={**request, "ack_deadline_seconds": 0})


@pytest.mark.scenario(
    "Dead letters replayed twice",
    injected="the ack of a republished dead letter is lost, so the next replay republishes it again",
    findings=[10],
)
def test_a_dead_letter_replayed_twice_adds_no_duplicates(
    local_stack: StackHandle, tmp_path: Path, fault: Fault
) -> None:
    from google.cloud import pubsub_v1

    from shared.config import tenants
    from shared.dead_letters import replay_dead_letters
    from shared.warehouse.client import bigquery_client

    # GIVEN a file parked in its tenant's dead-letter topic (no tables when it arrived), and the tables created since
    tenant = local_stack.add_tenant()
    client = bigquery_client()
    client.delete_table(f"{client.project}.{tenants().get(tenant).dataset}.files")
    local_stack.drop(tenant, segment_file(tmp_path, calls(unique("twice"))))
    local_stack.wait(timeout=240)
    assert len(listed_once_parked(local_stack, tenant)) == 1
    local_stack.cli("tenant", "add", tenant, "--region", region_of(local_stack, tenant))

    # WHEN it is replayed and the ack is lost (it stays parked), then replayed again
    first = replay_dead_letters(tenant, subscriber=_AckLost(pubsub_v1.SubscriberClient()))
    local_stack.wait()
    second = cli_json(local_stack, "replay", "--tenant", tenant, "--dead-letters")
    local_stack.wait()

    # THEN it was republished twice, and every line is in the tenant's tables once
    assert (first.republished, second["republished"]) == (1, 1)
    assert cli_json(local_stack, "dead-letters", "--tenant", tenant) == []
    fault.report(
        "republished twice, ingested twice, every line once (ingest is keyed on object generation)",
        **pipeline_accounting(local_stack, tenant, LINES),
    )


@pytest.mark.scenario(
    "A file that arrived before its tenant existed is backfilled, twice",
    injected="a file in a bucket with no tenant (so no notification config) when it was written",
    findings=[10],
)
def test_backfill_ingests_a_file_no_notification_brought_and_twice_adds_nothing(
    local_stack: StackHandle, tmp_path: Path, fault: Fault
) -> None:
    from shared.clients import storage_client

    # GIVEN a bucket holding a Segment file before any tenant owns it (nothing ingests it), then the tenant is added
    tenant, run = unique(), unique("bf")
    bucket = storage_client().create_bucket(
        default_bucket(local_stack.stack.cfg.project, tenant), location="europe-west1"
    )
    source = segment_file(tmp_path, calls(run))
    [path] = [p for p in source.rglob("*") if p.is_file()]
    blob = bucket.blob(path.relative_to(source).as_posix())
    blob.upload_from_filename(str(path))
    local_stack.cli("tenant", "add", tenant, "--region", "europe-west1")
    local_stack.wait()
    assert local_stack.query(tenant, "SELECT COUNT(*) AS n FROM files") == [{"n": 0}]

    # WHEN it is backfilled, then backfilled again, and again with already loaded files included
    first = cli_json(local_stack, "backfill", "--tenant", tenant, "--prefix", "segment-logs/")
    local_stack.wait()
    second = cli_json(local_stack, "backfill", "--tenant", tenant)
    forced = cli_json(local_stack, "backfill", "--tenant", tenant, "--include-loaded")
    local_stack.wait()

    # THEN the first publishes its notification and the file loads; the second skips it as loaded; the forced one
    # re-ingests it, which adds nothing
    assert (first["listed"], first["published"]) == (1, 1)
    assert (second["published"], second["skipped"]) == (0, {"already_loaded": 1})
    assert forced["published"] == 1
    [ledger] = local_stack.query(tenant, "SELECT status, lines FROM files_latest")
    assert ledger == {"status": "loaded", "lines": LINES}
    fault.report(
        "backfilled once and re-ingested once more: every line once", **pipeline_accounting(local_stack, tenant, LINES)
    )

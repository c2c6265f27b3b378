"""`landline` on the running stack: the newcomer review's mistakes that need a stack end in one line and a non-zero
exit and change nothing; drop, stats, wait, tables, query, tenant list and remove behave as the README says."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from tests.stack_support import segment_file, unique

if TYPE_CHECKING:
    from pathlib import Path

    from tests.stack_support import StackHandle

pytestmark = pytest.mark.stack

GOOD = {"type": "track", "userId": "u1", "event": "Signed Up", "timestamp": "2024-05-01T10:00:00Z"}


def refused(stack: StackHandle, *args: str) -> str:
    """The one stderr line of a refused command (asserting the exit code and the one line)."""
    result = stack.cli(*args, check=False)
    assert result.returncode != 0, result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def table_count(stack: StackHandle, tenant: str, table: str) -> int:
    return int(stack.query(tenant, f"SELECT COUNT(*) AS n FROM {table}")[0]["n"])


def test_query_is_read_only_and_stays_in_the_tenants_dataset(local_stack: StackHandle, tmp_path: Path) -> None:
    # GIVEN two tenants, one with a loaded event
    mine, other = local_stack.add_tenant(), local_stack.add_tenant()
    local_stack.drop(mine, segment_file(tmp_path, [{**GOOD, "messageId": unique("m")}]))
    local_stack.wait()
    # WHEN a newcomer drops a table, deletes rows, reads another tenant's data or mistypes (rows 23-27)
    dropped = refused(local_stack, "query", "-t", mine, "DROP TABLE rejected")
    deleted = refused(local_stack, "query", "-t", mine, "DELETE FROM events WHERE true")
    foreign = refused(local_stack, "query", "-t", mine, f"SELECT COUNT(*) AS n FROM landline_{other}.events")
    typo = refused(local_stack, "query", "-t", mine, "selec * from events")
    missing = refused(local_stack, "query", "-t", mine, "SELECT * FROM nosuchtable")
    unknown = refused(local_stack, "query", "-t", "nosuch", "SELECT 1")
    # THEN each is one line that says why, and nothing changed
    assert dropped.startswith("landline query: DROP_TABLE refused: query is read-only") and "--write" in dropped
    assert deleted.startswith("landline query: DELETE refused")
    assert f"outside tenant {mine}'s dataset" in foreign
    assert "Syntax error" in typo and "Job ID" not in typo and "location" not in typo.lower()
    assert "nosuchtable" in missing and "files_latest" in missing and "location US" not in missing
    assert unknown == (
        "landline query: unknown tenant 'nosuch'. Fix: create it with `landline tenant add nosuch --region R`"
    )
    assert table_count(local_stack, mine, "events") == 1
    assert "rejected" in {row["name"] for row in json.loads(local_stack.cli("tables", "-t", mine, "--json").stdout)}
    # AND --write runs a statement that changes data, saying what it did
    written = local_stack.cli("query", "-t", mine, "--write", "DELETE FROM events WHERE true")
    assert "rows affected" in written.stderr
    assert table_count(local_stack, mine, "events") == 0


def test_a_missing_table_is_one_line_naming_the_fix(local_stack: StackHandle) -> None:
    from shared.warehouse.client import bigquery_client

    # GIVEN a tenant whose rejected table was dropped by hand (row 25)
    tenant = local_stack.add_tenant()
    bigquery_client().delete_table(f"{local_stack.stack.cfg.project}.landline_{tenant}.rejected")
    # THEN stats and tables say how to re-create it, in one line each
    line = refused(local_stack, "stats", "-t", tenant)
    assert f"`landline tenant add {tenant} --region europe-west1`" in line
    tables = local_stack.cli("tables", "-t", tenant)
    assert "MISSING" in tables.stdout and "re-create them" in tables.stderr
    # AND the fix works
    local_stack.cli("tenant", "add", tenant, "--region", "europe-west1")
    assert local_stack.stats(tenant)["unaccounted"] == 0


def test_drop_warns_about_files_that_will_be_ignored_and_stats_says_why(
    local_stack: StackHandle, tmp_path: Path
) -> None:
    # GIVEN the segment-logs folder itself, a natural mistake (row 32)
    tenant = local_stack.add_tenant()
    root = segment_file(tmp_path, [{**GOOD, "messageId": unique("m")}])
    # WHEN it is dropped
    result = local_stack.cli("drop", str(root / "segment-logs"), "-t", tenant)
    # THEN drop warns that the file will be ignored and how to drop it instead, and still uploads it
    assert "1 of 1 files will be ignored (not_segment_layout)" in result.stderr
    assert result.stdout.strip().startswith("gs://")
    local_stack.cli("wait", "-t", tenant, "--timeout", "120")
    # AND stats gives the reason
    assert local_stack.stats(tenant)["file_reasons"] == {"ignored": {"not_segment_layout": 1}}
    assert "ignored 1 (not_segment_layout 1)" in local_stack.cli("stats", "-t", tenant).stdout


def test_schedule_and_tick_refuse_what_can_never_be_sent(local_stack: StackHandle) -> None:
    # GIVEN a tenant without a push provider (row 45)
    silent = local_stack.add_tenant()
    args = ["--contact", "u1", "--title", "Hi", "--body", "Hello"]
    # THEN scheduling for it is refused, and so is a tick for a tenant that does not exist (row 49)
    assert "has no push provider" in refused(local_stack, "schedule", "-t", silent, *args)
    assert "unknown tenant 'nosuch'" in refused(local_stack, "tick", "-t", "nosuch")
    assert table_count(local_stack, silent, "message_schedule") == 0
    # AND a tenant with a provider takes it, warning about a contact without a token (row 44)
    sender = local_stack.add_tenant(push_provider="fcm")
    result = local_stack.cli("schedule", "-t", sender, *args, "--json")
    assert json.loads(result.stdout)["contact_id"] == "u1"
    assert "has no push token" in result.stderr
    # AND stats counts it as scheduled, without an outcome until a tick handles it
    assert (local_stack.stats(sender)["scheduled"], local_stack.stats(sender)["unsent"]) == (1, 1)


def test_tenant_list_is_a_table_and_remove_unregisters(local_stack: StackHandle) -> None:
    # GIVEN a typo tenant (row 17)
    typo = local_stack.add_tenant(push_provider="braze")
    listed = local_stack.cli("tenant", "list").stdout
    assert listed.splitlines()[0].split()[:3] == ["NAME", "REGION", "PUSH"]
    assert any(line.split()[:3] == [typo, "europe-west1", "braze"] for line in listed.splitlines())
    # AND more objects in its claims bucket than a forced bucket delete takes (256)
    from google.api_core import exceptions as gexc

    from shared.clients import storage_client
    from shared.config import CLAIMS_BUCKET_SUFFIX, tenants
    from shared.warehouse.client import bigquery_client

    config = tenants().get(typo)
    claims = storage_client().bucket(config.bucket + CLAIMS_BUCKET_SUFFIX)
    for n in range(300):
        claims.blob(f"claims/{n}").upload_from_string(b"x")
    # WHEN it is removed with its data
    local_stack.cli("tenant", "remove", typo, "--purge")
    # THEN its buckets and dataset are gone, it is gone from the registry, and naming it again is an unknown tenant
    for bucket in (config.bucket, claims.name):
        with pytest.raises(gexc.NotFound):
            storage_client().get_bucket(bucket)
    with pytest.raises(gexc.NotFound):
        bigquery_client().get_dataset(config.dataset)
    names = {t["name"] for t in json.loads(local_stack.cli("tenant", "list", "--json").stdout)}
    assert typo not in names
    assert "unknown tenant" in refused(local_stack, "tenant", "remove", typo)
    assert "unknown tenant" in refused(local_stack, "stats", "-t", typo)


def test_wait_for_one_tenant_and_logs(local_stack: StackHandle, tmp_path: Path) -> None:
    tenant = local_stack.add_tenant()
    local_stack.drop(tenant, segment_file(tmp_path, [{**GOOD, "messageId": unique("m")}]))
    waited = json.loads(local_stack.cli("wait", "-t", tenant, "--json").stdout)
    assert waited["tenant"] == tenant and waited["expected_objects"] == []
    assert waited["delivered"].get("load_events", 0) >= 1
    assert local_stack.stats(tenant)["events"] == 1
    assert "unknown service" in refused(local_stack, "logs", "nosuch")
    assert local_stack.cli("logs", "router", "-n", "3").returncode == 0

"""Tenant administration through the real stack: re-running `tenant add` keeps a tenant (newcomer review row 8), the
local files that hold keys are private and every service listens on loopback only (finding 23), and the raw payloads
in `rejected` expire after the tenant's retention (finding 13)."""

from __future__ import annotations

import ipaddress
import json
import stat
from typing import TYPE_CHECKING, Any

import psutil
import pytest

from tests.faults import pipeline_accounting
from tests.stack_support import segment_file, unique

if TYPE_CHECKING:
    from pathlib import Path

    from tests.faults import Fault
    from tests.stack_support import StackHandle

pytestmark = pytest.mark.stack

REGION = "europe-west1"
DAY_MS = 86_400_000


def registry_entry(stack: StackHandle, tenant: str) -> dict[str, Any]:
    entry: dict[str, Any] = json.loads(stack.stack.cfg.paths.tenants.read_text())[tenant]
    return entry


def leaves(value: Any, path: str = "") -> dict[str, str]:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in leaves(item, f"{path}{key}.").items()}
    return {path.rstrip("."): json.dumps(value)}


def registrations(stack: StackHandle, provider: str) -> int:
    path = stack.stack.cfg.home / "fakes" / "register.json"
    return len(json.loads(path.read_text()).get(provider, [])) if path.exists() else 0


@pytest.mark.scenario(
    "Re-running tenant add keeps the tenant's settings",
    injected="`landline tenant add NAME --region R` with no other flag (the upgrade step) on a hash-mode tenant with "
    "extra PII keys, a push provider, quiet hours, a frequency cap, a prefix and a retention; then weaker privacy "
    "and a region change without the flag (newcomer review row 8)",
    findings=[],
)
def test_re_running_tenant_add_keeps_everything_and_refuses_weaker_privacy(local_stack: StackHandle, fault: Fault) -> None:
    # GIVEN a tenant with every setting away from its default
    name = unique()
    local_stack.cli("tenant", "add", name, "--region", REGION, "--privacy", "hash", "--pii-key", "member_no",
                    "--push-provider", "apns", "--quiet-hours", "21:00-08:00", "--frequency-cap", "5",
                    "--prefix", "exports", "--rejected-retention-days", "14")  # fmt: skip
    before, keys_before = registry_entry(local_stack, name), registrations(local_stack, "apns")
    secrets_before = json.loads(local_stack.stack.cfg.paths.secrets.read_text())[name]

    # WHEN the upgrade step runs: the same command with only the region
    again = local_stack.cli("tenant", "add", name, "--region", REGION)

    # THEN every stored setting is as it was, the keys are the ones the fake knows, and the output says so in a line
    after = registry_entry(local_stack, name)
    lost = {k: (v, leaves(after).get(k)) for k, v in leaves(before).items() if leaves(after).get(k) != v}
    assert lost == {}
    assert json.loads(local_stack.stack.cfg.paths.secrets.read_text())[name] == secrets_before
    assert again.stdout.strip() == (
        f"tenant {name} unchanged ({REGION}, privacy hash, push apns); tables and views are up to date"
    )
    # AND a given value changes only itself
    changed = local_stack.cli("tenant", "add", name, "--region", REGION, "--frequency-cap", "7")
    assert "push_policy.frequency_cap: 5 -> 7" in changed.stdout
    assert registry_entry(local_stack, name)["push_policy"]["frequency_cap"] == 7
    # AND weaker privacy, a region change and a cap of 0 are refused in one line with a non-zero exit, changing nothing
    for args, says in (
        (["--privacy", "remove"], "--allow-weaker-privacy"),
        (["--drop-pii-key", "member_no"], "personal keys no longer scrubbed: member_no"),
        (["--no-scan-values"], "value scan switched off"),
        (["--frequency-cap", "0"], "--frequency-cap must be at least 1"),
    ):
        refused = local_stack.cli("tenant", "add", name, "--region", REGION, *args, check=False)
        assert refused.returncode != 0 and says in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    moved = local_stack.cli("tenant", "add", name, "--region", "us-central1", check=False)
    assert moved.returncode == 1 and "its data cannot move" in moved.stderr
    final = registry_entry(local_stack, name)
    assert final["privacy"] == before["privacy"] and final["region"] == REGION
    # AND the --json dump is still there for scripts
    dumped = json.loads(local_stack.cli("tenant", "add", name, "--region", REGION, "--json").stdout)
    assert dumped["privacy"]["mode"] == "hash"

    settings_lost = len(lost) + sum(1 for k, v in leaves(before).items()
                                    if k != "push_policy.frequency_cap" and leaves(final).get(k) != v)  # fmt: skip
    fault.report(
        f"{len(leaves(before))} stored settings kept after re-running tenant add; weaker privacy, a region change and "
        "a cap of 0 refused in one line each",
        lost=settings_lost,
        duplicated=registrations(local_stack, "apns") - keys_before,  # credentials generated and registered again
    )


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.scenario(
    "Local keys are readable by their owner only",
    injected="`landline up`, then tenants with a push provider and a hash-mode salt written into the state folder",
    findings=[23],
)
def test_the_state_folder_and_the_files_with_keys_are_private(local_stack: StackHandle, fault: Fault) -> None:
    # GIVEN the running stack and a tenant whose keys and salt were just written
    local_stack.add_tenant(push_provider="braze", privacy="hash")
    cfg = local_stack.stack.cfg
    # THEN the state folder is 0700, and the secrets file and the fakes' copy of the keys are 0600
    private = {cfg.home: 0o700, cfg.paths.secrets: 0o600, cfg.home / "fakes" / "register.json": 0o600}
    exposed = {str(path): oct(_mode(path)) for path, mode in private.items() if _mode(path) != mode}
    assert exposed == {}
    # AND no temporary copy of them is left behind
    leftovers = [p.name for p in cfg.home.rglob("*.tmp")]
    assert leftovers == []
    fault.report(
        "state folder 0700; secrets.json and fakes/register.json 0600; no temp copies",
        lost=len(exposed),  # files with keys others could read
        duplicated=len(leftovers),  # stray copies of them
    )


def _is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(address, "ipv4_mapped", None)
    return bool((mapped or address).is_loopback)


@pytest.mark.scenario(
    "Every local service listens on 127.0.0.1 only",
    injected="the listening sockets of every process of the running stack (emulators, router, functions, fakes)",
    findings=[23],
)
def test_every_local_service_listens_on_loopback_only(local_stack: StackHandle, fault: Fault) -> None:
    # GIVEN every process of the stack, children included (gunicorn workers, the JVM)
    listening: dict[str, set[tuple[str, int]]] = {}
    for row in local_stack.stack.status():
        assert row["pid"], f"{row['service']} is not running"
        root = psutil.Process(row["pid"])
        listening[row["service"]] = {
            (conn.laddr.ip, conn.laddr.port)
            for proc in (root, *root.children(recursive=True))
            for conn in proc.net_connections(kind="inet")
            if conn.status == psutil.CONN_LISTEN
        }
    # THEN each one listens somewhere, and only on a loopback address
    assert all(listening.values()), listening
    exposed = sorted((service, ip, port) for service, socks in listening.items() for ip, port in socks
                     if not _is_loopback(ip))  # fmt: skip
    assert exposed == []
    # AND no two services share a port
    owners: dict[tuple[str, int], list[str]] = {}
    for service, socks in listening.items():
        for sock in socks:
            owners.setdefault(sock, []).append(service)
    shared = [sock for sock, services in owners.items() if len(services) > 1]
    fault.report(
        f"{sum(map(len, listening.values()))} listening sockets of {len(listening)} services, all on loopback",
        lost=len(exposed),  # sockets reachable from outside the machine
        duplicated=len(shared),  # ports two services hold
    )


@pytest.mark.scenario(
    "Raw rejected payloads expire after the tenant's retention",
    injected="a tenant whose rejected table predates retention (partitions never expire), a file with a rejected "
    "line, then the upgrade step and a shorter retention",
    findings=[13],
)
def test_rejected_partitions_expire_after_the_tenants_retention(
    local_stack: StackHandle, tmp_path: Path, fault: Fault
) -> None:
    from google.cloud import bigquery

    from shared.warehouse.client import bigquery_client
    from shared.warehouse.schema import TABLES

    client = bigquery_client()
    # GIVEN a tenant (default retention), a file with a good and a rejected line, and its table made as older versions
    # made it: without a partition expiration
    tenant = local_stack.add_tenant(region=REGION)
    table_id = f"{local_stack.stack.cfg.project}.landline_{tenant}.rejected"

    def expiration_days() -> float | None:
        ms = client.get_table(table_id).time_partitioning.expiration_ms
        return None if ms is None else ms / DAY_MS

    assert expiration_days() == 30  # the default, set at creation
    client.delete_table(table_id)
    old = bigquery.Table(table_id, schema=next(spec.schema for spec in TABLES if spec.name == "rejected"))
    old.time_partitioning = bigquery.TimePartitioning(field="rejected_at")
    client.create_table(old)
    assert expiration_days() is None
    good = {"type": "track", "userId": "u1", "messageId": unique("m"), "event": "Signed Up",
            "timestamp": "2024-05-01T10:00:00Z"}  # fmt: skip
    local_stack.drop(tenant, segment_file(tmp_path, [good, '{"type": "track", "userId": "u2"']))
    local_stack.wait()

    # WHEN the upgrade step runs, and later a shorter retention is chosen
    local_stack.cli("tenant", "add", tenant, "--region", REGION)
    upgraded = expiration_days()
    local_stack.cli("tenant", "add", tenant, "--region", REGION, "--rejected-retention-days", "7")

    # THEN the existing table got the retention, then the new one; the rows are untouched
    assert (upgraded, expiration_days()) == (30, 7)
    assert registry_entry(local_stack, tenant)["privacy"]["rejected_retention_days"] == 7
    counts = pipeline_accounting(local_stack, tenant, 2)
    [rejected] = local_stack.query(tenant, "SELECT COUNT(*) AS n FROM rejected_deduped")
    assert rejected["n"] == 1
    fault.report(
        "rejected partitions expire after 30 days by default (set on old tables by the upgrade step), 7 once chosen",
        lost=counts["lost"],
        duplicated=counts["duplicated"],
    )

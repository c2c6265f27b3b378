"""RELIABILITY.md from a test run: ``python -m tests.reliability_table [build/reliability.json] [-o RELIABILITY.md]``.

The scenario rows come from what each fault-scenario test measured (tests/faults.py writes them to
build/reliability.json at the end of a pytest session; ``make reliability`` runs the scenarios and then this). The
findings section maps every finding of the December 2026 reliability review to the scenarios that cite it, or to the
argument below when it is closed by a decision rather than a test. It refuses to write a table from a run in which a
scenario failed, lost or duplicated anything, or in which a high or medium finding has neither a scenario nor an
argument.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# number -> (severity, short title, argument when a decision rather than a test closes it, else None)
FINDINGS: dict[int, tuple[str, str, str | None]] = {
    1: ("H", "Poison lines crash the loader; the whole batch is dead-lettered",
        "any exception mapping one line is that line's `internal_error` rejection (tests/unit/test_parse_lines.py, "
        "tests/unit/test_loader_properties.py: no input makes a format raise)"),
    2: ("H", "One tenant or one bad schedule row stops push sending for the region", None),
    3: ("H", "Due pushes starve behind future local-time messages", None),
    4: ("H", "Tenant isolation trusts a free attribute on shared topics",
        "decision: per-tenant topics (`raw-events.<t>`, `send-requests.<t>`, `object-notifications.<t>`), the tenant "
        "taken from the delivering topic, publisher IAM per tenant topic (README, Publishing events directly)"),
    5: ("H", "Memory is unbounded on untrusted input",
        "a line is capped at 16 MiB (its head kept, rejected `line_too_large`), line-number attributes are checked "
        "before any list is built, a message holds at most 10,000 lines (tests/unit/test_ingest_decode.py, "
        "test_ingest_batching.py, test_load_message.py)"),
    6: ("M", "Push sends can duplicate after ambiguous transport errors",
        "only what never left the process is resent; OneSignal alone is resent (idempotency key) "
        "(tests/push/test_faults_providers.py)"),
    7: ("M", "A claim can be lost to its own retry", None),
    8: ("M", "Credential or config errors permanently fail messages", None),
    9: ("M", "The tick budget is per tenant, not per invocation", None),
    10: ("M", "Dead letters are neither alerted nor replayable; ingest has no dead-letter path",
         "alert policies on every dead-letter keep subscription and on setup-error logs (infra/terraform/"
         "monitoring.tf, tests/unit/test_terraform.py); tables created by Terraform is the deployment issue's"),
    11: ("M", "Unclassified exceptions skip run_stage",
         "a bug or a malformed envelope is logged `error_class=bug` with its context and delivery attempt, then "
         "re-raised so the platform retries (tests/unit/test_runtime.py); a log line, not a data path, so no scenario"),
    12: ("M", "PII reaches events.metadata", None),
    13: ("M", "Raw PII kept forever and readable by anyone on the project",
         "code side: `rejected` partitions expire (privacy.rejected_retention_days, default 30); dataset access "
         "blocks and policy tags are the deployment issue's (#13)"),
    14: ("M", "IAM is broader than needed",
         "deferred to the deployment issue (#13: a service account per function per region, table-level grants); "
         "meanwhile region and tenant are enforced in code before every write (scenarios citing 4, "
         "tests/integration/test_load_region.py)"),
    15: ("M", "A whole-request 400 from insertAll counts as transient", None),
    16: ("M", "A redelivered send request can overwrite a newer update", None),
    17: ("M", "Expo messages count twice against the frequency cap", None),
    18: ("L", "Malformed attributes raise and become poison messages",
         "a malformed, inconsistent or huge attribute is ignored and lines are numbered from 1 "
         "(tests/unit/test_ingest_batching.py)"),
    19: ("L", "Send requests with year-1 datetimes raise inside a validator",
         "an out-of-range time is a rejected line naming the field (tests/push/test_send_requests.py)"),
    20: ("L", "A huge Retry-After overflows datetime",
         "Retry-After and APNs 410 timestamps are clamped (tests/push/test_faults_providers.py)"),
    21: ("L", "Credential caches keyed by non-secret identifiers; base_url from secrets",
         "caches keyed by a hash of the key; endpoints in a secret are ignored outside the local stack "
         "(tests/push/test_tick_isolation.py)"),
    22: ("L", "The privacy salt shows up in repr(PrivacyPolicy)", "the salt is a SecretStr"),
    23: ("L", "Local secrets briefly world-readable", None),
    24: ("L", "The ledger and stats have accounting holes",
         "every ingest attempt ends with a ledger row (`gone`, `failed` too); `stats` prints `unaccounted`"),
    25: ("L", "Some values change or are rejected without trace (1e400, mid-file BOM)",
         "`1e400` is `invalid_field`, integers beyond int64 are kept as exact decimal strings, a BOM starting a line "
         "is ignored (tests/unit/test_parse_lines.py)"),
    26: ("L", "Tenant model does not validate bucket/dataset/region; uniqueness unchecked",
         "names and regions checked as Google Cloud checks them; no two tenants share a bucket or dataset; a taken "
         "bucket is used only if it is this project's (tests/unit/test_tenant_config.py, tests/integration/test_tenant_admin.py)"),
    27: ("L", "`landline query` runs arbitrary SQL",
         "decision: an operator's tool that runs with the caller's own credentials and grants nothing more; "
         "documented in the README and its help"),
    28: ("L", "Unbounded growth: claims bucket without lifecycle, files not partitioned",
         "claims deleted after claim_retention_days (30); the file ledger is partitioned by recorded_at for new "
         "tenants (tests/unit/test_terraform.py, tests/integration/test_schema_upgrade.py)"),
    29: ("L", "gc.disable() is process-wide while load_events runs 4 threads",
         "the loader no longer touches the collector (tests/unit/test_parse_lines.py)"),
    30: ("L", "The APNs device token is put into :path unescaped",
         "a token that is not hex is percent-encoded (tests/push/test_faults_providers.py)"),
    31: ("L", "The GCS service agent has pubsub.publisher project-wide",
         "Cloud Storage's agent may publish only on `object-notifications.<t>`; ingest takes the tenant from that "
         "topic (tests/unit/test_terraform.py)"),
    32: ("L", "Deploys are not reviewed or pinned",
         "deferred to the deployment issue (#13: plan, reviewed apply, images pinned by digest)"),
}


class TableError(Exception):
    """The run cannot honestly produce a table; the message says why."""


def _cell(text: Any) -> str:
    return str(text if text is not None else "").replace("|", "\\|").replace("\n", " ")


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def render(results: list[dict[str, Any]], *, generated_at: datetime | None = None, commit: str | None = None) -> str:
    bad = [r for r in results if not r.get("passed") or r.get("lost") != 0 or r.get("duplicated") != 0]
    if bad:
        names = "; ".join(f"{r['scenario']} ({r['test']})" for r in bad)
        raise TableError(f"{len(bad)} scenario(s) failed, lost or duplicated records: {names}")
    rows = sorted(results, key=lambda r: (min(r.get("findings") or [99]), r["scenario"]))
    by_finding: dict[int, list[int]] = defaultdict(list)
    for i, r in enumerate(rows, start=1):
        for f in r.get("findings") or []:
            by_finding[int(f)].append(i)
    missing = [n for n, (sev, _, why) in FINDINGS.items() if sev in "HM" and not by_finding.get(n) and not why]
    if missing:
        raise TableError(f"high/medium findings with neither a scenario nor an argument: {missing}")

    when = (generated_at or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "# Reliability: fault scenarios and what they cost",
        "",
        f"Generated by `make reliability` from a test run ({when}, commit `{commit or _commit()}`): every row is a",
        "test marked `@pytest.mark.scenario` (tests/faults.py) that injected the fault and *measured* the records lost",
        "and duplicated (from the warehouse, the file ledger and the provider fakes' counters); a partial run updates",
        "its own rows and keeps the others' (each row names its test, so `pytest TEST` re-measures it). Do not edit",
        "by hand.",
        "",
        f"{len(rows)} scenarios, {sum(r['lost'] for r in rows)} records lost, "
        f"{sum(r['duplicated'] for r in rows)} duplicated.",
        "",
        "| # | scenario | injected | outcome | lost | duplicated | review findings | test |",
        "|---:|---|---|---|---:|---:|---|---|",
    ]
    for i, r in enumerate(rows, start=1):
        findings = ", ".join(str(f) for f in r.get("findings") or []) or "-"
        out.append(
            f"| {i} | {_cell(r['scenario'])} | {_cell(r['injected'])} | {_cell(r['outcome'])} | {r['lost']} | "
            f"{r['duplicated']} | {findings} | `{_cell(r['test'])}` |"
        )
    out += [
        "",
        "## The review's findings (`reliability-2026-12`), and what closes each",
        "",
        "Closed by scenarios: the rows above that cite the finding. Closed by a decision: the argument given.",
        "",
        "| # | severity | finding | closed by |",
        "|---:|---|---|---|",
    ]
    for n, (sev, title, why) in FINDINGS.items():
        shown = ", ".join(f"#{i}" for i in by_finding.get(n, []))
        closed = "; ".join(x for x in (f"scenarios {shown}" if shown else "", why or "") if x) or "open"
        out.append(f"| {n} | {sev} | {_cell(title)} | {_cell(closed)} |")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="?", default=str(ROOT / "build/reliability.json"))
    parser.add_argument("-o", "--output", default=str(ROOT / "RELIABILITY.md"))
    args = parser.parse_args()
    results = json.loads(Path(args.results).read_text())
    try:
        text = render(results)
    except TableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    Path(args.output).write_text(text)
    print(f"wrote {args.output}: {len(results)} scenarios")


if __name__ == "__main__":
    main()

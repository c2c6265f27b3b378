"""``python -m bench.campaign [--quick]``: how long a campaign launch takes, and how fast its fan-out sends, each as a
ratio against a baseline measured in the same run on the same machine.

On a private local stack (fresh state folder, free ports), a tenant of N contacts (full 200,000, quick 20,000; all
with an FCM token, four countries, three timezones) with two ``Product Viewed`` events each on average, written with
the product's writer. The audience: a push token and at least one view in the last 30 days.

1. **Launch** against a plain ``INSERT ... SELECT`` of the same audience's ids into a scratch table (the least any
   launch must do: run the audience query and write one row per member), alternating, ``--rounds`` times each. A
   launch = the timezone query, the assignment ``INSERT ... SELECT`` (strata, hash order, arms), the schedule
   ``INSERT ... SELECT`` and the marker (shared/campaigns/launch.py). Ratio ``plain/launch`` (best vs best);
   target >= 0.33.
2. **Fan-out**: one more campaign (two variants, 10% holdout, send now) is launched and one scheduler tick is
   published; the deployed send_due launches nothing new, fans the due chunks out as shards on ``send-shards.<t>``,
   and the shards send to the stack's fake FCM, recording every outcome in BigQuery. Rate = messages sent / seconds
   from the tick to the last recorded outcome. Baseline: ``bench/push``'s raw client (``FcmProvider.send_many``
   against its own fake subprocess, no BigQuery, no claims) on the same number of messages, right after. Ratio
   ``fan-out/raw``; target >= 0.5. Also printed: claim objects written per send (target <= 1/50).
3. **One by one** (the baseline proposed where the raw client proved unreachable: it has no warehouse at all): before
   the fan-out, the first ``--baseline-messages`` audience members (default all, at most 20,000) are scheduled as
   separate messages, as ``landline schedule`` and send-requests make them (no campaign, no chunk), and sent by
   back-to-back ticks of the product's one-by-one path (one invocation each, at most 5,000 candidates). Ratio
   ``fan-out/one-by-one`` in sends per second: what fanning a campaign out gains over the path it replaces.

The last line is ``ratio plain/launch = X.XX``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).with_name("landline")
COUNTRIES = ("DE", "FR", "US", "JP")
ZONES = ("Europe/Paris", "America/New_York", "Asia/Tokyo")
AUDIENCE = {"name": "viewers", "where": {"push_token": {"exists": True}},
            "did": [{"event": "Product Viewed", "within_days": 30}]}  # fmt: skip


def _load(tenant: str, contacts: int, seed: int = 1) -> int:
    """``contacts`` users and about two views each (0-4), written with the product's writer; returns the members the
    audience should have (contacts with at least one view)."""
    from shared.config import tenants
    from shared.warehouse.client import bigquery_client
    from shared.warehouse.rows import EventRow, Lineage, Row, UserPropertiesRow
    from shared.warehouse.writer import write_rows

    rng = random.Random(seed)
    now = datetime.now(UTC)
    t, client = tenants().get(tenant), bigquery_client()
    batch: list[Row] = []
    members = 0
    for i in range(contacts):
        contact = f"u{i:07d}"
        lineage = Lineage("native", f"bench://campaign/{i // 5000}", i + 1, now)
        batch.append(UserPropertiesRow(contact, now - timedelta(days=40), f"p-{contact}", lineage,
                                       country=rng.choice(COUNTRIES), timezone=rng.choice(ZONES),
                                       push_token=f"tok-{contact}-" + "x" * 120,
                                       properties={"first_name": rng.choice(["Ada", "Sam"])}))  # fmt: skip
        views = rng.choice((0, 1, 2, 3, 4))
        members += views > 0
        for v in range(views):
            batch.append(EventRow(contact, now - timedelta(days=rng.uniform(0.5, 25)), "Product Viewed",
                                  f"e-{contact}-{v}", lineage, metadata={"sku": rng.choice("abc")}))  # fmt: skip
        if len(batch) >= 5000:
            write_rows(client, t, batch, processor="bench")
            batch = []
    if batch:
        write_rows(client, t, batch, processor="bench")
    return members


def _plain_insert(tenant: str, table: str) -> tuple[float, int]:
    """The baseline: the audience's ids into a scratch table, one INSERT ... SELECT."""
    from shared.campaigns.audience import Audience, compile_audience
    from shared.warehouse.query import run_dml

    members = compile_audience(Audience.model_validate(AUDIENCE), datetime.now(UTC))
    t0 = time.perf_counter()
    n = run_dml(tenant, f"INSERT INTO {table} (contact_id) SELECT contact_id FROM ({members.sql})", members.params)
    return time.perf_counter() - t0, n


def _launch(tenant: str, name: str, send: dict[str, Any]) -> tuple[float, Any]:
    from shared.campaigns.campaign import parse_campaign
    from shared.campaigns.launch import launch_campaign
    from shared.campaigns.store import save_campaign

    save_campaign(tenant, parse_campaign({
        "name": name, "audience": AUDIENCE["name"], "holdout": 0.1, "send": send,
        "variants": [{"id": "a", "title": "Spring", "body": "Hi {{ first_name | default: \"there\" }}"},
                     {"id": "b", "title": "Spring sale", "body": "20% off"}],
    }))  # fmt: skip
    t0 = time.perf_counter()
    launch = launch_campaign(tenant, name)
    return time.perf_counter() - t0, launch


def _scratch_table(tenant: str) -> str:
    from google.cloud import bigquery

    from shared.config import tenants
    from shared.warehouse.client import bigquery_client

    t = tenants().get(tenant)
    table = f"scratch_{int(time.time())}"
    client = bigquery_client()
    client.create_table(bigquery.Table(f"{client.project}.{t.dataset}.{table}",
                                       schema=[bigquery.SchemaField("contact_id", "STRING")]))  # fmt: skip
    return table


def _fan_out(cfg: Any, tenant: str, name: str, expected: int, timeout: float) -> dict[str, Any]:
    """A tick, then another whenever the stack is idle with messages still unfinished (a deferral waits for the next
    tick, as it would for the scheduler's); returns sent, seconds from the first tick to the last outcome, ticks, and
    the claim objects written."""
    from infra.local.stack_ops import publish_tick, wait_idle
    from shared.clients import storage_client
    from shared.config import tenants
    from shared.push.claims import claims_bucket
    from shared.warehouse.query import run_query

    counts_sql = """
      SELECT s.status, COUNT(DISTINCT s.message_id) AS n, MAX(s.at) AS last
      FROM message_sends AS s JOIN campaign_assignments AS a USING (message_id)
      WHERE a.campaign = @c GROUP BY s.status"""
    started = datetime.now(UTC)
    publish_tick(cfg.url("router"), tenant)
    ticks = 1
    deadline = time.monotonic() + timeout
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        wait_idle(cfg.url("router"), timeout=max(deadline - time.monotonic(), 1))
        rows = run_query(tenant, counts_sql, {"c": name})
        if sum(r["n"] for r in rows if r["status"] in ("sent", "skipped", "failed")) >= expected:
            break
        # Idle with messages unfinished: what is left was deferred to a later tick (at full size the fake FCM refused
        # 500 streams, `connection:StreamNotOpened`, and one tick alone left the run waiting forever).
        time.sleep(5)  # a deferral's retry time is seconds away; the scheduler's own period is minutes
        publish_tick(cfg.url("router"), tenant)
        ticks += 1
    by_status = {r["status"]: r["n"] for r in rows}
    last = max((r["last"] for r in rows), default=started)
    seconds = (last - started).total_seconds()
    claims = list(storage_client().list_blobs(claims_bucket(tenants().get(tenant)), prefix="claims/"))
    return {"by_status": by_status, "seconds": round(seconds, 1), "sent": by_status.get("sent", 0), "ticks": ticks,
            "claim_objects": len(claims)}  # fmt: skip


def _one_by_one(cfg: Any, tenant: str, n: int, timeout: float) -> dict[str, Any]:
    """The baseline: ``n`` audience members scheduled as ``n`` separate messages, sent by back-to-back ticks."""
    from infra.local.stack_ops import publish_tick, wait_idle
    from shared.campaigns.audience import Audience, compile_audience
    from shared.warehouse.query import run_dml, run_query

    members = compile_audience(Audience.model_validate(AUDIENCE), datetime.now(UTC))
    scheduled_at = datetime.now(UTC)
    inserted = run_dml(tenant, f"""
      INSERT INTO message_schedule (message_id, contact_id, channel, title, body, data, send_at, priority, created_at,
                                    requested_at, request_line)
      SELECT CONCAT('one.', contact_id), contact_id, 'push', 'Hello', 'One by one', PARSE_JSON('{{}}'), @bench_at,
             'high', @bench_at, @bench_at, 0
      FROM ({members.sql}) ORDER BY contact_id LIMIT @bench_n""", {**members.params, "bench_at": scheduled_at, "bench_n": n})
    counts_sql = """
      SELECT status, COUNT(DISTINCT message_id) AS n, MAX(at) AS last FROM message_sends
      WHERE STARTS_WITH(message_id, 'one.') GROUP BY status"""
    started = datetime.now(UTC)
    deadline = time.monotonic() + timeout
    rows: list[dict[str, Any]] = []
    ticks = 0
    while time.monotonic() < deadline:
        publish_tick(cfg.url("router"), tenant)
        ticks += 1
        wait_idle(cfg.url("router"), timeout=max(deadline - time.monotonic(), 1))
        rows = run_query(tenant, counts_sql, {})
        if sum(r["n"] for r in rows if r["status"] in ("sent", "skipped", "failed")) >= inserted:
            break
    by_status = {r["status"]: r["n"] for r in rows}
    last = max((r["last"] for r in rows), default=started)
    return {"scheduled": inserted, "by_status": by_status, "ticks": ticks, "sent": by_status.get("sent", 0),
            "seconds": round((last - started).total_seconds(), 1)}  # fmt: skip


def _raw_rate(n: int) -> float:
    from bench.push.__main__ import run_landline, service_account, start_fake

    with tempfile.TemporaryDirectory() as state:
        proc, url = start_fake(Path(state))
        try:
            elapsed, _, sent = run_landline(service_account(url), url, n)
        finally:
            proc.terminate()
            proc.wait(10)
    return sent / elapsed


def run(contacts: int, rounds: int, *, baseline_messages: int = 20_000, timeout: float = 3600) -> dict[str, Any]:
    from infra.local.stack import Stack, activate
    from shared.campaigns.audience import Audience
    from shared.campaigns.store import save_audience
    from tests.stack_support import free_port_base

    home = Path(tempfile.mkdtemp(prefix="landline-campaign-"))
    stack = Stack(home=home, port_base=free_port_base())
    summary: dict[str, Any] = {"contacts": contacts, "rounds": rounds}
    try:
        stack.up(timeout=120)
        activate(stack.cfg)
        import subprocess

        env = {**os.environ, **stack.cfg.client_env()}
        subprocess.run([str(BIN), "tenant", "add", "bench", "--region", "europe-west1", "--push-provider", "fcm"],
                       env=env, check=True, capture_output=True)  # fmt: skip
        from shared.config import tenants

        tenants.cache_clear()
        t0 = time.perf_counter()
        members = _load("bench", contacts)
        summary["load_seconds"] = round(time.perf_counter() - t0, 1)
        save_audience("bench", Audience.model_validate(AUDIENCE))
        table = _scratch_table("bench")
        plain: list[float] = []
        launches: list[float] = []
        later = {"at": (datetime.now(UTC) + timedelta(days=30)).isoformat()}
        for r in range(rounds):
            order = ("plain", "launch") if r % 2 == 0 else ("launch", "plain")
            for what in order:
                if what == "plain":
                    seconds, n = _plain_insert("bench", table)
                    plain.append(seconds)
                else:
                    seconds, launch = _launch("bench", f"later-{r}", later)
                    n = launch.audience_size
                    launches.append(seconds)
                assert n == members, f"{what} selected {n} members, the generated data has {members}"
                print(f"round {r + 1} {what:6s}: {n:,} members in {seconds:.2f} s", flush=True)
        summary |= {"members": members, "plain_s": [round(s, 2) for s in plain],
                    "launch_s": [round(s, 2) for s in launches]}  # fmt: skip

        one = _one_by_one(stack.cfg, "bench", min(members, baseline_messages), timeout)
        one_rate = one["sent"] / one["seconds"] if one["seconds"] > 0 else 0.0
        print(f"one by one   : {one['by_status']} in {one['seconds']} s over {one['ticks']} ticks = "
              f"{one_rate:.0f} sends/s", flush=True)  # fmt: skip
        summary |= {"one_by_one": one, "one_by_one_sends_per_s": round(one_rate, 1)}

        seconds, launch = _launch("bench", "now", {"now": True})
        launches.append(seconds)
        print(f"launch now   : {launch.audience_size:,} members, {launch.scheduled:,} scheduled in {seconds:.2f} s",
              flush=True)  # fmt: skip
        fan = _fan_out(stack.cfg, "bench", "now", launch.scheduled, timeout)
        fan_rate = fan["sent"] / fan["seconds"] if fan["seconds"] > 0 else 0.0
        print(f"fan-out      : {fan['by_status']} in {fan['seconds']} s over {fan['ticks']} ticks = {fan_rate:.0f} sends/s, "
              f"{fan['claim_objects']} claim objects", flush=True)  # fmt: skip
        raw = _raw_rate(max(fan["sent"], 1000))
        print(f"raw client   : {raw:.0f} sends/s (bench/push's FcmProvider.send_many, {max(fan['sent'], 1000):,} "
              "messages)", flush=True)  # fmt: skip
        summary |= {"scheduled": launch.scheduled, "fan_out": fan, "fan_out_sends_per_s": round(fan_rate, 1),
                    "raw_sends_per_s": round(raw, 1),
                    "claims_per_send": round(fan["claim_objects"] / max(fan["sent"], 1), 5),
                    "ratio_fan_out_to_raw": round(fan_rate / raw, 3),
                    "ratio_fan_out_to_one_by_one": round(fan_rate / one_rate, 3) if one_rate else None,
                    "ratio_plain_to_launch_best": round(min(plain) / min(launches), 3),
                    "ratio_plain_to_launch_median": round(statistics.median(plain) / statistics.median(launches), 3),
                    "load_average": os.getloadavg()[0]}  # fmt: skip
    finally:
        stack.down()
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20,000 contacts, 2 rounds")
    parser.add_argument("--contacts", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--baseline-messages", type=int, default=20_000,
                        help="messages for the one-by-one baseline (at most the audience)")  # fmt: skip
    args = parser.parse_args()
    contacts = args.contacts or (20_000 if args.quick else 200_000)
    rounds = args.rounds or (2 if args.quick else 3)
    summary = run(contacts, rounds, baseline_messages=args.baseline_messages)
    print(json.dumps(summary, indent=2, default=str))
    print(f"ratio fan-out/raw = {summary['ratio_fan_out_to_raw']:.2f}")
    print(f"ratio fan-out/one-by-one = {summary['ratio_fan_out_to_one_by_one'] or 0:.2f}")
    print(f"ratio plain/launch = {summary['ratio_plain_to_launch_best']:.2f}")


if __name__ == "__main__":
    main()

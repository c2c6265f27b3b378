"""Campaigns through the stack: contacts and events arrive as a Segment file through the real pipeline, an audience
and a campaign are created and launched with the CLI, the deployed send_due fans the campaign out as shards and
sends it to the fake FCM, and every member's arm and outcome is checked against what the definition says."""

from __future__ import annotations

import json
import os
import random
import threading
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from tests.integration.push_support import by_token, identify, push_accounting, push_tenant, quick_tenant, sends
from tests.stack_support import unique

if TYPE_CHECKING:
    from pathlib import Path

    from tests.stack_support import StackHandle

pytestmark = pytest.mark.stack

NOW = datetime.now(UTC)
INJECTION = "x'; DROP TABLE events; --"
SHARES = {"holdout": 0.2, "a": 0.4, "b": 0.4}


def _people(run: str, rng: random.Random) -> list[dict[str, Any]]:
    """120 contacts: most with a token, a few opted out, some with a first name or a nickname, four countries (one
    unknown), three timezones, and 0-14 product views in the last 30 days (so every activity level occurs)."""
    return [
        {
            "id": f"{run}-{i:03d}",
            "token": f"{run}-tok-{i}" if rng.random() < 0.85 else None,
            "opt_out": rng.random() < 0.05,
            "first_name": rng.choice(["Ada", "Linus", None]),
            "nickname": rng.choice(["ace", None]),
            "country": rng.choice(["DE", "FR", "US", None]),
            "tz": rng.choice(["Europe/Paris", "America/New_York", "Asia/Tokyo"]),
            "views": rng.choice([0, 0, 1, 2, 4, 6, 12, 14]),
        }
        for i in range(120)
    ]


def _lines(people: list[dict[str, Any]]) -> list[dict[str, Any]]:
    lines = []
    for p in people:
        traits = {k: p[k] for k in ("first_name", "nickname", "country") if p[k]}
        if p["opt_out"]:
            traits["push_opt_out"] = True
        lines.append(identify(p["id"], p["token"], p["tz"], **traits))
        for n in range(p["views"]):
            lines.append({"type": "track", "userId": p["id"], "event": "Product Viewed", "messageId": unique("ev"),
                          "properties": {"sku": "a"},
                          "timestamp": (NOW - timedelta(days=1 + n % 20, hours=6)).isoformat()})  # fmt: skip
    return lines


@pytest.fixture(scope="module")
def loaded(local_stack: StackHandle, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[dict[str, Any]]]:
    people = _people(unique("cp"), random.Random(7))
    tenant = push_tenant(local_stack, tmp_path_factory.mktemp("campaign"), _lines(people))
    assert local_stack.stats(tenant)["unaccounted"] == 0
    return tenant, people


def _create(stack: StackHandle, kind: str, tenant: str, tmp: Path, definition: dict[str, Any],
            check: bool = True) -> Any:
    path = tmp / f"{kind}-{unique()}.json"
    path.write_text(json.dumps(definition))
    return stack.cli(kind, "create", str(path), "--tenant", tenant, check=check)


def _status(stack: StackHandle, tenant: str, name: str) -> dict[str, Any]:
    return dict(json.loads(stack.cli("campaign", "status", name, "--tenant", tenant, "--json").stdout))


def test_campaign_assigns_balanced_arms_and_sends_each_member_once(
    local_stack: StackHandle, loaded: tuple[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    tenant, people = loaded
    # GIVEN an audience over the loaded users: its size is what a hand-written query over the same tables gives
    _create(local_stack, "audience", tenant, tmp_path, {
        "name": "viewers", "where": {"push_token": {"exists": True}},
        "did": [{"event": "Product Viewed", "within_days": 30, "at_least": 2}],
    })  # fmt: skip
    preview = json.loads(local_stack.cli("audience", "preview", "viewers", "--tenant", tenant, "--json").stdout)
    by_hand = local_stack.query(tenant, """
        SELECT COUNT(*) AS n FROM users_latest AS u JOIN (
          SELECT contact_id FROM events_deduped
          WHERE event_name = 'Product Viewed' AND timestamp >= TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 30 DAY)
          GROUP BY contact_id HAVING COUNT(*) >= 2) AS e ON e.contact_id = u.contact_id
        WHERE u.push_token IS NOT NULL""")[0]["n"]
    assert preview["size"] == by_hand == sum(1 for p in people if p["token"] and p["views"] >= 2)

    # WHEN a campaign to everyone, two variants (one needs a nickname, with no default) and a 20% holdout, is
    # created and launched (twice: the second changes nothing)
    _create(local_stack, "audience", tenant, tmp_path, {"name": "everyone"})
    _create(local_stack, "campaign", tenant, tmp_path, {
        "name": "spring", "audience": "everyone", "holdout": 0.2,
        "variants": [{"id": "a", "title": "Hello", "body": "Variant A for {{ first_name | default: \"you\" }}"},
                     {"id": "b", "title": "Hello", "body": "Hey {{ nickname }}"}],
        "conversion": {"events": ["Order Completed"], "within_hours": 72},
    })  # fmt: skip
    first = json.loads(local_stack.cli("campaign", "launch", "spring", "--tenant", tenant, "--json").stdout)
    again = json.loads(local_stack.cli("campaign", "launch", "spring", "--tenant", tenant, "--json").stdout)
    assert first["new"] and not again["new"] and again["launch_id"] == first["launch_id"]

    # THEN every member has exactly one arm, in a stratum named by its activity level and country, and within every
    # stratum each arm's count is within one contact of its share
    rows = local_stack.query(tenant, "SELECT contact_id, arm, stratum, message_id, planned_send_at "
                                     "FROM campaign_assignments WHERE campaign = 'spring'")
    assert sorted(r["contact_id"] for r in rows) == sorted(p["id"] for p in people)
    levels = {r["contact_id"]: r["activity"] for r in local_stack.query(tenant, "SELECT * FROM contact_activity")}
    country = {p["id"]: p["country"] or "" for p in people}
    assert all(r["stratum"] == f"activity={levels[r['contact_id']]}|country={country[r['contact_id']]}" for r in rows)
    strata: dict[str, Counter[str]] = defaultdict(Counter)
    for r in rows:
        strata[r["stratum"]][r["arm"]] += 1
    assert len(strata) >= 8
    for stratum, arms in strata.items():
        n = sum(arms.values())
        for arm, share in SHARES.items():
            assert abs(arms[arm] - share * n) < 1, (stratum, dict(arms))
    assert len({r["message_id"] for r in rows}) == len(rows)
    status = _status(local_stack, tenant, "spring")
    assert status["assigned"] == dict(Counter(r["arm"] for r in rows))
    assert status["scheduled"] == sum(1 for r in rows if r["arm"] != "holdout")

    # WHEN the scheduler ticks twice (the deployed send_due fans the due chunks out as shards)
    for _ in range(2):
        local_stack.cli("tick", "--tenant", tenant)
        local_stack.wait()

    # THEN every variant member with a token was sent exactly once or skipped with its reason, and no holdout member
    # was scheduled, recorded or delivered anything
    arm_of = {r["contact_id"]: r for r in rows}
    outcomes = sends(local_stack, tenant)
    delivered = by_token(local_stack)
    expected_skips: Counter[str] = Counter()
    for p in people:
        member = arm_of[p["id"]]
        got = outcomes.get(member["message_id"], [])
        if member["arm"] == "holdout":
            assert got == [] and (p["token"] is None or p["token"] not in delivered), p
            continue
        reason = ("no_token" if not p["token"] else "opted_out" if p["opt_out"]
                  else "template_missing:nickname" if member["arm"] == "b" and not p["nickname"] else None)  # fmt: skip
        if reason is None:
            assert got == [("sent", None)], p
            assert delivered.get(p["token"]) == 1, p
        else:
            assert got == [("skipped", reason)], p
            expected_skips[reason] += 1
    scheduled_holdout = local_stack.query(tenant, """
        SELECT COUNT(*) AS n FROM message_schedule AS s JOIN campaign_assignments AS a USING (message_id)
        WHERE a.arm = 'holdout'""")[0]["n"]
    assert scheduled_holdout == 0
    status = _status(local_stack, tenant, "spring")
    assert status["skipped"] == dict(expected_skips)
    assert status["sends"]["sent"] == sum(1 for m in arm_of.values() if outcomes.get(m["message_id"]) == [("sent", None)])
    assert status["waiting"] == 0
    assert expected_skips["template_missing:nickname"] > 0 and status["sends"]["sent"] > 0


def test_sql_in_a_definition_is_a_plain_value(
    local_stack: StackHandle, loaded: tuple[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    tenant, people = loaded
    events_before = local_stack.query(tenant, "SELECT COUNT(*) AS n FROM events_deduped")[0]["n"]
    # GIVEN a campaign whose texts, data and stratification property carry SQL
    _create(local_stack, "audience", tenant, tmp_path, {"name": "everyone"})
    _create(local_stack, "campaign", tenant, tmp_path, {
        "name": "evil", "audience": "everyone", "send": {"at": (NOW + timedelta(days=30)).isoformat()},
        "variants": [{"id": "a", "title": INJECTION, "body": INJECTION, "data": {"k": INJECTION}}],
        "stratify_by": ["properties.drop_table_events"],
    })  # fmt: skip
    # WHEN it is launched
    local_stack.cli("campaign", "launch", "evil", "--tenant", tenant)
    # THEN the text is stored as it was written, every member is assigned, and no table was touched
    texts = local_stack.query(tenant, """
        SELECT DISTINCT s.title, s.body, TO_JSON_STRING(s.data) AS data FROM message_schedule AS s
        JOIN campaign_assignments AS a USING (message_id) WHERE a.campaign = 'evil'""")
    assert [(t["title"], t["body"], json.loads(t["data"])) for t in texts] == [(INJECTION, INJECTION, {"k": INJECTION})]
    assert _status(local_stack, tenant, "evil")["assigned"] == {"a": len(people)}
    assert local_stack.query(tenant, "SELECT COUNT(*) AS n FROM events_deduped")[0]["n"] == events_before


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"audience": "nobody-made-this"}, "audience"),
        ({"variants": []}, "variants"),
        ({"holdout": 0.5, "variants": [{"id": "a", "title": "t", "body": "b", "share": 0.4},
                                       {"id": "b", "title": "t", "body": "b", "share": 0.4}]}, "add up to 1"),
        ({"variants": [{"id": "a", "title": "t", "body": "{% include 'secrets' %}"}]}, "include"),
        ({"variants": [{"id": "a", "title": "t", "body": "{{ first_name.__class__ }}"}]}, "body"),
        ({"stratify_by": ["plan"]}, "unknown property"),
    ],
    ids=["unknown-audience", "empty-variants", "shares-over-1", "template-include", "template-dunder",
         "unknown-property"],
)
def test_bad_definitions_get_one_line_and_launch_nothing(
    local_stack: StackHandle, loaded: tuple[str, list[dict[str, Any]]], tmp_path: Path, change: dict[str, Any],
    says: str,
) -> None:
    tenant, _ = loaded
    _create(local_stack, "audience", tenant, tmp_path, {"name": "everyone"})
    name = f"bad-{unique()}".replace("_", "-")
    definition = {"name": name, "audience": "everyone", "variants": [{"id": "a", "title": "t", "body": "b"}]} | change
    result = _create(local_stack, "campaign", tenant, tmp_path, definition, check=False)
    assert result.returncode != 0
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1 and says in message, message
    listed = json.loads(local_stack.cli("campaign", "list", "--tenant", tenant, "--json").stdout)
    assert name not in {c["name"] for c in listed}
    refused = local_stack.cli("campaign", "launch", name, "--tenant", tenant, check=False)
    assert refused.returncode != 0 and name in refused.stderr
    assert local_stack.query(tenant, f"SELECT COUNT(*) AS n FROM campaign_assignments_all WHERE campaign = '{name}'"
                             )[0]["n"] == 0


def test_a_campaign_larger_than_a_shard_is_sent_once_by_concurrent_invocations(local_stack: StackHandle) -> None:
    from shared.campaigns.audience import Audience
    from shared.campaigns.campaign import parse_campaign
    from shared.campaigns.launch import launch_campaign
    from shared.campaigns.store import save_audience, save_campaign
    from shared.clients import storage_client
    from shared.config import tenants
    from shared.push.claims import claims_bucket
    from shared.push.fanout import SHARD_CHUNKS
    from shared.push.shards import run_shard

    # GIVEN 240 contacts with tokens, and a campaign to all of them (10% holdout) launched in chunks of 10, so that
    # it spans 22 chunks and six shards
    run = unique("fo")
    contacts = {f"{run}-{i:03d}": f"{run}-tok-{i}" for i in range(240)}
    tenant = quick_tenant(local_stack, contacts)
    save_audience(tenant, Audience(name="all"))
    save_campaign(tenant, parse_campaign({"name": "big", "audience": "all", "holdout": 0.1,
                                          "variants": [{"id": "a", "title": "A", "body": "a"},
                                                       {"id": "b", "title": "B", "body": "b"}]}))  # fmt: skip
    launch = launch_campaign(tenant, "big", chunk_size=10)
    chunks = sorted({r["chunk"] for r in local_stack.query(tenant, "SELECT DISTINCT chunk FROM message_schedule")})
    assert len(chunks) == -(-launch.scheduled // 10) and len(chunks) > SHARD_CHUNKS
    shards = [chunks[i : i + SHARD_CHUNKS] for i in range(0, len(chunks), SHARD_CHUNKS)]

    # WHEN the deployed tick fans it out, while this process runs every shard twice at once and the whole campaign
    # in one more invocation
    t = tenants().get(tenant)
    errors: list[BaseException] = []

    def invoke(names: list[str]) -> None:
        try:
            run_shard(t, names)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=invoke, args=(s,)) for s in shards for _ in range(2)]
    threads.append(threading.Thread(target=invoke, args=(list(reversed(chunks)),)))
    local_stack.cli("tick", "--tenant", tenant)
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    local_stack.wait()
    assert not errors, errors

    # THEN each variant member was delivered and recorded sent exactly once, holdout members nothing, and the claims
    # cost one object per chunk
    members = local_stack.query(tenant, "SELECT contact_id, arm, message_id FROM campaign_assignments")
    variant = [m for m in members if m["arm"] != "holdout"]
    measured = push_accounting(local_stack, tenant, [m["message_id"] for m in variant],
                               [contacts[m["contact_id"]] for m in variant])
    assert measured["lost"] == 0 and measured["duplicated"] == 0 and measured["sent"] == len(variant) == launch.scheduled, (
        measured, Counter(r for m in variant for s, r in sends(local_stack, tenant).get(m["message_id"], [])
                          if s == "deferred"))
    delivered = by_token(local_stack)
    assert not [m for m in members if m["arm"] == "holdout" and contacts[m["contact_id"]] in delivered]
    claims = list(storage_client().list_blobs(claims_bucket(t), prefix="claims/groups/"))
    assert len(claims) == len(chunks)  # one per chunk of 10: a tenth of a claim per send


def test_other_services_create_and_launch_campaigns_on_the_send_requests_topic(
    local_stack: StackHandle, loaded: tuple[str, list[dict[str, Any]]]
) -> None:
    # GIVEN a service publishing audience and campaign operations to the tenant's own send-requests topic
    from google.cloud import pubsub_v1

    from shared.config import tenant_topic

    tenant, people = loaded
    os.environ["PUBSUB_EMULATOR_HOST"] = local_stack.env["PUBSUB_EMULATOR_HOST"]
    publisher = pubsub_v1.PublisherClient()
    topic = publisher.topic_path(local_stack.stack.cfg.project, tenant_topic("send-requests", tenant))

    def publish(operation: str, body: dict[str, Any]) -> None:
        publisher.publish(topic, json.dumps(body).encode(), operation=operation).result(timeout=30)
        local_stack.wait()

    # WHEN it creates an audience, a campaign, launches it, and sends one campaign with a share over 1
    publish("audience.create", {"name": "from-service", "where": {"country": {"eq": "DE"}}})
    publish("campaign.create", {"name": "svc", "audience": "from-service", "holdout": 0.5,
                                "send": {"at": (NOW + timedelta(days=30)).isoformat()},
                                "variants": [{"id": "a", "title": "T", "body": "B"}]})  # fmt: skip
    publish("campaign.launch", {"campaign": "svc"})
    publish("campaign.create", {"name": "svc-bad", "audience": "from-service", "holdout": 1.5,
                                "variants": [{"id": "a", "title": "T", "body": "B"}]})  # fmt: skip
    # THEN the campaign was launched over the audience, and the bad one is a rejected row saying why
    status = _status(local_stack, tenant, "svc")
    assert sum(status["assigned"].values()) == sum(1 for p in people if p["country"] == "DE")
    assert set(status["assigned"]) == {"a", "holdout"}
    rejected = local_stack.query(tenant, "SELECT message FROM rejected WHERE reason_code = 'invalid_campaign_request'")
    assert len(rejected) == 1 and "holdout" in rejected[0]["message"]

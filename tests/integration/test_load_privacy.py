"""Issue 4: events carry no PII; contact addresses live only in user_properties. Through the real local stack.

The check is deliberately blunt: every column of every events row is serialised (``TO_JSON_STRING(t)``) and searched
for each personal value, so a value that leaks through any column, at any depth, fails the test.
"""

from __future__ import annotations

import gzip
import json
from typing import TYPE_CHECKING, Any

import pytest

from tests.faults import pipeline_accounting
from tests.stack_support import unique

if TYPE_CHECKING:
    from pathlib import Path

    from tests.faults import Fault
    from tests.stack_support import StackHandle

pytestmark = pytest.mark.stack

DAY = "1714521600000"
EMAIL = "jane.doe@example.com"
ALT_EMAIL = "jane.alt@example.org"
BILLING_EMAIL = "billing.jane@example.com"
PHONE = "+447700900123"
FREE_PHONE = "(415) 555-2671"
IPV4 = "198.51.100.7"
IPV6 = "2001:db8::8a2e:370:7334"
DEVICE_ID = "B9E6D4B3-3C6F-4E0A-9F21-8E7B2C5D1A90"
AD_ID = "6D92078A-8246-4BA4-AE5B-76104861E7DC"
PUSH_TOKEN = "f07a9c4c7d3e8b1a2e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c7d"
USER_AGENT = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) JaneBrowser/9.1"
STREET = "221B Baker Street"
LAT = "51.50722"
PII = {
    "email": EMAIL,
    "email in free text": ALT_EMAIL,
    "nested email": BILLING_EMAIL,
    "phone": PHONE,
    "phone digits": "7700900123",
    "phone in free text": FREE_PHONE,
    "ipv4": IPV4,
    "ipv6": IPV6,
    "device id": DEVICE_ID,
    "advertising id": AD_ID,
    "push token": PUSH_TOKEN,
    "user agent": USER_AGENT,
    "street": STREET,
    "latitude": LAT,
    "first name": "Jane",
    "last name": "Doe",
    "birthday": "1990-04-01",
}


def context() -> dict[str, Any]:
    return {
        "ip": IPV4,
        "userAgent": USER_AGENT,
        "device": {"id": DEVICE_ID, "advertisingId": AD_ID, "token": PUSH_TOKEN, "name": "Jane's iPhone",
                   "manufacturer": "Apple", "model": "iPhone14,5"},
        "location": {"city": "London", "country": "United Kingdom", "latitude": float(LAT), "longitude": -0.1276},
        "traits": {"email": EMAIL, "phone": PHONE, "name": "Jane Doe", "address": {"street": STREET}},
        "locale": "en-GB",
        "timezone": "Europe/London",
        "library": {"name": "analytics-ios", "version": "4.1.8"},
        "page": {"url": f"https://acme.example/support?email={EMAIL}", "referrer": f"http://{IPV4}/x"},
    }


def base(kind: str, mid: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "userId": "user_8412",
        "messageId": mid,
        "timestamp": "2024-05-14T09:21:03.629Z",
        "receivedAt": "2024-05-14T09:21:04.518Z",
        "context": context(),
        **fields,
    }


def records() -> list[dict[str, Any]]:
    free_form = {
        "email": EMAIL,
        "Phone_Number": PHONE,
        "first_name": "Jane",
        "lastName": "Doe",
        "note": f"please call me at {FREE_PHONE} or mail {ALT_EMAIL}",
        "customer": {"contact": {"billingEmail": BILLING_EMAIL, "ip": IPV4, "whereabouts": f"seen from {IPV6}"}},
        "attachments": ["screenshot.png", f"from {IPV6}", f"sent by {EMAIL}"],
        "birthday": "1990-04-01",
        "address": {"street": STREET, "city": "London"},
        "client_ip": IPV6,
        "ticket_id": "T-88231",
        "priority": "high",
    }
    return [
        base("track", "pii-track", event="Support Ticket Opened", properties=free_form),
        base("page", "pii-page", name="Support", properties={"contact": EMAIL, "path": "/support"}),
        base("screen", "pii-screen", name="Profile", properties={"mobile": PHONE, "tab": "about"}),
        base("group", "pii-group", groupId="org-1", traits={"email": EMAIL, "phone": PHONE, "plan": "enterprise"}),
        base("alias", "pii-alias", previousId="anon-1"),
        base(
            "identify",
            "pii-identify",
            traits={"email": EMAIL, "phone": PHONE, "firstName": "Jane", "lastName": "Doe", "plan": "premium",
                    "address": {"street": STREET, "city": "London", "country": "GB"}},
        ),
    ]


def put(tmp: Path, recs: list[dict[str, Any]]) -> Path:
    root = tmp / unique("tree")
    folder = root / "segment-logs" / "src" / DAY
    folder.mkdir(parents=True)
    (folder / "part-1.gz").write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in recs).encode()))
    return root


def test_events_hold_no_personal_data_and_user_properties_hold_the_contact_addresses(
    local_stack: StackHandle, tmp_path: Path
) -> None:
    # GIVEN Segment calls of every type carrying email, phone, IPv4/IPv6, device and advertising ids, user agent,
    # location and context.traits, plus emails and phones hidden in free-form properties
    tenant = local_stack.add_tenant()

    # WHEN they are loaded through the stack
    local_stack.drop(tenant, put(tmp_path, records()))
    local_stack.wait()

    # THEN the five events are stored ...
    rows = local_stack.query(tenant, "SELECT event_name, TO_JSON_STRING(t) AS j FROM events t")
    assert sorted(r["event_name"] for r in rows) == [
        "Support Ticket Opened", "alias", "group", "page_viewed", "screen_viewed"
    ]
    # ... and no personal value appears anywhere in any column of any events row
    dump = "\n".join(r["j"] for r in rows)
    # TO_JSON_STRING escapes some characters; compare on the decoded JSON as well as on the raw text
    decoded = "\n".join(json.dumps(json.loads(r["j"]), ensure_ascii=False) for r in rows)
    leaks = {what: value for what, value in PII.items() if value in dump or value in decoded}
    assert leaks == {}, f"personal data in events: {sorted(leaks)}"
    # ... while non-personal metadata survives the scrub
    track = next(json.loads(r["j"]) for r in rows if r["event_name"] == "Support Ticket Opened")
    metadata = track["metadata"] if isinstance(track["metadata"], dict) else json.loads(track["metadata"])
    assert metadata["ticket_id"] == "T-88231"
    assert metadata["priority"] == "high"
    assert metadata["context"]["locale"] == "en-GB"

    # AND the user_properties row holds the contact addresses (and only it)
    [user] = local_stack.query(
        tenant, "SELECT contact_id, email_address, phone_number, push_token, country, timezone FROM user_properties"
    )
    assert user == {
        "contact_id": "user_8412",
        "email_address": EMAIL,
        "phone_number": PHONE,
        "push_token": PUSH_TOKEN,
        "country": "GB",
        "timezone": "Europe/London",
    }


def test_a_hash_mode_tenant_keeps_personal_values_joinable_but_only_inside_the_tenant(
    local_stack: StackHandle, tmp_path: Path
) -> None:
    # GIVEN two tenants in privacy mode "hash" (each gets its own random salt), one of which also names a custom
    # personal key, and the same track call for both
    first = local_stack.add_tenant(privacy="hash", pii_key="member_no")
    second = local_stack.add_tenant(privacy="hash")
    call = base("track", "hash-track", event="Ticket Opened",
                properties={"email": EMAIL, "member_no": "M-100200", "note": f"mail {ALT_EMAIL}", "priority": "high"})

    # WHEN the call is loaded into both
    local_stack.drop(first, put(tmp_path, [call]))
    local_stack.drop(second, put(tmp_path, [call]))
    local_stack.wait()

    # THEN neither tenant's events hold the personal values, only pseudonyms in their place
    def metadata(tenant: str) -> dict[str, Any]:
        [row] = local_stack.query(tenant, "SELECT TO_JSON_STRING(metadata) AS m FROM events")
        value = json.loads(row["m"])
        return value if isinstance(value, dict) else dict(json.loads(value))

    ours, theirs = metadata(first), metadata(second)
    for md in (ours, theirs):
        text = json.dumps(md)
        assert EMAIL not in text and ALT_EMAIL not in text
        assert md["email"].startswith("sha256:") and md["note"].startswith("sha256:")
        assert md["priority"] == "high"
    # AND the tenant's own extra key is personal for it (hashed), and only for it
    assert ours["member_no"].startswith("sha256:")
    assert theirs["member_no"] == "M-100200"
    # AND the same email has a different pseudonym in each tenant: pseudonyms cannot be joined across tenants
    assert ours["email"] != theirs["email"]


# -- finding 12: the routes by which PII still reached events.metadata ----------------------------------------------
ALIAS_EMAIL = "old.jane@example.com"
GROUP_EMAIL = "team@initech.example"
KEY_EMAIL = "jane.key@example.com"
INT_PHONE = 14155552671
URL_EMAIL = "jane.url@example.com"
SSN = "123-45-6789"
# every form in which one of them could be stored (raw, percent-encoded, as a number)
LEAK_FORMS = [ALIAS_EMAIL, GROUP_EMAIL, KEY_EMAIL, str(INT_PHONE), URL_EMAIL, URL_EMAIL.replace("@", "%40"), SSN]


def leak_records() -> list[dict[str, Any]]:
    url = "https://acme.example/reset?email=" + URL_EMAIL.replace("@", "%40")
    ctx = {"page": {"url": url, "path": "/reset"}, "locale": "en-GB"}
    return [
        {**base("alias", "leak-alias", previousId=ALIAS_EMAIL), "context": ctx},
        {**base("group", "leak-group", groupId=GROUP_EMAIL, traits={"plan": "pro"}), "context": ctx},
        {**base("track", "leak-track", event="Shared",
                properties={KEY_EMAIL: {"role": "admin"}, "contact": INT_PHONE, "quantity": 3,
                            "sent": 1715644800, "ref": url, "note": f"id {SSN}", "order_id": 5678901234567}),
         "context": ctx},
        {**base("page", "leak-page", name="Reset", properties={"url": url, "path": "/reset"}), "context": ctx},
    ]  # fmt: skip


@pytest.mark.scenario(
    "PII hidden in ids, keys, numbers and URLs never reaches events",
    injected="an alias previousId and a group groupId that are emails, an email as a property key, a phone number as "
    "an integer, a percent-encoded email in context.page.url and a property, an SSN; one remove-mode and one "
    "hash-mode tenant",
    findings=[12],
)
def test_pii_in_ids_keys_integers_and_encoded_urls_never_reaches_events(
    local_stack: StackHandle, tmp_path: Path, fault: Fault
) -> None:
    # GIVEN a remove-mode and a hash-mode tenant, and Segment calls hiding personal data where the scrubber missed it
    removing, hashing = local_stack.add_tenant(), local_stack.add_tenant(privacy="hash")
    recs = leak_records()
    # WHEN they are loaded through the stack
    for tenant in (removing, hashing):
        local_stack.drop(tenant, put(tmp_path, recs))
    local_stack.wait()
    # THEN no form of any of those values is in any column of any events row, in either tenant
    found, lost, duplicated = 0, 0, 0
    for tenant in (removing, hashing):
        rows = local_stack.query(tenant, "SELECT event_name, TO_JSON_STRING(t) AS j FROM events t")
        assert len(rows) == len(recs)
        dump = "\n".join(r["j"] + json.dumps(json.loads(r["j"]), ensure_ascii=False) for r in rows)
        found += sum(dump.count(value) for value in LEAK_FORMS)
        counts = pipeline_accounting(local_stack, tenant, len(recs))
        lost, duplicated = lost + counts["lost"], duplicated + counts["duplicated"]
    assert found == 0
    # AND ordinary numbers and ids survive; in hash mode the alias and group ids are pseudonyms (joinable in-tenant)
    [track] = local_stack.query(removing, "SELECT TO_JSON_STRING(metadata) AS m FROM events WHERE event_name = 'Shared'")
    metadata = json.loads(track["m"])
    metadata = metadata if isinstance(metadata, dict) else json.loads(metadata)
    assert (metadata["quantity"], metadata["sent"], metadata["order_id"]) == (3, 1715644800, 5678901234567)
    hashed = {r["event_name"]: json.loads(r["m"]) for r in local_stack.query(
        hashing, "SELECT event_name, TO_JSON_STRING(metadata) AS m FROM events WHERE event_name IN ('alias', 'group')")}
    hashed = {k: v if isinstance(v, dict) else json.loads(v) for k, v in hashed.items()}
    assert hashed["alias"]["previous_id"].startswith("sha256:") and hashed["group"]["group_id"].startswith("sha256:")
    fault.report(f"{found} personal values in events across {2 * len(recs)} rows of two tenants (remove, hash)",
                 lost=lost, duplicated=duplicated, pii_values_found=found)

"""PII policy: no personal data in event rows, whatever key or depth it hides under."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from shared.load import parse_line
from shared.privacy import PrivacyPolicy, looks_like_pii, normalise_key
from shared.warehouse.rows import EventRow, Lineage, UserPropertiesRow

EVENTS = Path(__file__).resolve().parents[1] / "events"
NOW = datetime(2024, 5, 15, tzinfo=UTC)
LINEAGE = Lineage("segment", "gs://b/o#1", 1, NOW)

# Every personal value planted in tests/events/track_with_pii.json (and its context).
PII_VALUES = [
    "jane.doe@example.com",
    "jane.alt@example.org",
    "billing.jane@example.com",
    "+44 7700 900123",
    "(415) 555-2671",
    "203.0.113.42",
    "198.51.100.7",
    "2001:db8::8a2e:370:7334",
    "B9E6D4B3-3C6F-4E0A-9F21-8E7B2C5D1A90",  # device id
    "6D92078A-8246-4BA4-AE5B-76104861E7DC",  # advertising id
    "f07a9c4c7d3e8b1a2e5f6a7b8c9d0e1f",  # push token (prefix)
    "Jane's iPhone",
    "Mozilla/5.0",
    "51.5072",  # location (the city is also in the timezone name, a column events keep)
    "-0.1276",
    "Baker Street",
    "Jane",
    "Doe",
    "1990-04-01",
    "female",
]


def sample(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    return event


def event_row(event: dict[str, Any], policy: PrivacyPolicy | None = None) -> EventRow:
    kw = {"policy": policy} if policy else {}
    row = parse_line(json.dumps(event).encode(), fmt="segment", lineage=LINEAGE, now=NOW, **kw)
    assert isinstance(row, EventRow), row
    return row


@pytest.mark.parametrize("name", ["track_with_pii", "track", "page", "screen", "group", "alias"])
def test_no_pii_anywhere_in_serialised_event_rows(name: str) -> None:
    # GIVEN records carrying email, phone, IP, device id, advertising id, userAgent and location
    event = sample(name)
    if name != "track_with_pii":
        event["context"] = sample("track_with_pii")["context"] | event.get("context", {})
        event["context"]["userAgent"] = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X)"
    # WHEN parsed and serialised for BigQuery
    out = json.dumps(event_row(event).to_bq(NOW), ensure_ascii=False)
    # THEN none of the personal values appears anywhere in the output
    leaked = [value for value in PII_VALUES if value in out]
    assert not leaked, out


def test_pii_sample_keeps_the_non_personal_facts() -> None:
    row = event_row(sample("track_with_pii"))
    assert row.metadata["priority"] == "high" and row.metadata["ticket_id"] == "T-88231"
    assert row.metadata["attachments"] == ["screenshot.png"]
    assert row.metadata["context"]["app"]["name"] == "Acme"  # app/os/library names describe software, not people
    assert row.metadata["context"]["os"]["name"] == "iOS"


def test_hash_mode_replaces_values_with_salted_hashes() -> None:
    # GIVEN a hashing policy with a salt
    policy = PrivacyPolicy(mode="hash", salt=SecretStr("tenant-salt"))
    row = event_row(sample("track_with_pii"), policy)
    out = json.dumps(row.to_bq(NOW))
    # THEN personal keys keep their place with a sha256 pseudonym, and no value leaks
    assert row.metadata["email"].startswith("sha256:")
    assert row.metadata["email"] == policy.pseudonym("jane.doe@example.com")
    assert row.metadata["email"] != PrivacyPolicy(mode="hash", salt=SecretStr("other")).pseudonym("jane.doe@example.com")
    assert not [v for v in PII_VALUES if v in out]
    # AND dropped context paths stay dropped even when hashing
    assert "ip" not in row.metadata["context"] and "device" in row.metadata["context"]
    assert "id" not in row.metadata["context"]["device"]


@pytest.mark.parametrize(
    "key", ["email", "Email", "EMAIL_ADDRESS", "emailAddress", "first_name", "firstName", "FIRST-NAME",
            "phone_number", "phoneNumber", "billingEmail", "customer_phone_number", "dateOfBirth", "ip", "userAgent"],
)  # fmt: skip
def test_pii_keys_match_case_and_separator_insensitively(key: str) -> None:
    assert PrivacyPolicy().is_pii_key(key)


@pytest.mark.parametrize("key", ["plan", "order_id", "total", "currency", "title", "path", "sku", "iphone_model"])
def test_ordinary_keys_are_kept(key: str) -> None:
    assert not PrivacyPolicy().is_pii_key(key)


@pytest.mark.parametrize(
    "value",
    ["jane@example.com", "write to jane.doe+x@mail.co.uk", "+14155552671", "(415) 555-2671", "415-555-2671",
     "+44 20 7946 0958", "415.555.2671", "192.168.1.20", "from 10.0.0.1.", "2001:db8::1", "::1",
     "fe80::1ff:fe23:4567:890a", "https://x.example/?ref=jane@example.com"],
)  # fmt: skip
def test_values_that_look_personal_are_detected(value: str) -> None:
    assert looks_like_pii(value)


@pytest.mark.parametrize(
    "value",
    ["2024-01-01", "2024-05-14T09:21:03.629Z", "2024-05-14T14:51:09+05:30", "10.15.7", "17.4.1", "Signed Up",
     "https://acme.example/pricing?plan=pro", "en-US", "12:30:45", "1234567", "45790-32", "1700000000000",
     "a1b2c3d4-1111-2222-3333-444455556666", "iPhone14,5", "$19.99", "std::vector"],
)  # fmt: skip
def test_ordinary_values_are_kept(value: str) -> None:
    assert not looks_like_pii(value)


def test_scrub_walks_lists_and_nested_dicts_without_mutating_input() -> None:
    data = {"items": [{"name": "x", "qty": 1}, "call +14155552671", ["ok", "10.0.0.1"]], "deep": {"a": {"email": 1}}}
    before = json.dumps(data)
    out = PrivacyPolicy().scrub(data)
    assert out == {"items": [{"qty": 1}, ["ok"]], "deep": {"a": {}}}
    assert json.dumps(data) == before


def test_policy_is_configurable() -> None:
    # GIVEN a policy that also treats "plan" as personal, keeps "name", and keeps no context
    policy = PrivacyPolicy(pii_keys=frozenset({"Plan", "email"}), pii_key_fragments=(), context_keep=())
    assert normalise_key("Plan") in policy.pii_keys
    row = event_row(sample("group"), policy)
    assert "plan" not in row.metadata["traits"] and row.metadata["traits"]["name"] == "Initech"
    assert "context" not in row.metadata
    # AND value scanning can be switched off
    assert PrivacyPolicy(scan_values=False).scrub({"note": "jane@example.com"}) == {"note": "jane@example.com"}


def test_identify_keeps_contact_data_in_user_properties_only() -> None:
    # GIVEN an identify call WHEN parsed THEN contact addresses land in user_properties (where sending needs them)
    row = parse_line((EVENTS / "identify.json").read_bytes(), fmt="segment", lineage=LINEAGE, now=NOW)
    assert isinstance(row, UserPropertiesRow)
    assert row.email_address == "jane.doe@example.com"


def test_a_tenants_privacy_config_compiles_to_its_own_cached_policy() -> None:
    from shared.config import PrivacyConfig
    from shared.privacy import policy_for

    # GIVEN a tenant config that hashes, names an extra personal key and keeps only the locale of the context
    config = PrivacyConfig(mode="hash", extra_pii_keys=("member_no",), context_keep=("locale",))
    # WHEN it is compiled with two different salts
    a, b = policy_for(config, "salt-a-0123456789"), policy_for(config, "salt-b-0123456789")
    event = sample("track_with_pii")
    event["properties"]["member_no"] = "M-100200"
    row_a, row_b = event_row(event, a), event_row(event, b)
    # THEN the extra key is pseudonymised, the context is cut to the allow-list, and the salt changes pseudonyms
    assert row_a.metadata["member_no"].startswith("sha256:")
    assert set(row_a.metadata["context"]) == {"locale"}
    assert row_a.metadata["member_no"] != row_b.metadata["member_no"]
    # AND compiling the same config again returns the same policy (and so the same warm memo)
    assert policy_for(config, "salt-a-0123456789") is a
    # AND the default config is the built-in policy's behaviour
    assert event_row(sample("track_with_pii"), policy_for(PrivacyConfig())).metadata == event_row(
        sample("track_with_pii")
    ).metadata


def test_hash_mode_without_a_salt_is_refused() -> None:
    from shared.config import PrivacyConfig
    from shared.privacy import policy_for

    # GIVEN / WHEN hash mode is compiled without a salt / THEN it is refused (an unsalted sha256 of an email is
    # reversible by lookup)
    with pytest.raises(ValueError, match="needs a salt"):
        policy_for(PrivacyConfig(mode="hash"))


def test_the_loader_refuses_a_hash_mode_tenant_without_a_salt_with_a_fix(tmp_path: Path, monkeypatch: Any) -> None:
    from shared import config
    from shared.config import Tenant
    from shared.errors import SetupError
    from shared.load import pipeline
    from shared.load.pipeline import tenant_policy

    # GIVEN a hash-mode tenant and a secrets file without its salt
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"acme": {}}))
    monkeypatch.setenv("LANDLINE_SECRETS_FILE", str(secrets))
    config.settings.cache_clear()
    tenant = Tenant(
        name="acme", region="europe-west1", bucket="acme-segment", dataset="landline_acme", privacy={"mode": "hash"}
    )
    try:
        # WHEN its policy is resolved / THEN a setup error says where the salt goes (the message is retried, never
        # loaded unhashed)
        with pytest.raises(SetupError, match="has no privacy salt") as err:
            tenant_policy(tenant)
        assert "salt" in err.value.fix
        # AND once the salt is there, the policy hashes
        secrets.write_text(json.dumps({"acme": {"privacy": {"salt": "0123456789abcdef"}}}))
        pipeline._secrets.cache_clear()  # the file source re-reads on mtime change; two writes may share a tick
        assert tenant_policy(tenant).mode == "hash"
    finally:
        monkeypatch.undo()
        config.settings.cache_clear()


# -- finding 12: PII that reached events.metadata by other routes -------------------------------------------------
EMAIL = "jane.doe@example.com"
SALT = "tenant-salt-0123456789"


def _segment(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "userId": "user_8412", "messageId": f"m-{kind}", "timestamp": "2024-05-14T09:21:03Z",
            **fields}  # fmt: skip


@pytest.mark.parametrize(("kind", "field", "column"), [("alias", "previousId", "previous_id"),
                                                       ("group", "groupId", "group_id")])  # fmt: skip
def test_alias_previous_id_and_group_id_holding_an_email_are_scrubbed(kind: str, field: str, column: str) -> None:
    # GIVEN an alias / group call whose previousId / groupId is an email address
    event = _segment(kind, **{field: EMAIL})
    # WHEN parsed in remove mode THEN the value is gone (the key with it: there is nothing left to say)
    assert column not in event_row(event).metadata
    assert EMAIL not in json.dumps(event_row(event).to_bq(NOW))
    # AND in hash mode it is the tenant's pseudonym, so the alias stays joinable inside the tenant
    policy = PrivacyPolicy(mode="hash", salt=SecretStr(SALT))
    assert event_row(event, policy).metadata[column] == policy.pseudonym(EMAIL)
    # AND an ordinary id is kept as it is
    assert event_row(_segment(kind, **{field: "anon-507f191e"})).metadata[column] == "anon-507f191e"


def test_keys_that_are_emails_or_phone_numbers_are_scrubbed() -> None:
    data = {EMAIL: {"role": "admin"}, "+1 415 555 2671": 3, "10.0.0.1": "seen", "plan": {"jane@x.example": True}, "ok": 1}
    # remove mode: the entry goes (key and value), whatever the value is
    assert PrivacyPolicy().scrub(data) == {"plan": {}, "ok": 1}
    # hash mode: the key becomes its pseudonym, its value is scrubbed like any other
    policy = PrivacyPolicy(mode="hash", salt=SecretStr(SALT))
    out = policy.scrub(data)
    assert out[policy.pseudonym(EMAIL)] == {"role": "admin"}
    assert out[policy.pseudonym("+1 415 555 2671")] == 3
    assert out["plan"] == {policy.pseudonym("jane@x.example"): True}
    assert EMAIL not in json.dumps(out)
    # AND ordinary keys (ids, dates, versions, counts) are kept
    ordinary = {"2024-05-14": 3, "user_8412": 1, "17.4.1": 2, "1234567": 4, "sku-45790-32": 5}
    assert PrivacyPolicy().scrub(ordinary) == ordinary


@pytest.mark.parametrize(
    "phone", [14155552671, 447700900123, 4155552671 + 10**9, 33612345678, 861012345678901, 7700900123 * 10]
)  # fmt: skip
def test_integers_that_can_only_be_phone_numbers_are_scrubbed(phone: int) -> None:
    # GIVEN a phone number stored as a JSON integer (10-15 digits, not an epoch time), under an innocent key
    data = {"contact": phone, "alternatives": [phone, 2], "nested": {"n": phone}}
    # THEN it is removed (or hashed) wherever it is
    assert PrivacyPolicy().scrub(data) == {"alternatives": [2], "nested": {}}
    policy = PrivacyPolicy(mode="hash", salt=SecretStr(SALT))
    assert policy.scrub(data)["contact"] == policy.pseudonym(phone)


def test_ordinary_numbers_are_kept() -> None:
    # GIVEN counts, prices, epoch seconds/ms, ids and quantities: the numbers events are full of
    data = {
        "quantity": 3, "price": 19.99, "price_cents": 1999, "revenue_micros": 123_450_000_000, "seats": 1_000_000,
        "sent_at": 1715644800, "ts": 1715644800123, "expires": 4102444800, "order_id": 5678901234567,
        "product_ids": [5678901234567, 5678901234568], "file_bytes": 12_000_000_000, "big": 10**20,
        "negative": -14155552671, "flag": True, "zero": 0,
    }  # fmt: skip
    # THEN none of them is mistaken for a phone number
    assert PrivacyPolicy().scrub(data) == data
    assert PrivacyPolicy(mode="hash", salt=SecretStr(SALT)).scrub(data) == data


@pytest.mark.parametrize(
    "value",
    ["jane%40example.com", "https://acme.example/support?email=jane.doe%40example.com&x=1",
     "jane%2540example.com", "%2B14155552671", "call%20%2B44%2020%207946%200958", "ip=10.0.0.1%26"],
)  # fmt: skip
def test_url_encoded_personal_values_are_detected(value: str) -> None:
    assert looks_like_pii(value)


@pytest.mark.parametrize("value", ["/search?q=red%20shoes", "100%25 cotton", "50%", "a%zzb", "%E2%82%AC19.99"])
def test_url_encoded_ordinary_values_are_kept(value: str) -> None:
    assert not looks_like_pii(value)


@pytest.mark.parametrize("value", ["123-45-6789", "SSN 078-05-1120", "ssn:219-09-9999"])
def test_social_security_numbers_are_detected(value: str) -> None:
    assert looks_like_pii(value)


def test_a_url_encoded_email_in_the_page_url_never_reaches_metadata() -> None:
    # GIVEN a page call whose context.page.url and properties carry a percent-encoded email
    url = "https://acme.example/reset?email=jane.doe%40example.com"
    event = _segment("page", name="Reset", properties={"url": url, "path": "/reset"},
                     context={"page": {"url": url, "path": "/reset"}})  # fmt: skip
    out = json.dumps(event_row(event).to_bq(NOW))
    # THEN neither the encoded nor the decoded form is stored, and the path survives
    assert "jane.doe" not in out
    assert event_row(event).metadata["context"]["page"] == {"path": "/reset"}


# -- finding 22: the salt is a secret ------------------------------------------------------------------------------
def test_the_salt_never_appears_in_repr_str_or_dumps_of_a_policy() -> None:
    from shared.config import PrivacyConfig
    from shared.privacy import policy_for

    for policy in (PrivacyPolicy(mode="hash", salt=SecretStr(SALT)), policy_for(PrivacyConfig(mode="hash"), SALT)):
        shown = [repr(policy), str(policy), policy.model_dump_json(), repr(policy.model_dump()), f"{policy!r}",
                 repr(policy.scrubber)]  # fmt: skip
        assert not [s for s in shown if SALT in s]
        # AND it still salts the pseudonyms
        assert policy.pseudonym(EMAIL) != PrivacyPolicy(mode="hash", salt=SecretStr("another-salt-012345")).pseudonym(EMAIL)

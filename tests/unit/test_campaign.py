"""Campaign files and shard messages: a bad definition is refused naming its field before anything is written, the arms'
shares are exact integers the assignment SQL can use, and each contact's send time follows its own clock."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.campaigns.campaign import (
    HOLDOUT,
    SHARE_SCALE,
    Campaign,
    CampaignError,
    SendAt,
    SendLocal,
    SendNow,
    SendWindow,
    load_campaign,
    parse_campaign,
    planned_send_at,
)
from shared.push.fanout import SHARD_CHUNKS
from shared.push.shards import group_key, parse_shard
from shared.push.tick import Candidate

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "campaigns"
PARIS = ZoneInfo("Europe/Paris")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def variant(vid: str, share: float | None = None, **texts: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"id": vid, "title": "Hello", "body": "Hi {{ first_name | default: 'there' }}", **texts}
    if share is not None:
        out["share"] = share
    return out


def definition(**fields: Any) -> dict[str, Any]:
    return {"name": "spring", "audience": "with-token", "variants": [variant("a"), variant("b")], **fields}


def refusal(**fields: Any) -> str:
    with pytest.raises(CampaignError) as caught:
        parse_campaign(definition(**fields))
    return str(caught.value)


# -- files ------------------------------------------------------------------------------------------------------------
def test_the_sample_campaign_loads() -> None:
    # GIVEN the sample shipped with the repository
    # WHEN it is loaded
    campaign = load_campaign(SAMPLES / "spring.yaml")
    # THEN every field reads as written
    assert campaign.name == "spring" and campaign.audience == "with-token"
    assert [v.id for v in campaign.variants] == ["a", "b"]
    assert campaign.variants[1].data == {"screen": "sale"}
    assert campaign.holdout == 0.2
    assert campaign.send == SendNow()
    assert campaign.conversion is not None and campaign.conversion.events == ["Order Completed"]
    assert campaign.stratify_by == ["activity", "country"]
    assert campaign.arm_shares() == [(HOLDOUT, 200_000), ("a", 400_000), ("b", 400_000)]


def test_a_json_file_loads_like_its_yaml(tmp_path: Path) -> None:
    # GIVEN the sample stored as JSON (what to_json writes)
    campaign = load_campaign(SAMPLES / "spring.yaml")
    path = tmp_path / "spring.json"
    path.write_text(campaign.to_json())
    # WHEN it is loaded THEN it is the same campaign
    assert load_campaign(path) == campaign


@pytest.mark.parametrize(
    ("text", "says"),
    [("- name: spring\n", "a campaign file is a mapping"), ("", "a campaign file is a mapping"),
     ("name: [spring\n", "not YAML or JSON"), ('{"name": "spring",', "not YAML or JSON")],
    ids=["list", "empty", "broken-yaml", "broken-json"],
)  # fmt: skip
def test_a_file_that_is_not_a_campaign_mapping_names_the_file(tmp_path: Path, text: str, says: str) -> None:
    # GIVEN a file that is not a mapping, or not YAML at all
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    # WHEN it is loaded THEN the error names the file and says what is wrong
    with pytest.raises(CampaignError) as caught:
        load_campaign(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert says in str(caught.value)


def test_a_bad_field_in_a_file_is_named_with_the_file(tmp_path: Path) -> None:
    # GIVEN a file whose holdout is out of range
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(definition(holdout=1)))
    # WHEN it is loaded THEN the message names the file, then the field
    with pytest.raises(CampaignError) as caught:
        load_campaign(path)
    assert str(caught.value).startswith(f"{path}: holdout: ")


def test_parse_campaign_prefixes_where() -> None:
    with pytest.raises(CampaignError) as caught:
        parse_campaign(definition(name="Not A Name"), where="from the API")
    assert str(caught.value).startswith("from the API: name: ")


# -- variants and shares --------------------------------------------------------------------------------------------
def test_an_equal_split_with_a_holdout_adds_up_exactly() -> None:
    # GIVEN three variants without shares and a 20% holdout
    campaign = parse_campaign(definition(variants=[variant("a"), variant("b"), variant("c")], holdout=0.2))
    # WHEN the arms' shares are computed
    shares = campaign.arm_shares()
    # THEN the holdout comes first, they add up to a million exactly, and each is within 1 of its exact share
    assert [arm for arm, _ in shares] == [HOLDOUT, "a", "b", "c"]
    assert sum(n for _, n in shares) == SHARE_SCALE == 1_000_000
    assert shares[0] == (HOLDOUT, 200_000)
    for _, n in shares[1:]:
        assert abs(n - 0.8 / 3 * SHARE_SCALE) <= 1


def test_explicit_shares_are_kept_and_no_holdout_means_no_holdout_arm() -> None:
    # GIVEN explicit shares that add up to 1 without a holdout
    campaign = parse_campaign(definition(variants=[variant("a", 0.7), variant("b", 0.3)]))
    # THEN the arms are the variants only, with those shares
    assert campaign.arm_shares() == [("a", 700_000), ("b", 300_000)]


def test_explicit_shares_and_the_holdout_must_add_up_to_one() -> None:
    # GIVEN shares of 0.5 and 0.4 with a 0.2 holdout (1.1 in all)
    says = refusal(variants=[variant("a", 0.5), variant("b", 0.4)], holdout=0.2)
    # THEN it is refused, saying so
    assert "add up to 1" in says and "1.1" in says
    assert "add up to 1" in refusal(variants=[variant("a", 0.3), variant("b", 0.3)])


ADAPTIVE = {"allocation": "adaptive", "waves": {"count": 4}, "conversion": {"events": ["Order Completed"]}}


def test_an_adaptive_campaign_in_waves_loads() -> None:
    campaign = parse_campaign(definition(**ADAPTIVE, holdout=0.1))
    assert campaign.waves is not None and (campaign.waves.count, campaign.waves.every_hours) == (4, 24)
    assert campaign.allocation == "adaptive"


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({**ADAPTIVE, "waves": None}, "needs waves"),
        ({**ADAPTIVE, "conversion": None}, "needs conversion"),
        ({**ADAPTIVE, "variants": [variant("a")]}, "at least two variants"),
        ({**ADAPTIVE, "stratify_by": ["country"]}, "activity in stratify_by"),
        ({**ADAPTIVE, "variants": [variant("a", 0.5), variant("b", 0.5)]}, "no variant shares"),
        ({**ADAPTIVE, "send": {"at": "2025-03-10T10:00:00Z"}}, "an absolute time would send every wave at once"),
        ({"waves": {"count": 2}, "send": {"local_time": "18:00", "date": "2025-03-10"}}, "send must be now"),
        ({"waves": {"count": 1}}, "waves.count"),
    ],
)
def test_an_adaptive_or_wave_campaign_that_cannot_work_is_refused_saying_why(fields: dict[str, Any], says: str) -> None:
    assert says in refusal(**{k: v for k, v in fields.items() if v is not None})


def test_shares_given_to_some_variants_only_are_refused() -> None:
    says = refusal(variants=[variant("a", 0.5), variant("b")], holdout=0.5)
    assert "give a share to every variant or to none" in says


def test_duplicate_variant_ids_are_refused() -> None:
    says = refusal(variants=[variant("a"), variant("a")])
    assert "variants: ids must differ (got a, a)" in says


def test_a_variant_named_holdout_is_refused() -> None:
    says = refusal(variants=[variant("a"), variant(HOLDOUT)])
    assert "variants.1.id: 'holdout' is the control group's arm" in says


def test_no_variants_are_refused() -> None:
    assert refusal(variants=[]).startswith("campaign: variants: ")


@given(
    # At least one millionth (the scale's resolution): smaller shares are refused (the test after this one).
    holdout=st.one_of(st.just(0.0), st.floats(min_value=1e-6, max_value=0.9)),
    count=st.integers(min_value=1, max_value=26),
)
def test_arm_shares_add_up_exactly_for_any_holdout_and_variant_count(holdout: float, count: int) -> None:
    # GIVEN any holdout and 1 to 26 variants sharing the rest equally (hypothesis)
    variants = [variant(chr(ord("a") + i)) for i in range(count)]
    campaign = parse_campaign(definition(variants=variants, holdout=holdout))
    # WHEN the arms' shares are computed
    shares = campaign.arm_shares()
    # THEN the holdout comes first iff there is one, the shares add up exactly, and each is within 1 of exact
    assert (shares[0][0] == HOLDOUT) is (holdout > 0)
    assert [arm for arm, _ in shares if arm != HOLDOUT] == [v["id"] for v in variants]
    assert sum(n for _, n in shares) == SHARE_SCALE
    exact = {HOLDOUT: holdout, **{v["id"]: (1 - holdout) / count for v in variants}}
    for arm, n in shares:
        assert n >= 1
        assert abs(n - exact[arm] * SHARE_SCALE) <= 1


@pytest.mark.parametrize(
    "fields",
    [{"holdout": 1e-17, "variants": [variant("a")]},
     {"variants": [variant("a", 4e-7), variant("b", 4e-7), variant("c", 1 - 8e-7)]}],
    ids=["tiny-holdout", "tiny-explicit-shares"],
)  # fmt: skip
def test_a_share_below_a_millionth_is_refused(fields: dict[str, Any]) -> None:
    # GIVEN arms whose shares are below one millionth, the assignment's resolution (found by hypothesis: rounding
    # them up to one millionth made the shares add up to more than SHARE_SCALE)
    # WHEN the campaign is parsed THEN it is refused, naming the arms
    with pytest.raises(CampaignError, match="below one millionth"):
        parse_campaign(definition(**fields))


# -- stratification and templates -----------------------------------------------------------------------------------
def test_stratify_by_an_unknown_column_is_refused_naming_it() -> None:
    says = refusal(stratify_by=["activity", "plan"])
    assert says.startswith("campaign: stratify_by: unknown property 'plan'")


@pytest.mark.parametrize(
    "keys", [["properties.plan"], ["activity"], ["activity", "country", "timezone", "properties.plan"], []]
)
def test_stratify_by_activity_columns_and_properties_is_accepted(keys: list[str]) -> None:
    assert parse_campaign(definition(stratify_by=keys)).stratify_by == keys


def test_stratify_by_a_name_twice_is_refused() -> None:
    assert "stratify_by: a property is named twice" in refusal(stratify_by=["country", "country"])


def test_stratify_by_defaults_to_activity_and_country() -> None:
    assert parse_campaign(definition()).stratify_by == ["activity", "country"]


@pytest.mark.parametrize(
    ("texts", "field", "says"),
    [({"body": "{% include 'x' %}"}, "body", "tag 'include' is not allowed"),
     ({"title": "{{ x.__class__ }}"}, "title", "a name starting with '_' is not allowed"),
     ({"data": {"screen": "{{ x.__class__ }}"}}, "data.screen", "a name starting with '_' is not allowed"),
     ({"deep_link": "app://{% render 'x' %}"}, "deep_link", "tag 'render' is not allowed")],
    ids=["body-include", "title-internals", "data-internals", "deep-link-render"],
)  # fmt: skip
def test_a_refused_template_is_refused_at_parse_time_naming_its_field(
    texts: dict[str, Any], field: str, says: str
) -> None:
    # GIVEN a second variant with one template the renderer would refuse
    # WHEN the campaign is parsed THEN it is refused, naming the variant and the field
    message = refusal(variants=[variant("a"), variant("b", **texts)])
    assert f"variants.1: {field}: " in message
    assert says in message


# -- send times -----------------------------------------------------------------------------------------------------
def test_a_window_must_open_before_it_closes() -> None:
    for window in (["21:00", "09:00"], ["09:00", "09:00"]):
        assert "give [start, end] with start before end" in refusal(send={"window": window})


def test_a_send_at_is_the_same_instant_everywhere() -> None:
    send = SendAt(at=datetime.fromisoformat("2026-03-10T11:00:00+01:00"))
    at = planned_send_at(send, PARIS, datetime(2026, 3, 1, tzinfo=UTC))
    assert at == datetime(2026, 3, 10, 10, 0, tzinfo=UTC) and at.tzinfo is UTC
    assert planned_send_at(send, ZoneInfo("Asia/Tokyo"), datetime(2026, 3, 1, tzinfo=UTC)) == at


def test_send_now_is_the_launch() -> None:
    launched_at = datetime(2026, 3, 1, 9, 30, 15, tzinfo=UTC)
    assert planned_send_at(SendNow(), PARIS, launched_at) == launched_at


@pytest.mark.parametrize(
    ("day", "utc_hour"), [(date(2026, 1, 15), 17), (date(2026, 7, 15), 16)], ids=["winter-cet", "summer-cest"]
)
def test_send_local_follows_the_contacts_clock_across_dst(day: date, utc_hour: int) -> None:
    # GIVEN 18:00 local in Paris, on a winter day (UTC+1) or a summer day (UTC+2)
    send = SendLocal(local_time="18:00", date=day)
    # WHEN the send time is planned THEN it is 18:00 Paris time, in UTC
    at = planned_send_at(send, PARIS, datetime(2026, 1, 1, tzinfo=UTC))
    assert at == datetime(day.year, day.month, day.day, utc_hour, 0, tzinfo=UTC)
    assert at.utcoffset() == timedelta(0)


WINDOW = SendWindow(window=("09:00", "21:00"))  # Paris in January is UTC+1: open 08:00Z to 20:00Z


@pytest.mark.parametrize(
    ("launched_at", "expected"),
    [(datetime(2026, 1, 15, 6, 0, tzinfo=UTC), datetime(2026, 1, 15, 8, 0, tzinfo=UTC)),
     (datetime(2026, 1, 15, 12, 34, tzinfo=UTC), datetime(2026, 1, 15, 12, 34, tzinfo=UTC)),
     (datetime(2026, 1, 15, 20, 30, tzinfo=UTC), datetime(2026, 1, 16, 8, 0, tzinfo=UTC)),
     (datetime(2026, 1, 15, 20, 0, tzinfo=UTC), datetime(2026, 1, 16, 8, 0, tzinfo=UTC)),
     (datetime(2026, 1, 15, 23, 30, tzinfo=UTC), datetime(2026, 1, 16, 8, 0, tzinfo=UTC))],
    ids=["before-it-opens", "inside", "after-it-closes", "as-it-closes", "after-local-midnight"],
)  # fmt: skip
def test_send_window_sends_now_or_when_the_window_next_opens(launched_at: datetime, expected: datetime) -> None:
    # GIVEN a daily 09:00-21:00 window and a contact in Paris
    # WHEN the send time is planned at launch THEN it is the launch if the window is open, else its next opening
    at = planned_send_at(WINDOW, PARIS, launched_at)
    assert at == expected
    assert at.utcoffset() == timedelta(0)


def test_send_window_from_a_future_date_opens_that_day() -> None:
    # GIVEN a window starting on a later date than the launch, launched while today's window is open
    send = SendWindow(window=("09:00", "21:00"), date=date(2026, 1, 20))
    # WHEN the send time is planned THEN it is that date's opening
    assert planned_send_at(send, PARIS, datetime(2026, 1, 15, 12, 0, tzinfo=UTC)) == datetime(
        2026, 1, 20, 8, 0, tzinfo=UTC
    )


def test_send_window_from_a_past_date_starts_at_the_launch_day() -> None:
    send = SendWindow(window=("09:00", "21:00"), date=date(2026, 1, 1))
    launched_at = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
    assert planned_send_at(send, PARIS, launched_at) == launched_at


def test_launch_at_is_normalised_to_utc() -> None:
    campaign = parse_campaign(definition(launch_at="2026-03-10T10:00:00+02:00"))
    assert campaign.launch_at == datetime(2026, 3, 10, 8, 0, tzinfo=UTC)
    assert campaign.launch_at is not None and campaign.launch_at.tzinfo is UTC


def test_a_launch_at_without_timezone_is_refused() -> None:
    assert refusal(launch_at="2026-03-10T10:00:00").startswith("campaign: launch_at: ")


# -- storage --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "send",
    [{"now": True}, {"at": "2026-03-10T11:00:00+01:00"}, {"local_time": "18:00", "date": "2026-03-10"},
     {"window": ["09:00", "21:00"]}, {"window": ["09:00", "21:00"], "date": "2026-03-10"}],
    ids=["now", "at", "local", "window", "window-from"],
)  # fmt: skip
def test_to_json_reads_back_as_the_same_campaign(send: dict[str, Any]) -> None:
    # GIVEN a campaign with every optional field set, and each kind of send
    campaign = parse_campaign(
        definition(
            description="spring sale",
            variants=[variant("a", 0.45, deep_link="app://sale", data={"screen": "sale"}), variant("b", 0.45)],
            holdout=0.1,
            send=send,
            expires_after_hours=12,
            conversion={"events": ["Order Completed"], "within_hours": 24},
            stratify_by=["properties.plan"],
            launch_at="2026-03-09T08:00:00Z",
        )
    )
    # WHEN it is stored and read back THEN it is equal, with the same kind of send
    again = Campaign.from_json(campaign.to_json())
    assert again == campaign
    assert type(again.send) is type(campaign.send)
    assert again.arm_shares() == campaign.arm_shares()


def test_a_default_campaign_round_trips_through_a_minimal_json() -> None:
    campaign = parse_campaign(definition())
    assert json.loads(campaign.to_json()) == definition()
    assert Campaign.from_json(campaign.to_json()) == campaign


# -- shards ---------------------------------------------------------------------------------------------------------
def test_parse_shard_returns_the_chunks() -> None:
    assert parse_shard(b'{"chunks": ["c-1", "c-2"]}') == ["c-1", "c-2"]


def test_parse_shard_keeps_at_most_four_messages_worth_of_chunks() -> None:
    chunks = [f"c-{i}" for i in range(SHARD_CHUNKS * 4 + 3)]
    assert parse_shard(json.dumps({"chunks": chunks}).encode()) == chunks[: SHARD_CHUNKS * 4]


@pytest.mark.parametrize(
    "data",
    [b'{"chunks": []}', b'{"chunks": [""]}', b'{"chunks": ["c-1", 2]}', b'{"chunks": "c-1"}', b'{"chunks": null}',
     b"{}", b'["c-1"]', b"null", b"not json", b"\xff"],
    ids=["empty", "empty-name", "number", "string", "null-chunks", "no-chunks", "list", "null", "not-json",
         "not-utf8"],
)  # fmt: skip
def test_parse_shard_refuses_anything_else(data: bytes) -> None:
    with pytest.raises(ValueError):
        parse_shard(data)


def candidate(**fields: Any) -> Candidate:
    row: Candidate = {
        "message_id": "m-1", "contact_id": "c-1", "provider": None, "title": "t", "body": "b", "data": {},
        "deep_link": None, "send_at": None, "local_send_time": None, "expires_at": None, "collapse_key": None,
        "priority": None, "deferrals": 0, "policy_deferrals": 0, "last_retry_at": None, "campaign": "spring",
        "chunk": "k-1", "push_token": "tok", "country": "FR", "timezone": "Europe/Paris", "properties": {},
        "token_dead": None,
    }  # fmt: skip
    row.update(fields)  # type: ignore[typeddict-item]
    return row


SEND_AT = datetime(2026, 3, 10, 10, 0, 0, 123456, tzinfo=UTC)
RETRY_AT = datetime(2026, 3, 10, 10, 5, 30, 654321, tzinfo=UTC)


def micros(at: datetime) -> int:
    return (at - EPOCH) // timedelta(microseconds=1)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [({"deferrals": 0}, ("k-1", 0, micros(SEND_AT))),
     ({"deferrals": 0, "last_retry_at": RETRY_AT}, ("k-1", 0, micros(SEND_AT))),
     ({"deferrals": 2, "last_retry_at": RETRY_AT}, ("k-1", 2, micros(RETRY_AT))),
     ({"deferrals": 1, "last_retry_at": None}, ("k-1", 1, micros(SEND_AT))),
     ({"deferrals": 0, "send_at": None}, ("k-1", 0, 0))],
    ids=["first-attempt", "retry-time-ignored-without-deferral", "deferred", "deferred-without-retry-time",
         "no-send-time"],
)  # fmt: skip
def test_group_key_is_chunk_attempt_and_due_instant(fields: dict[str, Any], expected: tuple[str, int, int]) -> None:
    # GIVEN a due row of a chunk, first attempt or deferred
    row = candidate(**{"send_at": SEND_AT, **fields})
    # WHEN its claim group is computed THEN the due instant is the retry time once deferred, else the planned time
    assert group_key(row) == expected


def test_group_key_is_the_same_instant_in_any_timezone() -> None:
    paris = SEND_AT.astimezone(PARIS)
    assert group_key(candidate(send_at=paris)) == group_key(candidate(send_at=SEND_AT))


def test_a_best_time_fallback_hour_is_a_local_hour() -> None:
    # GIVEN best-time campaigns naming the hour for contacts without history
    # WHEN one names 19:00 and another 24
    # THEN the first is kept, and the second is refused naming the field and the range
    parsed = parse_campaign(definition(send={"best_time": {"fallback_hour": 19}}))
    assert parsed.send.best_time.fallback_hour == 19  # type: ignore[union-attr]
    message = refusal(send={"best_time": {"fallback_hour": 24}})
    assert "fallback_hour" in message and "23" in message

"""Push policy decisions (pure): opt-out, tokens, quiet hours across midnight and DST, frequency caps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from shared.config import PushPolicy
from shared.push.policy import ContactFacts, decide, local_send_time_utc, quiet_until

NIGHT = PushPolicy(quiet_hours_start="21:00", quiet_hours_end="08:00", frequency_cap=2)


def facts(**kw: object) -> ContactFacts:
    return ContactFacts(contact_id="c", push_token="tok", **kw)  # type: ignore[arg-type]


def test_quiet_hours_across_midnight_defer_to_the_morning_in_the_contacts_zone() -> None:
    # GIVEN 23:30 in Tokyo (14:30 UTC) and quiet hours 21:00-08:00
    now = datetime(2026, 11, 26, 14, 30, tzinfo=UTC)
    # WHEN deciding THEN the message is deferred to 08:00 Tokyo the next day (23:00 UTC)
    decision = decide(facts(timezone="Asia/Tokyo"), NIGHT, now)
    assert decision.action == "defer" and decision.reason == "quiet_hours"
    assert decision.until == datetime(2026, 11, 26, 23, 0, tzinfo=UTC)


def test_after_midnight_the_same_morning_is_the_end() -> None:
    # 02:00 in Paris (01:00 UTC) -> 08:00 Paris the same day (07:00 UTC)
    until = quiet_until(datetime(2026, 11, 27, 1, 0, tzinfo=UTC), NIGHT, ZoneInfo("Europe/Paris"))
    assert until == datetime(2026, 11, 27, 7, 0, tzinfo=UTC)


def test_outside_quiet_hours_and_unknown_zone_is_utc() -> None:
    noon = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    assert decide(facts(timezone="Not/AZone"), NIGHT, noon).action == "send"
    assert decide(facts(timezone=None), NIGHT, noon).action == "send"


def test_dst_change_night_still_ends_at_local_morning() -> None:
    # GIVEN the night Europe/Paris leaves summer time (2026-10-25) WHEN it is 03:30 local (02:30 UTC)
    until = quiet_until(datetime(2026, 10, 25, 2, 30, tzinfo=UTC), NIGHT, ZoneInfo("Europe/Paris"))
    # THEN the window ends at 08:00 CET = 07:00 UTC
    assert until == datetime(2026, 10, 25, 7, 0, tzinfo=UTC)


def test_frequency_cap_counts_recent_sends_and_this_tick() -> None:
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    one_recent = facts(recent_sends=[now - timedelta(hours=3), now - timedelta(hours=30)])
    assert decide(one_recent, NIGHT, now).action == "send"
    capped = decide(one_recent, NIGHT, now, sent_this_tick=1)
    assert capped.action == "defer" and capped.reason == "frequency_cap"
    assert capped.until == now - timedelta(hours=3) + timedelta(hours=24)


def test_skips_name_their_reason_in_priority_order() -> None:
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    assert decide(facts(properties={"push_opt_out": "true"}), NIGHT, now).reason == "opted_out"
    assert decide(ContactFacts(contact_id="c"), NIGHT, now).reason == "no_token"
    assert decide(facts(token_dead=True), NIGHT, now).reason == "token_invalid"


def test_local_send_time_is_read_in_the_contacts_zone() -> None:
    assert local_send_time_utc("2026-11-27T09:00", ZoneInfo("America/New_York")) == datetime(
        2026, 11, 27, 14, 0, tzinfo=UTC
    )

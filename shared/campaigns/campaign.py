"""Campaign definitions (a YAML or JSON file, validated here): who (an audience), what (variants, Liquid templates),
how many see nothing (the holdout), when, until when, what counts as a conversion, and what to balance on.

README, "Campaigns". Launching one is shared/campaigns/launch.py; this module only says what a valid one is, so that
a bad definition is refused (naming the field) before anything is written.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import yaml
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from shared.campaigns.audience import AUDIENCE_NAME_PATTERN, PROPERTIES_PREFIX, PROPERTY_KEY, WHERE_COLUMNS
from shared.campaigns.template import TemplateError, check_template

Day = date  # a field named ``date`` must not shadow the type in its annotation
HOLDOUT = "holdout"  # the arm of the control group: assigned and recorded, never sent
CAMPAIGN_NAME_PATTERN = AUDIENCE_NAME_PATTERN
VARIANT_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"
# Shares are kept as integers out of SHARE_SCALE (parts per million), so that the assignment SQL does exact integer
# arithmetic: an arm's count in a stratum of n differs from share * n by less than one, plus n / SHARE_SCALE from
# rounding a share to a millionth (nothing below a million contacts per stratum).
SHARE_SCALE = 1_000_000
# What a stratum may be made of: the activity level, or a users_latest column, or properties.<key>.
ACTIVITY = "activity"
_HHMM = r"^([01]\d|2[0-3]):[0-5]\d$"
# Template variables a campaign text may read: the contact's properties plus these users_latest columns.
CONTEXT_COLUMNS = ("contact_id", "country", "timezone")


class CampaignError(ValueError):
    """A definition that cannot be launched (the message names the field)."""


class Variant(BaseModel):
    """One message. Every text is a Liquid template over the contact's properties (README, "Campaigns")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=VARIANT_ID_PATTERN)
    title: str = Field(min_length=1, max_length=256)
    body: str = Field(min_length=1, max_length=2048)
    deep_link: str | None = Field(default=None, max_length=2048)
    data: dict[str, str] = Field(default_factory=dict, max_length=50)
    share: float | None = Field(default=None, gt=0, le=1, description="of all members; default: an equal split")

    @field_validator("id")
    @classmethod
    def _not_holdout(cls, value: str) -> str:
        if value == HOLDOUT:
            raise ValueError(f"{HOLDOUT!r} is the control group's arm, not a variant id")
        return value

    @model_validator(mode="after")
    def _templates(self) -> Variant:
        for name, source in self.texts().items():
            try:
                check_template(source)
            except TemplateError as exc:
                raise ValueError(f"{name}: {exc}") from None
        return self

    def texts(self) -> dict[str, str]:
        """Every template of the variant by field name (``data.<key>`` for data values)."""
        out = {"title": self.title, "body": self.body}
        if self.deep_link:
            out["deep_link"] = self.deep_link
        out.update({f"data.{key}": value for key, value in self.data.items()})
        return out


class SendAt(BaseModel):
    """Everyone at one instant."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    at: AwareDatetime


class SendLocal(BaseModel):
    """Everyone at the same wall-clock time in their own timezone (UTC when unknown)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    local_time: str = Field(pattern=_HHMM)
    date: Day


class SendWindow(BaseModel):
    """As soon as the launch allows, inside a daily window of each contact's local time (from ``date``, default: the
    launch day): a contact whose window is open is sent at once, the others when theirs next opens."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    window: tuple[Annotated[str, Field(pattern=_HHMM)], Annotated[str, Field(pattern=_HHMM)]]
    date: Day | None = None

    @model_validator(mode="after")
    def _ordered(self) -> SendWindow:
        if self.window[0] >= self.window[1]:
            raise ValueError("window: give [start, end] with start before end, e.g. ['09:00', '21:00']")
        return self


class BestTime(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    within_hours: int = Field(default=24, ge=1, le=168, description="the window after launch to choose in")
    explore: float = Field(default=0.1, ge=0, le=0.5, description="share sent at a random time of the window")
    fallback_hour: int | None = Field(
        default=None, ge=0, le=23, description="local hour for contacts without any event (default: the tenant's best)"
    )


class SendBest(BaseModel):
    """Each contact at its own best hour of the window after launch, from its behaviour in its timezone
    (shared/campaigns/send_time.py); quiet hours are never chosen."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    best_time: BestTime = Field(default_factory=BestTime)


class SendNow(BaseModel):
    """At launch (the default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    now: Literal[True] = True


class Conversion(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    events: list[Annotated[str, Field(min_length=1, max_length=500)]] = Field(min_length=1)
    within_hours: float = Field(default=72, gt=0, le=24 * 90)


class Waves(BaseModel):
    """The audience split into ``count`` waves by a seeded hash of (campaign, contact), one launched every
    ``every_hours`` after the first (the send tick launches them); each wave is sent like a launch of its own."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    count: int = Field(ge=2, le=52)
    every_hours: float = Field(default=24, ge=1, le=24 * 28)


Allocation = Literal["even", "adaptive"]
EVEN: Allocation = "even"
ADAPTIVE: Allocation = "adaptive"


class Campaign(BaseModel):
    """A campaign file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=CAMPAIGN_NAME_PATTERN)
    description: str = ""
    audience: str = Field(pattern=AUDIENCE_NAME_PATTERN)
    variants: list[Variant] = Field(min_length=1, max_length=26)
    holdout: float = Field(default=0.0, ge=0, lt=1)
    send: SendAt | SendLocal | SendWindow | SendBest | SendNow = Field(default_factory=SendNow)
    expires_after_hours: float = Field(default=48, gt=0, le=24 * 28, description="after its planned send time")
    conversion: Conversion | None = None
    stratify_by: list[str] = Field(default_factory=lambda: [ACTIVITY, "country"], max_length=4)
    launch_at: AwareDatetime | None = Field(default=None, description="the send tick launches it then")
    waves: Waves | None = None
    allocation: Allocation = Field(
        default=EVEN, description="adaptive: each wave's variant shares by Thompson sampling per activity level"
    )

    @field_validator("launch_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else value.astimezone(UTC)

    @field_validator("stratify_by")
    @classmethod
    def _known_properties(cls, value: list[str]) -> list[str]:
        for key in value:
            if key == ACTIVITY or key in WHERE_COLUMNS:
                continue
            if key.startswith(PROPERTIES_PREFIX) and PROPERTY_KEY.fullmatch(key.removeprefix(PROPERTIES_PREFIX)):
                continue
            raise ValueError(
                f"unknown property {key!r}: use activity, a users_latest column ({', '.join(WHERE_COLUMNS)}) "
                "or properties.<key>"
            )
        if len(set(value)) != len(value):
            raise ValueError("a property is named twice")
        return value

    @model_validator(mode="after")
    def _arms(self) -> Campaign:
        ids = [v.id for v in self.variants]
        if len(set(ids)) != len(ids):
            raise ValueError(f"variants: ids must differ (got {', '.join(ids)})")
        given = [v.share for v in self.variants if v.share is not None]
        if given and len(given) != len(self.variants):
            raise ValueError("variants: give a share to every variant or to none (none: an equal split)")
        total = self.holdout + sum(given)
        if given and abs(total - 1) > 1e-9:
            raise ValueError(f"variants: shares plus the holdout must add up to 1 (they add up to {total:g})")
        smallest = 1 / SHARE_SCALE  # the assignment's resolution: a smaller arm could not be given its share
        arms = {HOLDOUT: self.holdout} if self.holdout > 0 else {}
        arms |= {v.id: v.share if v.share is not None else (1 - self.holdout) / len(ids) for v in self.variants}
        tiny = [arm for arm, share in arms.items() if share < smallest]
        if tiny:
            raise ValueError(f"{', '.join(tiny)}: a share below one millionth cannot be assigned (use 0 or more)")
        if self.waves is not None and not isinstance(self.send, SendNow | SendWindow | SendBest):
            raise ValueError("waves: each wave is sent after its own launch, so send must be now, a daily window "
                             "or best_time (an absolute time would send every wave at once)")
        if self.waves is not None and isinstance(self.send, SendWindow) and self.send.date is not None:
            raise ValueError("waves: a daily window with a date would send every wave that day; leave out date")
        if self.allocation == ADAPTIVE:
            problems = [
                (self.waves is None, "waves (the shares move between waves)"),
                (len(self.variants) < 2, "at least two variants"),
                (self.conversion is None, "conversion (what the shares learn from)"),
                (ACTIVITY not in self.stratify_by, "activity in stratify_by (shares are per activity level)"),
                (bool(given), "no variant shares (Thompson sampling sets them)"),
            ]
            missing = [what for bad, what in problems if bad]
            if missing:
                raise ValueError(f"allocation adaptive needs {'; '.join(missing)}")
        return self

    def arm_shares(self) -> list[tuple[str, int]]:
        """Each arm with its share in millionths (``SHARE_SCALE``), holdout first; they add up to ``SHARE_SCALE``
        exactly (largest remainder), and an arm with a positive share gets at least one millionth."""
        variant_total = 1 - self.holdout
        wanted = [(HOLDOUT, self.holdout)] if self.holdout > 0 else []
        wanted += [(v.id, v.share if v.share is not None else variant_total / len(self.variants)) for v in self.variants]
        return millionths(wanted)

    def variant(self, arm: str) -> Variant:
        return next(v for v in self.variants if v.id == arm)

    def to_json(self) -> str:
        """The definition as stored (``campaigns.definition``): JSON that ``Campaign.from_json`` reads back."""
        return json.dumps(self.model_dump(mode="json", exclude_defaults=True))

    @classmethod
    def from_json(cls, text: str) -> Campaign:
        return cls.model_validate_json(text)


def millionths(wanted: list[tuple[str, float]]) -> list[tuple[str, int]]:
    """Shares (adding up to 1) in millionths adding up to ``SHARE_SCALE`` exactly (largest remainder); an arm with
    a positive share gets at least one millionth."""
    exact = [(arm, share * SHARE_SCALE) for arm, share in wanted]
    floors = [(arm, max(int(value), 1)) for arm, value in exact]
    left = SHARE_SCALE - sum(n for _, n in floors)
    by_remainder = sorted(range(len(exact)), key=lambda i: (-(exact[i][1] - int(exact[i][1])), i))
    parts = [n for _, n in floors]
    for i in by_remainder[: max(left, 0)]:
        parts[i] += 1
    return [(arm, n) for (arm, _), n in zip(floors, parts, strict=True)]


def load_campaign(path: Path) -> Campaign:
    """Read and validate a campaign file (YAML or JSON). Errors name the file and the field."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise CampaignError(f"{path}: not UTF-8 text (save the file as UTF-8)") from None
    except yaml.YAMLError as exc:
        raise CampaignError(f"{path}: not YAML or JSON ({' '.join(str(exc).split())})") from exc
    if not isinstance(raw, dict):
        raise CampaignError(f"{path}: a campaign file is a mapping (name, audience, variants, holdout, send, ...)")
    return parse_campaign(raw, where=str(path))


def parse_campaign(raw: dict[str, Any], *, where: str = "campaign") -> Campaign:
    try:
        return Campaign.model_validate(raw)
    except ValidationError as exc:
        from shared.config import validation_message

        raise CampaignError(f"{where}: {validation_message(exc)}") from exc


# -- when each member is sent ---------------------------------------------------------------------------------------
def planned_send_at(
    send: SendAt | SendLocal | SendWindow | SendBest | SendNow, tz: ZoneInfo, launched_at: datetime
) -> datetime:
    """When a contact in ``tz`` is (or, in the holdout, would have been) sent, in UTC. Computed once per timezone of
    the audience at launch, never per contact (shared/campaigns/launch.py). For ``best_time``: the window's start
    (the launch, at the next full hour), for a member whose whole window is quiet (the tick defers it)."""
    if isinstance(send, SendBest):
        return window_start(launched_at)
    if isinstance(send, SendAt):
        return send.at.astimezone(UTC)
    if isinstance(send, SendNow):
        return launched_at.astimezone(UTC)
    if isinstance(send, SendLocal):
        return datetime.combine(send.date, _clock_time(send.local_time), tzinfo=tz).astimezone(UTC)
    start, end = (_clock_time(hhmm) for hhmm in send.window)
    local_now = launched_at.astimezone(tz)
    day = max(send.date or local_now.date(), local_now.date())
    for _ in range(3):
        opens = datetime.combine(day, start, tzinfo=tz)
        closes = datetime.combine(day, end, tzinfo=tz)
        if local_now < closes:
            return max(opens, local_now).astimezone(UTC)
        day += timedelta(days=1)
    raise AssertionError("a daily window opens within three days")  # pragma: no cover


def window_start(launched_at: datetime) -> datetime:
    """A best-time window's first slot: the launch, rounded up to the next full hour (slots are whole hours)."""
    at = launched_at.astimezone(UTC)
    top = at.replace(minute=0, second=0, microsecond=0)
    return top if top == at else top + timedelta(hours=1)


def _clock_time(hhmm: str) -> time:
    hours, minutes = hhmm.split(":")
    return time(int(hours), int(minutes))

"""PII policy for event metadata (ARCHITECTURE.md "Tenants and regions"): events carry no PII; contact addresses live in user_properties.

Three layers, cheapest first:

* context paths that always identify a person or device (``ip``, ``userAgent``, device ids, ``location``,
  ``traits``...) are dropped; only an allow-list of descriptive context sections reaches metadata at all;
* keys that name personal data (``email``, ``phone``, ``first_name``, ``dateOfBirth``...) are removed or hashed,
  compared case- and separator-insensitively (``firstName`` = ``first_name`` = ``FIRST-NAME``), at any depth;
* string values that look like an email address, a phone number, an IP address or a US social security number are
  removed or hashed wherever they are, because free-form properties hold them under innocent keys (``"note": "call
  +14155552671"``); so are dict *keys* that look like one (``{"jane@example.com": {...}}``: the entry is removed, or
  in hash mode its key becomes the pseudonym), and strings are percent-decoded before they are scanned (a URL
  carries ``jane%40example.com``);
* integers that can only be phone numbers (``14155552671``): see ``looks_like_phone_int`` for the rule and its limits.

Hot path: called once per event, so key and value verdicts are memoised (most keys, and many values such as
library names and locales, repeat across events) and values are first screened by one cheap regex.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote

from pydantic import BaseModel, ConfigDict, PrivateAttr, SecretStr, field_validator

from shared.sources.common import canonical_json

if TYPE_CHECKING:
    from shared.config import PrivacyConfig

_SEPARATORS = re.compile(r"[^a-z0-9]")


def normalise_key(key: str) -> str:
    """``firstName``, ``first_name`` and ``First-Name`` all become ``firstname``."""
    return _SEPARATORS.sub("", key.lower())


DEFAULT_PII_KEYS: frozenset[str] = frozenset(
    normalise_key(k)
    for k in (
        "email", "email_address", "mail", "phone", "phone_number", "mobile", "mobile_phone", "mobile_number",
        "cell_phone", "telephone", "fax", "name", "first_name", "last_name", "full_name", "middle_name",
        "given_name", "family_name", "surname", "display_name", "address", "street", "street_address",
        "address_line1", "address_line2", "postal_code", "post_code", "zip", "zip_code", "birthday", "birth_date",
        "date_of_birth", "dob", "age", "gender", "username", "user_name", "avatar", "ip", "ip_address",
        "user_agent", "user_agent_data", "device_id", "advertising_id", "idfa", "idfv", "gaid", "adid",
        "push_token", "device_token", "location", "latitude", "longitude", "ssn", "password",
    )
)  # fmt: skip
# A key *containing* one of these is personal too (``billing_email``, ``customerPhoneNumber``).
DEFAULT_PII_KEY_FRAGMENTS: tuple[str, ...] = (
    "email", "phonenumber", "mobilenumber", "password", "firstname", "lastname", "birthday", "dateofbirth",
    "ipaddress", "useragent", "streetaddress", "postalcode", "advertisingid",
)  # fmt: skip
# Context sections copied into event metadata (everything else in ``context`` is left out).
DEFAULT_CONTEXT_KEEP: tuple[str, ...] = (
    "locale", "app", "os", "page", "library", "campaign", "screen", "network", "device", "referrer", "groupId",
)  # fmt: skip
# Context paths dropped even inside kept sections (in both modes: hashing a device id still tracks a device).
DEFAULT_CONTEXT_DROP: tuple[str, ...] = (
    "ip", "userAgent", "userAgentData", "device.id", "device.advertisingId", "device.adTrackingEnabled",
    "device.token", "device.name", "location", "traits",
)  # fmt: skip

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![\d.]){_OCTET}(?:\.{_OCTET}){{3}}(?!\.?\d)")
_IPV6_CANDIDATE = re.compile(r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:])")
# A run of 7-15 digits with at most two separators between digits, not glued to letters, dots or dashes (so UUIDs,
# versions and timestamps are not runs); E.164 when it starts with "+", "formatted" when it has separators.
_PHONE_CANDIDATE = re.compile(r"(?<![\w+.-])\+?\(?\d(?:[\s().-]{0,2}\d){6,14}(?![\w-]|\.\d)")
_DIGIT_GROUPS = re.compile(r"\d+")
_DATE_LIKE = re.compile(r"\d{4}[./-]\d{1,2}[./-]\d{1,2}|\d{1,2}[./-]\d{1,2}[./-]\d{4}")
# A US social security number, 3-2-4 digits with dashes (which _DATE_LIKE would otherwise take for a date).
_SSN = re.compile(r"(?<![\w-])\d{3}-\d{2}-\d{4}(?![\w-])")
# One cheap screen: a string can only be one of the above with an "@", a hex-colon group, or 4 digits in a short span.
# Most strings (names, paths, locales, versions) fail it at C speed.
_SUSPECT = re.compile(r"@|:[0-9A-Fa-f]{0,4}:|\d[\s().+-]{0,2}\d[\s().-]{0,2}\d[\s().-]{0,2}\d")
_CACHE_LIMIT = 200_000
_SECTION_CACHE_LIMIT = 20_000

# Integers that are phone numbers: 10 to 15 digits (E.164 allows 15; 10 is a national number without its leading 0 or
# country code), except the two bands where epoch times live: seconds and milliseconds from 2001-09-09 to 2100.
PHONE_INT_MIN = 10**9
PHONE_INT_MAX = 10**15 - 1
_EPOCH_SECONDS = (10**9, 4_102_444_800)
_EPOCH_MILLIS = (10**12, 4_102_444_800_000)
# ... and except under keys that name an identifier or a quantity (normalised, by suffix): a 13-digit order id or an
# amount in micros is not a phone number.
NUMERIC_KEY_SUFFIXES: tuple[str, ...] = (
    "id", "ids", "count", "total", "amount", "price", "cost", "revenue", "cents", "micros", "size", "bytes",
)  # fmt: skip


def looks_like_phone_int(value: int, key: str = "") -> bool:
    """True if an integer can only be a phone number (``14155552671``, ``447700900123``).

    The rule: 10-15 digits, not an epoch time in seconds or milliseconds between 2001 and 2100, and not under a key
    ending in an identifier or quantity word (``order_id``, ``revenue_micros``, ``file_bytes``). Its limits: a
    10-digit number without country code in the epoch-seconds band (US area codes 201-410 written as ``4105552671``)
    and phone numbers of 7-9 digits (local numbers) are kept, because counts, prices in cents and epoch times look the
    same; counts of more than 4.1 billion under a key not named like a quantity are taken for phone numbers.
    """
    if not PHONE_INT_MIN <= value <= PHONE_INT_MAX:
        return False
    if _EPOCH_SECONDS[0] <= value <= _EPOCH_SECONDS[1] or _EPOCH_MILLIS[0] <= value <= _EPOCH_MILLIS[1]:
        return False
    return not (key and normalise_key(key).endswith(NUMERIC_KEY_SUFFIXES))


def _percent_decoded(value: str) -> str:
    """``value`` with %-escapes undone, twice-encoded ones too (``jane%2540example.com``)."""
    for _ in range(3):
        decoded = unquote(value)
        if decoded == value:
            break
        value = decoded
    return value


def looks_like_pii(value: str) -> bool:
    """True if ``value`` contains an email address, an E.164 or formatted (7+ digit) phone number, an IP or a US
    social security number, percent-encoded or not."""
    if "%" in value:
        value = _percent_decoded(value)
    if not _SUSPECT.search(value):
        return False
    if "@" in value and _EMAIL.search(value):
        return True
    if "-" in value and _SSN.search(value):
        return True
    if _IPV4.search(value):
        return True
    for m in _PHONE_CANDIDATE.finditer(value):
        text = m.group()
        digits = sum(c.isdigit() for c in text)
        # "+" = E.164-ish; otherwise it must look dialled: (area) or 3+ digit groups ("45790-32" is a SKU)
        formatted = text[0] == "+" or "(" in text or len(_DIGIT_GROUPS.findall(text)) >= 3
        if digits <= 15 and formatted and not _DATE_LIKE.search(text):
            return True
    if ":" in value:
        for m in _IPV6_CANDIDATE.finditer(value):
            try:
                ipaddress.IPv6Address(m.group())
            except ValueError:
                continue
            return True
    return False


def _drop_tree(paths: tuple[str, ...]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path in paths:
        node = tree
        *parents, leaf = path.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if child is True:
                break
            node = child
        else:
            node[leaf] = True
    return tree


def _drop(value: dict[str, Any], tree: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in value.items():
        sub = tree.get(k)
        if sub is True:
            continue
        out[k] = _drop(v, sub) if sub and type(v) is dict else v
    return out


class PrivacyPolicy(BaseModel):
    """What counts as PII and what happens to it. ``mode="hash"`` keeps joinability (salted sha256) without values."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Literal["remove", "hash"] = "remove"
    # A secret (SecretStr): repr, str and dumps of the policy show ``**********``, so a logged policy leaks nothing.
    salt: SecretStr = SecretStr("")
    pii_keys: frozenset[str] = DEFAULT_PII_KEYS
    pii_key_fragments: tuple[str, ...] = DEFAULT_PII_KEY_FRAGMENTS
    context_keep: tuple[str, ...] = DEFAULT_CONTEXT_KEEP
    context_drop: tuple[str, ...] = DEFAULT_CONTEXT_DROP
    # Inside context sections these keys describe software, not people (app.name, os.name, library.name).
    context_safe_keys: frozenset[str] = frozenset({"name"})
    scan_values: bool = True

    _scrubber: Scrubber = PrivateAttr()

    @field_validator("pii_keys", mode="after")
    @classmethod
    def _normalise_keys(cls, keys: frozenset[str]) -> frozenset[str]:
        return frozenset(normalise_key(k) for k in keys)

    @field_validator("pii_key_fragments", mode="after")
    @classmethod
    def _normalise_fragments(cls, fragments: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(normalise_key(f) for f in fragments)

    def model_post_init(self, context: Any, /) -> None:
        self._scrubber = Scrubber(self)

    @property
    def scrubber(self) -> Scrubber:
        """The compiled, plain-Python form used on the hot path (pydantic attribute access costs microseconds)."""
        return self._scrubber

    def is_pii_key(self, key: str) -> bool:
        return self._scrubber.is_pii_key(key)

    def is_pii_value(self, value: str) -> bool:
        return self._scrubber.is_pii_value(value)

    def pseudonym(self, value: Any) -> str:
        return self._scrubber.pseudonym(value)

    def scrub(self, value: dict[str, Any]) -> dict[str, Any]:
        """A copy of free-form data (properties, group traits, native metadata) with no PII keys or values."""
        return self._scrubber.scrub(value)

    def scrub_context(self, context: dict[str, Any]) -> dict[str, Any]:
        """The allow-listed, PII-free part of a Segment ``context``, for event metadata.

        Sections of the result may be shared between calls (memoised): treat row metadata as read-only.
        """
        return self._scrubber.scrub_context(context)


class Scrubber:
    """A ``PrivacyPolicy`` compiled for speed: plain slots, memoised verdicts, no pydantic on the per-event path."""

    __slots__ = ("context_keep", "context_plan", "drops", "fragments", "hashing", "key_verdicts", "pii_keys", "safe",
                 "salt", "scan_values", "sections", "value_verdicts")  # fmt: skip

    def __init__(self, policy: PrivacyPolicy) -> None:
        self.hashing = policy.mode == "hash"
        self.salt = policy.salt.get_secret_value()
        self.pii_keys = policy.pii_keys
        self.fragments = policy.pii_key_fragments
        self.context_keep = policy.context_keep
        self.drops = _drop_tree(policy.context_drop)
        # kept context section -> the drop subtree inside it (None: keep all of it); dropped sections are absent
        self.context_plan: dict[str, dict[str, Any] | None] = {
            k: self.drops.get(k) or None for k in self.context_keep if self.drops.get(k) is not True
        }
        self.safe = policy.context_safe_keys
        self.scan_values = policy.scan_values
        # key -> _KEY_OK, _KEY_NAMES_PII (its value is personal) or _KEY_IS_PII (the key itself is a personal value)
        self.key_verdicts: dict[str, int] = {}
        self.value_verdicts: dict[str, bool] = {}
        self.sections: dict[tuple[Any, ...], dict[str, Any]] = {}

    # -- verdicts --------------------------------------------------------------------------------------------------
    def is_pii_key(self, key: str) -> bool:
        """True if the key names personal data (``email``) or is itself a personal value (``jane@example.com``)."""
        return bool(self.key_verdict(key))

    def key_verdict(self, key: str) -> int:
        verdict = self.key_verdicts.get(key)
        if verdict is None:
            norm = normalise_key(key)
            if norm in self.pii_keys or any(f in norm for f in self.fragments):
                verdict = _KEY_NAMES_PII
            elif self.scan_values and looks_like_pii(key):
                verdict = _KEY_IS_PII
            else:
                verdict = _KEY_OK
            if len(self.key_verdicts) > _CACHE_LIMIT:
                self.key_verdicts.clear()
            self.key_verdicts[key] = verdict
        return verdict

    def is_pii_value(self, value: str) -> bool:
        verdict = self.value_verdicts.get(value)
        if verdict is None:
            verdict = self.scan_values and looks_like_pii(value)
            if len(self.value_verdicts) > _CACHE_LIMIT:
                self.value_verdicts.clear()
            self.value_verdicts[value] = verdict
        return verdict

    def pseudonym(self, value: Any) -> str:
        """Salted sha256 of a value (strings as-is, anything else as canonical JSON)."""
        if not isinstance(value, str):
            value = canonical_json(value)
        return "sha256:" + hashlib.sha256((self.salt + value).encode("utf-8", "surrogatepass")).hexdigest()

    # -- scrubbing -------------------------------------------------------------------------------------------------
    def scrub(self, value: dict[str, Any]) -> dict[str, Any]:
        return self._dict(value, _NOTHING)

    def scrub_context(self, context: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        plan = self.context_plan
        safe = self.safe
        memo = self.sections
        # Walk the context's own keys (usually fewer than the allow-list) and skip what the plan does not keep.
        for key, v in context.items():
            if key not in plan:
                continue
            t = type(v)
            if t is dict:
                drop = plan[key]
                if drop is not None:  # first, so per-device ids do not defeat the memo
                    v = _drop(v, drop)
                # Sections such as app, os, library, device repeat verbatim across a client's events: memoise flat
                # ones by content (two tuples: no per-item pair objects). A nested one is unhashable: just scrubbed.
                memo_key: tuple[Any, ...] | None = (key, tuple(v), tuple(v.values()))
                try:
                    done = memo.get(memo_key)  # type: ignore[arg-type]
                except TypeError:
                    done = memo_key = None
                if done is None:
                    done = self._dict(v, safe)
                    if memo_key is not None:
                        if len(memo) > _SECTION_CACHE_LIMIT:
                            memo.clear()
                        memo[memo_key] = done
                if done:
                    out[key] = done
            elif t is str:
                if self.is_pii_value(v):
                    if self.hashing:
                        out[key] = self.pseudonym(v)
                else:
                    out[key] = v
            elif t is list:
                out[key] = self._list(v, safe)
            else:
                out[key] = v
        return out

    def _dict(self, value: dict[str, Any], safe: frozenset[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        keys = self.key_verdicts
        values = self.value_verdicts
        for k, v in value.items():
            bad = keys.get(k)
            if bad is None:
                bad = self.key_verdict(k)
            if bad and k not in safe:
                if bad == _KEY_IS_PII:  # {"jane@example.com": {...}}: the key is the personal value
                    if self.hashing:
                        kept, v = self._value(v, safe, "")
                        if kept:
                            out[self.pseudonym(k)] = v
                elif self.hashing and v is not None:
                    out[k] = self.pseudonym(v)
                continue
            t = type(v)
            if t is str:
                bad = values.get(v)
                if bad is None:
                    bad = self.is_pii_value(v)
                if bad:
                    if self.hashing:
                        out[k] = self.pseudonym(v)
                    continue
                out[k] = v
            elif t is dict:
                out[k] = self._dict(v, safe)
            elif t is list:
                out[k] = self._list(v, safe, k)
            elif t is int and v >= PHONE_INT_MIN and self.scan_values and looks_like_phone_int(v, k):
                if self.hashing:
                    out[k] = self.pseudonym(v)
            else:
                out[k] = v
        return out

    def _list(self, value: list[Any], safe: frozenset[str], key: str = "") -> list[Any]:
        """``key``: the key the list is under, which decides whether a big integer in it is an id or a phone number."""
        out: list[Any] = []
        values = self.value_verdicts
        for v in value:
            t = type(v)
            if t is str:
                bad = values.get(v)
                if bad is None:
                    bad = self.is_pii_value(v)
                if bad:
                    if self.hashing:
                        out.append(self.pseudonym(v))
                    continue
                out.append(v)
            elif t is dict:
                out.append(self._dict(v, safe))
            elif t is list:
                out.append(self._list(v, safe, key))
            elif t is int and v >= PHONE_INT_MIN and self.scan_values and looks_like_phone_int(v, key):
                if self.hashing:
                    out.append(self.pseudonym(v))
            else:
                out.append(v)
        return out

    def _value(self, v: Any, safe: frozenset[str], key: str) -> tuple[bool, Any]:
        """One value scrubbed (kept?, value): the slow path for the rare entry whose key was personal."""
        kept, out = self._list([v], safe, key), None
        if kept:
            out = kept[0]
        return bool(kept), out


_NOTHING: frozenset[str] = frozenset()
_KEY_OK, _KEY_NAMES_PII, _KEY_IS_PII = 0, 1, 2
DEFAULT_POLICY = PrivacyPolicy()


@lru_cache(maxsize=256)
def policy_for(config: PrivacyConfig, salt: str = "") -> PrivacyPolicy:
    """A tenant's compiled policy. Cached: compiling is cheap, but the scrubber's memo of verdicts is what makes the
    hot path fast, and it must survive from one message to the next. One policy (and memo) per tenant config and salt,
    so nothing memoised for one tenant is consulted for another."""
    if config.mode == "hash" and not salt:
        raise ValueError("privacy mode 'hash' needs a salt")  # a bare sha256 of an email is a lookup away from it
    return PrivacyPolicy(
        mode=config.mode,
        salt=SecretStr(salt),
        pii_keys=DEFAULT_PII_KEYS | frozenset(config.extra_pii_keys),
        context_keep=DEFAULT_CONTEXT_KEEP if config.context_keep is None else config.context_keep,
        scan_values=config.scan_values,
    )

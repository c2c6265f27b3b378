"""Fake FCM / APNs / OneSignal / Braze / Expo servers, one hypercorn process, one port each (h2c and HTTP/1.1).

Each fake speaks the wire format of the providers' public API docs (README, "Push sending"): endpoints, auth checks,
status codes and error bodies. Tests and the local stack steer them through control endpoints served on every port:

* ``GET  /_fake/stats``     counters per provider: requests, accepted sends per token / message / idempotency key,
                              distinct client connections, HTTP versions, max in-flight, token grants, JWT signs
* ``POST /_fake/reset``     clear counters and scripts (``{"registrations": true}`` also forgets credentials)
* ``POST /_fake/script``    ``{"rules": [{"provider": "fcm", "token": "X", "error": "UNREGISTERED", "times": 1}]}``;
                              a rule matches the next request (optionally only for ``token``) and answers with the
                              named error, or with ``status`` / ``headers`` / ``body``; ``times: null`` = forever;
                              ``retry_after`` adds the header (Braze: ``X-RateLimit-Reset``); ``delay`` (seconds)
                              holds the answer that long *after* the request was handled (and a send accepted and
                              counted): longer than the client's timeout, it is a provider that got the message but
                              whose answer never arrived; ``endpoint: "getReceipts"`` aims a rule at Expo's receipts;
                              ``{"clear": true}`` first drops the rules not yet used up (counters stay)
* ``POST /_fake/register``  credentials the fakes accept: ``{"fcm": {"client_email", "public_key_pem"},
                              "apns": {"team_id", "key_id", "public_key_pem"}, "onesignal": {"app_id", "api_key"},
                              "braze": {"api_key"}, "expo": {"access_token"}}`` (also read from
                              ``<state-dir>/register.json`` at start)
* ``POST /_fake/fcm/revoke`` invalidate every issued FCM access token (next send gets 401 UNAUTHENTICATED)

Built-in recipients: tokens starting ``dead`` are unregistered, ``bad`` are malformed (each provider's own error).
Ports: base+0 FCM (and its OAuth2 ``/token``), +1 APNs, +2 OneSignal, +3 Braze, +4 Expo.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import json
import os
import secrets
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import jwt

from shared.push.names import PROVIDER_NAMES, ProviderName

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    Scope = dict[str, Any]
    Receive = Callable[[], Awaitable[dict[str, Any]]]
    Send = Callable[[dict[str, Any]], Awaitable[None]]

PROVIDERS = PROVIDER_NAMES  # one port each, in this order from --port-base
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
FCM_SCOPES = ("https://www.googleapis.com/auth/firebase.messaging", "https://www.googleapis.com/auth/cloud-platform")
MAX_PAYLOAD = 4096
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
APNS_TOKEN_UPDATE_WINDOW = 20 * 60.0
APNS_JWT_MAX_AGE = 3600.0

Response = tuple[int, dict[str, str], Any]  # status, headers, JSON body (None = empty)


def fcm_error(http: int, status: str, message: str, code: str | None = None, *extra: dict[str, Any]) -> Response:
    details: list[dict[str, Any]] = []
    if code:
        details.append({"@type": FCM_ERROR_TYPE, "errorCode": code})
    details.extend(extra)
    err: dict[str, Any] = {"code": http, "message": message, "status": status}
    if details:
        err["details"] = details
    return http, {}, {"error": err}


def _field_violation(field_name: str, description: str) -> dict[str, Any]:
    return {"@type": BAD_REQUEST_TYPE, "fieldViolations": [{"field": field_name, "description": description}]}


FCM_ERRORS: dict[str, Callable[[], Response]] = {
    "UNREGISTERED": lambda: fcm_error(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED"),
    "INVALID_REGISTRATION": lambda: fcm_error(
        400,
        "INVALID_ARGUMENT",
        "The registration token is not a valid FCM registration token",
        "INVALID_ARGUMENT",
        _field_violation("message.token", "Invalid registration token"),
    ),
    "INVALID_ARGUMENT": lambda: fcm_error(
        400,
        "INVALID_ARGUMENT",
        "Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf.Duration), Field 'ttl'",
        "INVALID_ARGUMENT",
        _field_violation("message.android.ttl", "Invalid value"),
    ),
    "SENDER_ID_MISMATCH": lambda: fcm_error(403, "PERMISSION_DENIED", "SenderId mismatch", "SENDER_ID_MISMATCH"),
    "THIRD_PARTY_AUTH_ERROR": lambda: fcm_error(
        401, "UNAUTHENTICATED", "Auth error from APNS or Web Push Service", "THIRD_PARTY_AUTH_ERROR"
    ),
    "QUOTA_EXCEEDED": lambda: fcm_error(
        429,
        "RESOURCE_EXHAUSTED",
        "Quota exceeded for quota metric 'Messages' of service 'fcm.googleapis.com'.",
        "QUOTA_EXCEEDED",
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{"subject": "project"}]},
    ),
    "UNAVAILABLE": lambda: fcm_error(503, "UNAVAILABLE", "The service is currently unavailable.", "UNAVAILABLE"),
    "INTERNAL": lambda: fcm_error(500, "INTERNAL", "Internal error encountered.", "INTERNAL"),
    "UNAUTHENTICATED": lambda: fcm_error(
        401,
        "UNAUTHENTICATED",
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid "
        "authentication credential.",
    ),
}

APNS_STATUS = {
    **dict.fromkeys(
        [
            "BadCollapseId",
            "BadDeviceToken",
            "BadExpirationDate",
            "BadMessageId",
            "BadPriority",
            "BadTopic",
            "DeviceTokenNotForTopic",
            "DuplicateHeaders",
            "IdleTimeout",
            "InvalidPushType",
            "MissingDeviceToken",
            "MissingTopic",
            "PayloadEmpty",
            "TopicDisallowed",
        ],
        400,
    ),
    **dict.fromkeys(
        [
            "BadCertificate",
            "BadCertificateEnvironment",
            "ExpiredProviderToken",
            "Forbidden",
            "InvalidProviderToken",
            "MissingProviderToken",
        ],
        403,
    ),
    "BadPath": 404,
    "MethodNotAllowed": 405,
    "Unregistered": 410,
    "ExpiredToken": 410,
    "PayloadTooLarge": 413,
    "TooManyProviderTokenUpdates": 429,
    "TooManyRequests": 429,
    "InternalServerError": 500,
    "ServiceUnavailable": 503,
    "Shutdown": 503,
}


def apns_error(reason: str) -> Response:
    body: dict[str, Any] = {"reason": reason}
    status = APNS_STATUS[reason]
    if status == 410:
        body["timestamp"] = int(time.time() * 1000)
    return status, {}, body


ONESIGNAL_ERRORS: dict[str, Callable[[], Response]] = {
    "rate_limited": lambda: (429, {"retry-after": "1"}, {"errors": ["API rate limit exceeded."]}),
    "bad_request": lambda: (400, {}, {"errors": ["Message Notifications must have English language content"]}),
    "unauthorized": lambda: (401, {}, {"errors": ["Access denied.  Please include an 'Authorization: Key' header."]}),
    "server_error": lambda: (500, {}, {"errors": ["Internal server error"]}),
    "unavailable": lambda: (503, {}, {"errors": ["Service unavailable"]}),
    "not_subscribed": lambda: (200, {}, {"id": "", "errors": ["All included players are not subscribed"]}),
}

BRAZE_ERRORS: dict[str, Callable[[], Response]] = {
    "bad_request": lambda: (400, {}, {"message": "Bad syntax: 'messages' must be an object"}),
    "unauthorized": lambda: (401, {}, {"message": "Invalid API key"}),
    "forbidden": lambda: (403, {}, {"message": "API key does not have permission messages.send"}),
    "not_found": lambda: (404, {}, {"message": "Not found"}),
    "rate_limited": lambda: (429, {}, {"message": "Rate limit exceeded"}),
    "server_error": lambda: (500, {}, {"message": "Internal Server Error"}),
    "unavailable": lambda: (503, {}, {"message": "Service Unavailable"}),
}

EXPO_REQUEST_ERRORS: dict[str, Response] = {
    "TOO_MANY_REQUESTS": (
        429,
        {},
        {"errors": [{"code": "TOO_MANY_REQUESTS", "message": "Too many requests: exceeded 600 notifications/s"}]},
    ),
    "INTERNAL_SERVER_ERROR": (
        503,
        {},
        {"errors": [{"code": "INTERNAL_SERVER_ERROR", "message": "An unknown error occurred."}]},
    ),
    "UNAUTHORIZED": (401, {}, {"errors": [{"code": "UNAUTHORIZED", "message": "Missing access token"}]}),
}


@dataclass
class Rule:
    provider: ProviderName
    token: str | None
    response: Callable[[], Response] | None
    error: str | None
    times: int | None
    receipt_error: str | None = None
    delay: float = 0.0
    endpoint: str | None = None  # None: the provider's send endpoint

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> Rule:
        provider = next((name for name in PROVIDERS if name == raw["provider"]), None)
        if provider is None:
            raise ValueError(f"unknown provider {raw['provider']!r}")
        response: Callable[[], Response] | None = None
        headers = {k.lower(): str(v) for k, v in (raw.get("headers") or {}).items()}
        if "retry_after" in raw:
            if provider == "braze":
                headers["x-ratelimit-reset"] = str(int(time.time() + float(raw["retry_after"])))
            else:
                headers["retry-after"] = str(raw["retry_after"])
        if "status" in raw:
            status, body = int(raw["status"]), raw.get("body")
            response = lambda: (status, dict(headers), body)  # noqa: E731
        elif "error" in raw and not (provider == "expo" and raw.get("token")):
            base = _named_error(provider, raw["error"])

            def response() -> Response:
                status, hdrs, body = base()
                return status, {**hdrs, **headers}, body

        times = raw.get("times", 1)
        return cls(provider, raw.get("token"), response, raw.get("error"), times, raw.get("receipt_error"),
                   float(raw.get("delay", 0.0)), raw.get("endpoint"))


def _named_error(provider: str, name: str) -> Callable[[], Response]:
    if provider == "fcm":
        return FCM_ERRORS[name]
    if provider == "apns":
        if name not in APNS_STATUS:
            raise KeyError(name)
        return lambda: apns_error(name)
    if provider == "onesignal":
        return ONESIGNAL_ERRORS[name]
    if provider == "braze":
        return BRAZE_ERRORS[name]
    resp = EXPO_REQUEST_ERRORS[name]
    return lambda: resp


@dataclass
class Stats:
    requests: int = 0
    accepted: int = 0
    duplicates: int = 0
    responses: Counter[str] = field(default_factory=Counter)
    by_token: Counter[str] = field(default_factory=Counter)
    by_message: Counter[str] = field(default_factory=Counter)
    by_idempotency_key: Counter[str] = field(default_factory=Counter)
    connections: set[str] = field(default_factory=set)
    http_versions: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    max_in_flight: int = 0
    token_grants: int = 0
    jwt_signs: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "responses": dict(self.responses),
            "by_token": dict(self.by_token),
            "by_message": dict(self.by_message),
            "by_idempotency_key": dict(self.by_idempotency_key),
            "connections": len(self.connections),
            "http_versions": dict(self.http_versions),
            "max_in_flight": self.max_in_flight,
            "token_grants": self.token_grants,
            "jwt_signs": self.jwt_signs,
        }


@dataclass
class ApnsTeamState:
    tokens: dict[str, float] = field(default_factory=dict)  # jwt -> first seen
    last_new: float | None = None
    expired: set[str] = field(default_factory=set)


class FakeState:
    def __init__(self, state_dir: Path | None = None) -> None:
        self.state_dir = state_dir
        self.registrations: dict[str, dict[str, dict[str, Any]]] = {p: {} for p in PROVIDERS}
        self._public_keys: dict[tuple[str, str], Any] = {}
        self.reset(registrations=True)
        if state_dir is not None and (state_dir / "register.json").exists():
            self.register(json.loads((state_dir / "register.json").read_text()))

    def reset(self, *, registrations: bool = False) -> None:
        self.stats: dict[str, Stats] = {p: Stats() for p in PROVIDERS}
        self.rules: list[Rule] = []
        self.fcm_tokens: dict[str, float] = {}  # access token -> expiry
        self.apns_teams: dict[str, ApnsTeamState] = defaultdict(ApnsTeamState)
        self.onesignal_sent: dict[str, Response] = {}
        self.expo_receipts: dict[str, dict[str, Any]] = {}
        if registrations:
            self.registrations = {p: {} for p in PROVIDERS}
            self._public_keys.clear()

    def register(self, raw: dict[str, Any]) -> None:
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        for provider, entries in raw.items():
            for entry in entries if isinstance(entries, list) else [entries]:
                if provider == "fcm":
                    key = entry["client_email"]
                    self._public_keys[("fcm", key)] = load_pem_public_key(entry["public_key_pem"].encode())
                elif provider == "apns":
                    key = entry["key_id"]
                    self._public_keys[("apns", key)] = load_pem_public_key(entry["public_key_pem"].encode())
                elif provider == "onesignal" or provider == "braze":
                    key = entry["api_key"]
                elif provider == "expo":
                    key = entry["access_token"]
                else:
                    raise ValueError(f"unknown provider {provider!r}")
                self.registrations[provider][key] = {k: v for k, v in entry.items() if k != "public_key_pem"}

    def public_key(self, provider: str, key: str) -> Any:
        return self._public_keys.get((provider, key))

    def take_rule(self, provider: str, token: str | None, endpoint: str | None = None) -> Rule | None:
        for rule in self.rules:
            if rule.provider != provider or rule.endpoint != endpoint:
                continue
            if rule.token is not None and rule.token != token:
                continue
            if rule.times is not None:
                rule.times -= 1
                if rule.times <= 0:
                    self.rules.remove(rule)
            if rule.delay:
                _DELAY.set(max(_DELAY.get(), rule.delay))
            return rule
        return None


# The answer delay a matched rule asked for, per request (each request is handled in its own task and context).
_DELAY: contextvars.ContextVar[float] = contextvars.ContextVar("fake_delay", default=0.0)


async def read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


async def respond(send: Send, status: int, headers: dict[str, str], body: Any, *, raw: bytes | None = None) -> None:
    payload = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
    hdrs = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    if payload and not any(k == b"content-type" for k, _ in hdrs):
        hdrs.append((b"content-type", b"application/json; charset=utf-8"))
    hdrs.append((b"content-length", str(len(payload)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": payload})


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None


class FakeApp:
    """ASGI app; the provider is chosen by the local port the request arrived on."""

    def __init__(self, state: FakeState, port_base: int) -> None:
        self.state = state
        self.port_base = port_base

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        path: str = scope["path"]
        if path.startswith("/_fake/"):
            status, headers, payload = self.control(scope["method"], path, body)
            await respond(send, status, headers, payload)
            return
        server = scope.get("server") or ("", 0)
        offset = int(server[1]) - self.port_base
        if not 0 <= offset < len(PROVIDERS):
            await respond(send, 404, {}, {"error": "unknown port"})
            return
        provider = PROVIDERS[offset]
        stats = self.state.stats[provider]
        client = scope.get("client") or ("?", 0)
        if path != "/token":  # the OAuth exchange comes from google-auth's own (requests) connection
            stats.connections.add(f"{client[0]}:{client[1]}")
            stats.http_versions[scope.get("http_version", "?")] += 1
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        _DELAY.set(0.0)
        try:
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            handler = getattr(self, f"_{provider}")
            status, out_headers, payload = await handler(scope["method"], path, headers, body, scope)
            if _DELAY.get():  # handled (a send is accepted and counted), but the answer comes late or never
                await asyncio.sleep(_DELAY.get())
        finally:
            stats.in_flight -= 1
        if path != "/token":
            stats.requests += 1
        stats.responses[str(status)] += 1
        if isinstance(payload, bytes):
            await respond(send, status, out_headers, None, raw=payload)
        else:
            await respond(send, status, out_headers, payload)

    # --- control ----------------------------------------------------------------------------------------------
    def control(self, method: str, path: str, body: bytes) -> Response:
        raw = _json_or_none(body) or {}
        try:
            if path == "/_fake/stats":
                return 200, {}, {p: s.as_json() for p, s in self.state.stats.items()}
            if path == "/_fake/reset" and method == "POST":
                self.state.reset(registrations=bool(raw.get("registrations")))
                return 200, {}, {"ok": True}
            if path == "/_fake/script" and method == "POST":
                if raw.get("clear"):  # drop every rule not yet used up, keep the counters
                    self.state.rules.clear()
                rules = raw.get("rules", [raw] if "provider" in raw else [])
                self.state.rules.extend(Rule.parse(r) for r in rules)
                return 200, {}, {"ok": True, "rules": len(self.state.rules)}
            if path == "/_fake/register" and method == "POST":
                self.state.register(raw)
                return 200, {}, {"ok": True}
            if path == "/_fake/fcm/revoke" and method == "POST":
                self.state.fcm_tokens.clear()
                return 200, {}, {"ok": True}
        except (KeyError, ValueError, TypeError) as exc:
            return 400, {}, {"error": f"{type(exc).__name__}: {exc}"}
        return 404, {}, {"error": "unknown control endpoint"}

    # --- FCM ----------------------------------------------------------------------------------------------------
    async def _fcm(self, method: str, path: str, headers: dict[str, str], body: bytes, scope: Scope) -> Response:
        if path == "/token":
            return self._google_token(headers, body, scope)
        parts = path.split("/")
        # /v1/projects/{p}/messages:send
        if (
            method != "POST"
            or len(parts) != 5
            or parts[1] != "v1"
            or parts[2] != "projects"
            or parts[4] != ("messages:send")
        ):
            return 404, {}, {"error": {"code": 404, "message": "Not Found", "status": "NOT_FOUND"}}
        bearer = headers.get("authorization", "")
        expiry = self.state.fcm_tokens.get(bearer[7:]) if bearer.lower().startswith("bearer ") else None
        if expiry is None or expiry < time.time():
            return FCM_ERRORS["UNAUTHENTICATED"]()
        req = _json_or_none(body)
        msg = req.get("message") if isinstance(req, dict) else None
        if not isinstance(msg, dict):
            return fcm_error(400, "INVALID_ARGUMENT", "Request contains an invalid argument.", "INVALID_ARGUMENT")
        targets = [k for k in ("token", "topic", "condition", "fid") if k in msg]
        token = msg.get("token") or msg.get("fid")
        rule = self.state.take_rule("fcm", token)
        if rule and rule.response:
            return rule.response()
        if len(targets) != 1:
            return fcm_error(
                400, "INVALID_ARGUMENT", "Exactly one of token, topic, condition or fid must be set", "INVALID_ARGUMENT"
            )
        for i, value in enumerate((msg.get("data") or {}).values()):
            if not isinstance(value, str):
                return fcm_error(
                    400,
                    "INVALID_ARGUMENT",
                    f"Invalid value at 'message.data[{i}].value' (TYPE_STRING), {json.dumps(value)}",
                    None,
                    _field_violation(f"message.data[{i}].value", f"Invalid value at 'message.data[{i}].value'"),
                )
        if len(body) > MAX_PAYLOAD + 512:
            return fcm_error(400, "INVALID_ARGUMENT", "Message is too big", "INVALID_ARGUMENT")
        if isinstance(token, str) and token.startswith("dead"):
            return FCM_ERRORS["UNREGISTERED"]()
        if isinstance(token, str) and token.startswith("bad"):
            return FCM_ERRORS["INVALID_REGISTRATION"]()
        message_id = f"0:{int(time.time() * 1000)}%{secrets.token_hex(8)}"
        if not req.get("validate_only"):
            stats = self.state.stats["fcm"]
            stats.accepted += 1
            stats.by_token[str(token or msg.get("topic") or msg.get("condition"))] += 1
        return 200, {}, {"name": f"projects/{parts[3]}/messages/{message_id}"}

    def _google_token(self, headers: dict[str, str], body: bytes, scope: Scope) -> Response:
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" or "assertion" not in form:
            return 400, {}, {"error": "unsupported_grant_type", "error_description": "Invalid grant_type."}
        assertion = form["assertion"]
        try:
            claims = jwt.decode(assertion, options={"verify_signature": False})
            key = self.state.public_key("fcm", str(claims.get("iss")))
            if key is None:
                return 400, {}, {"error": "invalid_grant", "error_description": "Invalid grant: account not found"}
            host = headers.get("host") or f"127.0.0.1:{scope['server'][1]}"
            port = scope["server"][1]
            # google-auth 2.63.0 always puts Google's endpoint in aud (not token_uri); accept it and our own URL.
            audiences = [GOOGLE_TOKEN_URI, f"http://{host}/token", f"http://127.0.0.1:{port}/token"]
            claims = jwt.decode(assertion, key, algorithms=["RS256"], audience=audiences, options={"require": ["exp"]})
        except jwt.InvalidTokenError as exc:
            return 400, {}, {"error": "invalid_grant", "error_description": f"Invalid JWT: {type(exc).__name__}"}
        scopes = str(claims.get("scope", "")).split()
        if not any(s in FCM_SCOPES for s in scopes):
            return 400, {}, {"error": "invalid_scope", "error_description": "Invalid OAuth scope or ID token audience."}
        access = f"ya29.fake-{secrets.token_urlsafe(24)}"
        self.state.fcm_tokens[access] = time.time() + 3599
        self.state.stats["fcm"].token_grants += 1
        return 200, {}, {"access_token": access, "expires_in": 3599, "token_type": "Bearer"}

    # --- APNs ---------------------------------------------------------------------------------------------------
    async def _apns(self, method: str, path: str, headers: dict[str, str], body: bytes, scope: Scope) -> Response:
        if not path.startswith("/3/device/"):
            return apns_error("BadPath")
        if method != "POST":
            return apns_error("MethodNotAllowed")
        token = path[len("/3/device/") :]
        apns_id = headers.get("apns-id") or str(uuid.uuid4())
        out = {"apns-id": apns_id}
        if headers.get("apns-id"):
            try:
                if str(uuid.UUID(apns_id)) != apns_id.lower():
                    raise ValueError
            except ValueError:
                return _with(apns_error("BadMessageId"), out)
        auth = self._apns_auth(headers.get("authorization", ""))
        if auth is not None:
            return _with(auth, out)
        rule = self.state.take_rule("apns", token)
        if rule and rule.response:
            if rule.error == "ExpiredProviderToken":
                team = self._apns_team(headers["authorization"][7:])
                team.expired.add(headers["authorization"][7:])
            return _with(rule.response(), out)
        if not token:
            return _with(apns_error("MissingDeviceToken"), out)
        if not headers.get("apns-topic"):
            return _with(apns_error("MissingTopic"), out)
        if headers.get("apns-priority", "10") not in ("10", "5", "1"):
            return _with(apns_error("BadPriority"), out)
        if "apns-expiration" in headers and not headers["apns-expiration"].isdigit():
            return _with(apns_error("BadExpirationDate"), out)
        if len(headers.get("apns-collapse-id", "").encode()) > 64:
            return _with(apns_error("BadCollapseId"), out)
        push_type = headers.get("apns-push-type", "alert")
        if push_type not in ("alert", "background", "location", "voip", "complication", "fileprovider", "mdm",
                             "liveactivity", "pushtotalk", "widgets", "controls"):  # fmt: skip
            return _with(apns_error("InvalidPushType"), out)
        if not body:
            return _with(apns_error("PayloadEmpty"), out)
        if len(body) > MAX_PAYLOAD:
            return _with(apns_error("PayloadTooLarge"), out)
        if token.startswith("dead"):
            return _with(apns_error("Unregistered"), out)
        if token.startswith("bad") or not all(c in "0123456789abcdefABCDEF" for c in token):
            return _with(apns_error("BadDeviceToken"), out)
        stats = self.state.stats["apns"]
        stats.accepted += 1
        stats.by_token[token] += 1
        stats.by_message[apns_id] += 1
        return 200, out, None

    def _apns_team(self, token: str) -> ApnsTeamState:
        claims = jwt.decode(token, options={"verify_signature": False})
        return self.state.apns_teams[str(claims.get("iss"))]

    def _apns_auth(self, authorization: str) -> Response | None:
        if not authorization.lower().startswith("bearer "):
            return apns_error("MissingProviderToken")
        token = authorization[7:]
        try:
            header = jwt.get_unverified_header(token)
            key = self.state.public_key("apns", str(header.get("kid")))
            if key is None or header.get("alg") != "ES256":
                return apns_error("InvalidProviderToken")
            claims = jwt.decode(token, key, algorithms=["ES256"], options={"require": ["iat", "iss"]})
        except jwt.InvalidTokenError:
            return apns_error("InvalidProviderToken")
        reg = self.state.registrations["apns"].get(str(header["kid"]), {})
        if reg.get("team_id") and reg["team_id"] != claims["iss"]:
            return apns_error("InvalidProviderToken")
        now = time.time()
        if now - float(claims["iat"]) > APNS_JWT_MAX_AGE:
            return apns_error("ExpiredProviderToken")
        team = self.state.apns_teams[str(claims["iss"])]
        if token in team.expired:
            return apns_error("ExpiredProviderToken")
        if token not in team.tokens:
            previous_expired = any(t in team.expired for t in team.tokens)
            if team.last_new is not None and now - team.last_new < APNS_TOKEN_UPDATE_WINDOW and not previous_expired:
                return apns_error("TooManyProviderTokenUpdates")
            team.tokens = {token: now}
            team.expired.clear()
            team.last_new = now
            self.state.stats["apns"].jwt_signs += 1
        return None

    # --- OneSignal ----------------------------------------------------------------------------------------------
    async def _onesignal(self, method: str, path: str, headers: dict[str, str], body: bytes, scope: Scope) -> Response:
        if path != "/notifications" or method != "POST":
            return 404, {}, {"errors": ["Not Found"]}
        auth = headers.get("authorization", "")
        scheme, _, key = auth.partition(" ")
        reg = self.state.registrations["onesignal"].get(key) if scheme in ("Key", "Basic") else None
        if reg is None:
            return ONESIGNAL_ERRORS["unauthorized"]()
        req = _json_or_none(body)
        if not isinstance(req, dict):
            return 400, {}, {"errors": ["Invalid JSON"]}
        if req.get("app_id") != reg.get("app_id"):
            return (
                400,
                {},
                {"errors": ["app_id not found. You may be missing a Content-Type: application/json header."]},
            )
        ikey = req.get("idempotency_key") or req.get("external_id")
        stats = self.state.stats["onesignal"]
        if ikey and ikey in self.state.onesignal_sent:
            stats.duplicates += 1
            return self.state.onesignal_sent[ikey]
        subs = req.get("include_subscription_ids") or req.get("include_player_ids")
        aliases = (req.get("include_aliases") or {}).get("external_id")
        modes = [m for m in (subs, aliases, req.get("included_segments"), req.get("filters")) if m]
        if len(modes) != 1:
            return 400, {}, {"errors": ["You must include which players, segments, or tags you wish to send this to."]}
        recipients = [str(r) for r in (subs or aliases or [])]
        if len(recipients) > 2000:
            return 400, {}, {"errors": ["You may only send to up to 2000 subscription ids per request."]}
        if not (req.get("contents") or {}).get("en") and not req.get("template_id"):
            return ONESIGNAL_ERRORS["bad_request"]()
        rule = self.state.take_rule("onesignal", recipients[0] if len(recipients) == 1 else None)
        if rule and rule.response:
            result = rule.response()
        else:
            dead = [r for r in recipients if r.startswith(("dead", "bad"))]
            live = [r for r in recipients if r not in dead]
            if not live and recipients:
                if aliases:
                    result = (200, {}, {"id": "", "errors": {"invalid_aliases": {"external_id": dead}}})
                else:
                    result = ONESIGNAL_ERRORS["not_subscribed"]()
            else:
                result_body: dict[str, Any] = {"id": str(uuid.uuid4()), "external_id": ikey}
                if dead:
                    result_body["errors"] = {"invalid_player_ids": dead}
                result = (200, {}, result_body)
                stats.accepted += 1
                for r in live:
                    stats.by_token[r] += 1
                if ikey:
                    stats.by_idempotency_key[ikey] += 1
        if ikey and result[0] == 200:
            self.state.onesignal_sent[ikey] = result
        return result

    # --- Braze --------------------------------------------------------------------------------------------------
    async def _braze(self, method: str, path: str, headers: dict[str, str], body: bytes, scope: Scope) -> Response:
        reset = str(int(time.time() // 3600 * 3600 + 3600))
        limits = {"x-ratelimit-limit": "250000", "x-ratelimit-remaining": "249999", "x-ratelimit-reset": reset}
        if path != "/messages/send" or method != "POST":
            return _with(BRAZE_ERRORS["not_found"](), limits)
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.state.registrations["braze"]:
            return _with(BRAZE_ERRORS["unauthorized"](), limits)
        req = _json_or_none(body)
        if not isinstance(req, dict) or not isinstance(req.get("messages"), dict):
            return _with(BRAZE_ERRORS["bad_request"](), limits)
        users = req.get("external_user_ids") or []
        if len(users) > 50:
            return _with((400, {}, {"message": "external_user_ids cannot exceed 50"}), limits)
        rule = self.state.take_rule("braze", users[0] if len(users) == 1 else None)
        if rule and rule.response:
            status, hdrs, payload = rule.response()
            return status, {**limits, **hdrs}, payload
        stats = self.state.stats["braze"]
        stats.accepted += 1
        for u in users:
            stats.by_token[str(u)] += 1
        return 201, limits, {"dispatch_id": secrets.token_hex(16), "message": "success"}

    # --- Expo ---------------------------------------------------------------------------------------------------
    async def _expo(self, method: str, path: str, headers: dict[str, str], body: bytes, scope: Scope) -> Response:
        if method != "POST" or path not in ("/--/api/v2/push/send", "/--/api/v2/push/getReceipts"):
            return 404, {}, {"errors": [{"code": "NOT_FOUND", "message": "Not found"}]}
        if self.state.registrations["expo"]:
            auth = headers.get("authorization", "")
            if not auth.startswith("Bearer ") or auth[7:] not in self.state.registrations["expo"]:
                return EXPO_REQUEST_ERRORS["UNAUTHORIZED"]
        req = _json_or_none(body)
        if path.endswith("getReceipts"):
            receipts_rule = self.state.take_rule("expo", None, endpoint="getReceipts")
            if receipts_rule and receipts_rule.response:
                return receipts_rule.response()
            ids = req.get("ids") if isinstance(req, dict) else None
            if not isinstance(ids, list):
                return 400, {}, {"errors": [{"code": "VALIDATION_ERROR", "message": '"ids" is required'}]}
            if len(ids) > 1000:
                return 400, {}, {"errors": [{"code": "PUSH_TOO_MANY_RECEIPTS", "message": "Too many receipts"}]}
            return 200, {}, {"data": {i: self.state.expo_receipts[i] for i in ids if i in self.state.expo_receipts}}
        messages = req if isinstance(req, list) else [req]
        if len(messages) > 100:
            return 400, {}, {"errors": [{"code": "PUSH_TOO_MANY_NOTIFICATIONS", "message": "more than 100"}]}
        rule = self.state.take_rule("expo", None) if any(r.token is None for r in self.state.rules) else None
        if rule and rule.response:
            return rule.response()
        stats = self.state.stats["expo"]
        tickets: list[dict[str, Any]] = []
        for m in messages:
            to = m.get("to") if isinstance(m, dict) else None
            if not isinstance(to, str):
                tickets.append(_expo_error("DeveloperError", '"to" must be a single push token'))
                continue
            token_rule = self.state.take_rule("expo", to) if any(r.token == to for r in self.state.rules) else None
            if token_rule and token_rule.error and not token_rule.receipt_error:
                tickets.append(_expo_error(token_rule.error, f'"{to}" failed'))
                continue
            well_formed = to.startswith(("ExponentPushToken[", "ExpoPushToken[")) and to.endswith("]")
            if not well_formed or "dead" in to:
                tickets.append(
                    _expo_error("DeviceNotRegistered", f'"{to}" is not a registered push notification recipient')
                )
                continue
            ticket_id = str(uuid.uuid4())
            receipt: dict[str, Any] = {"status": "ok"}
            if token_rule and token_rule.receipt_error:
                receipt = _expo_error(token_rule.receipt_error, f'"{to}" failed at the provider')
            self.state.expo_receipts[ticket_id] = receipt
            tickets.append({"status": "ok", "id": ticket_id})
            stats.accepted += 1
            stats.by_token[to] += 1
        return 200, {}, {"data": tickets}


def _expo_error(error: str, message: str) -> dict[str, Any]:
    return {"status": "error", "message": message, "details": {"error": error}}


def _with(resp: Response, headers: dict[str, str]) -> Response:
    return resp[0], {**headers, **resp[1]}, resp[2]


# --- process entry ------------------------------------------------------------------------------------------------


def build_config(port_base: int, host: str, max_requests: int | None) -> Any:
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"{host}:{port_base + i}" for i in range(len(PROVIDERS))]
    config.h2_max_concurrent_streams = 100  # FCM's per-connection stream cap; hypercorn answers with RST beyond it
    config.keep_alive_max_requests = max_requests or 2**31  # GOAWAY after N requests (real frontends retire too)
    config.accesslog = None
    config.errorlog = "-"
    config.loglevel = "WARNING"
    return config


async def _announce(state_dir: Path | None, host: str, port_base: int) -> None:
    """Write ``ready.json`` once every port accepts connections (tests may also just poll /_fake/stats)."""
    for _ in range(500):
        try:
            for i in range(len(PROVIDERS)):
                _, writer = await asyncio.open_connection(host, port_base + i)
                writer.close()
            break
        except OSError:
            await asyncio.sleep(0.02)
    if state_dir is not None:
        ports = {p: port_base + i for i, p in enumerate(PROVIDERS)}
        tmp = state_dir / "ready.json.tmp"
        tmp.write_text(json.dumps({"pid": os.getpid(), "host": host, "ports": ports}))
        tmp.replace(state_dir / "ready.json")


async def serve(
    port_base: int, state_dir: Path | None, host: str = "127.0.0.1", max_requests: int | None = None
) -> None:
    import signal

    from hypercorn.asyncio import serve as hypercorn_serve

    if state_dir is not None:
        state_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            (state_dir / "ready.json").unlink()
    app = FakeApp(FakeState(state_dir), port_base)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    announce = asyncio.create_task(_announce(state_dir, host, port_base))
    await hypercorn_serve(app, build_config(port_base, host, max_requests), shutdown_trigger=stop.wait)  # type: ignore[arg-type]
    announce.cancel()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m infra.local.fakes", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--port-base", type=int, default=18400, help="FCM on N, APNs N+1, OneSignal N+2, Braze N+3, Expo N+4"
    )
    parser.add_argument("--state-dir", type=Path, default=None, help="ready.json is written here; register.json read")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--max-requests-per-connection", type=int, default=None, help="send GOAWAY after N requests")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.port_base, args.state_dir, args.host, args.max_requests_per_connection))


if __name__ == "__main__":
    main()

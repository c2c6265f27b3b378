"""The local event router: plays Eventarc between the emulators and the functions.

Pub/Sub emulator push subscriptions deliver here:

* ``/push/<function>/projects/<P>/topics/<T>``: the delivery becomes a ``google.cloud.pubsub.topic.v1.messagePublished``
  CloudEvent with source ``//pubsub.googleapis.com/projects/<P>/topics/<T>`` (in the cloud these are Terraform-managed
  push subscriptions, whose raw pushes functions-framework turns into the same CloudEvent:
  tests/integration/test_raw_push.py); the functions take the tenant from that topic;
* ``/notifications/projects/<P>/topics/<T>``: fake-gcs-server publishes every bucket's notifications to one topic (it
  has no notificationConfigs API), so the router plays each tenant bucket's notification config: an OBJECT_FINALIZE
  of a tenant's bucket is republished, unchanged, to ``object-notifications.<tenant>``, whose push subscription
  brings it to ``ingest_file`` with the cloud's retry and dead-letter policy. Other buckets and event types have no
  notification config, as in the cloud.

The function's status is passed back, so a raised exception (HTTP 500) makes the emulator redeliver, as in production.
The router also keeps the bookkeeping that ``landline wait`` needs (in-flight deliveries, messages waiting for a
retry, objects dropped but not yet ingested), which the emulator does not expose. Never deployed.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from shared.config import TENANT_TOPIC_SEPARATOR, tenant_topic
from shared.envelopes import PUBSUB_PUBLISHED

log = logging.getLogger("landline.router")
_SETTLED_LIMIT = 100_000  # settled keys remembered (a few MB at most); far more than one test session drops


class RouterState:
    """Delivery bookkeeping, shared by the handler threads."""

    def __init__(self, max_delivery_attempts: int) -> None:
        self.lock = threading.Lock()
        self.inflight: dict[str | None, int] = {}  # tenant (None: no tenant, e.g. a tick) -> deliveries running
        self.inflight_functions: dict[str, int] = {}  # function (or "notifications") -> deliveries running
        self.last_activity: dict[str | None, float] = {None: time.monotonic()}  # None: any tenant
        self.max_attempts = max_delivery_attempts
        self.failing: dict[str, int] = {}  # message id -> failed attempts, until it succeeds or is dead-lettered
        # "bucket/object#generation" dropped and not yet ingested, "msg:<id>" published and not yet processed; each
        # with its tenant when the announcer or the topic says which (for `landline wait --tenant`)
        self.expected: dict[str, str | None] = {}
        # Keys already settled (ingested, processed or dead-lettered): an /expect that arrives after its object was
        # already handled (a small file can be ingested before `drop` reports it) must not wait for it forever.
        self.settled: dict[str, None] = {}
        self.tenant_of: dict[str, str | None] = {}  # message id -> tenant, while it is failing
        self.counts: dict[tuple[str, str | None, str], int] = {}  # (delivered|failures|dead_lettered, tenant, name)

    def settle(self, *keys: str | None) -> None:
        """Call with the lock held: these keys will not be delivered again."""
        for key in keys:
            if key:
                self.expected.pop(key, None)
                self.settled[key] = None
        while len(self.settled) > _SETTLED_LIMIT:  # oldest first (dicts keep insertion order)
            del self.settled[next(iter(self.settled))]

    def expect(self, keys: list[str], tenant: str | None = None) -> None:
        """``landline drop``/``tick`` announce what they started; what already settled is not waited for."""
        with self.lock:
            for key in keys:
                if key not in self.settled:
                    self.expected[key] = tenant or self.expected.get(key)
            self.touch(tenant)

    def touch(self, tenant: str | None) -> None:
        """Call with the lock held: something happened (for the tenant, if known)."""
        now = time.monotonic()
        self.last_activity[None] = now
        if tenant:
            self.last_activity[tenant] = now

    def count(self, kind: str, tenant: str | None, name: str, n: int = 1) -> None:
        """Call with the lock held."""
        self.counts[kind, tenant, name] = self.counts.get((kind, tenant, name), 0) + n

    def snapshot(self, tenant: str | None = None) -> dict[str, Any]:
        """What `landline wait` polls: for the whole stack, or only what is known to be ``tenant``'s."""
        with self.lock:
            mine = (lambda t: True) if tenant is None else (lambda t: t == tenant)

            def counted(kind: str) -> dict[str, int]:
                out: dict[str, int] = {}
                for (k, t, name), n in self.counts.items():
                    if k == kind and mine(t):
                        out[name] = out.get(name, 0) + n
                return out

            last = self.last_activity.get(tenant, 0.0) if tenant else self.last_activity[None]
            return {
                "tenant": tenant,
                "inflight": sum(n for t, n in self.inflight.items() if mine(t)),
                "inflight_functions": {k: n for k, n in self.inflight_functions.items() if n},  # the whole stack
                "idle_seconds": round(time.monotonic() - last, 3),
                "awaiting_retry": sum(1 for m in self.failing if mine(self.tenant_of.get(m))),
                "dead_lettered": sum(counted("dead_lettered").values()),
                "expected_objects": sorted(k for k, t in self.expected.items() if mine(t)),
                "delivered": counted("delivered"),
                "failures": counted("failures"),
                # What a deployment is billed for (bench/cost): push deliveries and their message bytes (data plus
                # attribute keys and values, Pub/Sub's message size) by topic, and request time by function.
                "pushes": counted("pushes"),
                "push_bytes": counted("push_bytes"),
                "busy_ms": counted("busy_ms"),
            }


def _pubsub_event(body: dict[str, Any], project: str, topic: str) -> tuple[dict[str, str], bytes]:
    message = body.get("message") or {}
    headers = {
        "ce-id": message.get("messageId") or str(uuid.uuid4()),
        "ce-specversion": "1.0",
        "ce-type": PUBSUB_PUBLISHED,
        "ce-source": f"//pubsub.googleapis.com/projects/{project}/topics/{topic}",
        "ce-time": message.get("publishTime") or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "content-type": "application/json",
    }
    return headers, json.dumps({"message": message, "subscription": body.get("subscription")}).encode()


def object_key(attributes: dict[str, str]) -> str | None:
    """``bucket/object#generation`` of an object notification (what `landline drop` tells the router to expect)."""
    if attributes.get("eventType") != "OBJECT_FINALIZE":
        return None
    bucket, name, generation = (
        attributes.get("bucketId"),
        attributes.get("objectId"),
        attributes.get("objectGeneration"),
    )
    return f"{bucket}/{name}#{generation}" if bucket and name and generation else None


def _tenants_by_bucket(tenants_file: str | None) -> dict[str, str]:
    """Bucket -> tenant, from the registry the functions read (re-read on every notification: tenants come and go)."""
    if not tenants_file:
        return {}
    try:
        with open(tenants_file) as handle:
            return {t["bucket"]: name for name, t in json.load(handle).items()}
    except (OSError, ValueError, KeyError, AttributeError):
        return {}


def notification_target(message: dict[str, Any], tenants_file: str | None, base_topic: str) -> str | None:
    """The topic Cloud Storage would publish this notification to: each tenant bucket has a notification config for
    OBJECT_FINALIZE to its tenant's ``object-notifications.<tenant>`` (Terraform); other buckets (claims) have none,
    and neither has one for other event types."""
    attributes = message.get("attributes") or {}
    if attributes.get("eventType") != "OBJECT_FINALIZE":
        return None  # fake-gcs-server also reports OBJECT_DELETE on overwrite
    tenant = _tenants_by_bucket(tenants_file).get(attributes.get("bucketId", ""))
    return tenant_topic(base_topic, tenant) if tenant else None


class Republisher:
    """Publishes to the Pub/Sub emulator over its REST API (the router keeps no gRPC client)."""

    def __init__(self, client: httpx.Client, pubsub_host: str, project: str) -> None:
        self.client, self.base, self.project = client, f"http://{pubsub_host}/v1", project

    def publish(self, topic: str, message: dict[str, Any]) -> str:
        body = {"messages": [{"data": message.get("data") or "", "attributes": message.get("attributes") or {}}]}
        response = self.client.post(
            f"{self.base}/projects/{self.project}/topics/{topic}:publish", json=body, timeout=30
        )
        response.raise_for_status()
        return str(response.json()["messageIds"][0])


def make_handler(
    state: RouterState,
    functions: dict[str, str],
    client: httpx.Client,
    *,
    tenants_file: str | None = None,
    notifications_base: str = "object-notifications",
    republisher: Republisher | None = None,
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            log.debug(format, *args)

        def _reply(self, status: int, payload: dict[str, Any] | None = None) -> None:
            body = json.dumps(payload or {}).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("content-length") or 0))

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/healthz":
                self._reply(200, {"ok": True})
            elif url.path == "/stats":
                self._reply(200, state.snapshot(parse_qs(url.query).get("tenant", [""])[0] or None))
            else:
                self._reply(404, {"error": "not found"})

        def do_POST(self) -> None:
            if self.path == "/expect":  # a list of keys, or {"tenant": T, "keys": [...]}
                body = json.loads(self._body() or b"[]")
                keys, tenant = (body, None) if isinstance(body, list) else (body.get("keys", []), body.get("tenant"))
                state.expect(keys, tenant)
                self._reply(200, {"expected": len(keys)})
                return
            parts = self.path.strip("/").split("/")
            # /push/<function>/projects/<P>/topics/<T> or /notifications/projects/<P>/topics/<T>
            if parts[:1] == ["notifications"] and len(parts) == 5 and parts[1] == "projects" and parts[3] == "topics":
                self._fan_out(json.loads(self._body() or b"{}"))
                return
            if len(parts) != 6 or parts[0] != "push" or parts[2] != "projects" or parts[4] != "topics":
                self._reply(404, {"error": f"unknown path {self.path}"})
                return
            function, project, topic = parts[1], parts[3], parts[5]
            target = functions.get(function)
            if target is None:
                self._reply(404, {"error": f"unknown function {function}"})
                return
            body = json.loads(self._body() or b"{}")
            message = body.get("message") or {}
            headers, payload = _pubsub_event(body, project, topic)
            status = 500
            started = time.monotonic()
            with _Delivery(
                state, function, str(message.get("messageId") or ""), object_key(message.get("attributes") or {}),
                tenant=topic_tenant(topic),
            ) as delivery:
                try:
                    status = client.post(target, content=payload, headers=headers).status_code
                except httpx.HTTPError as exc:
                    log.warning("delivery to %s failed: %s", function, exc)
                delivery.ok = 200 <= status < 300
            tenant, base = topic_tenant(topic), topic.partition(TENANT_TOPIC_SEPARATOR)[0]
            with state.lock:
                state.count("pushes", tenant, base)
                state.count("push_bytes", tenant, base, message_size(message))
                state.count("busy_ms", tenant, function, round((time.monotonic() - started) * 1000))
            self._reply(200 if 200 <= status < 300 else 500, {"function_status": status})

        def _fan_out(self, body: dict[str, Any]) -> None:
            """Play the bucket's notification config: republish to the bucket tenant's object-notifications topic."""
            message = body.get("message") or {}
            target = notification_target(message, tenants_file, notifications_base)
            if target is None or republisher is None:
                self._reply(200, {"ignored": "no notification config for this bucket and event type"})
                return
            key = object_key(message.get("attributes") or {})
            tenant = topic_tenant(target)
            with _Delivery(
                state, "notifications", str(message.get("messageId") or ""), key, settle_key=False, tenant=tenant
            ) as delivery:
                try:
                    published = republisher.publish(target, message)
                    state.expect([f"msg:{published}", *([key] if key else [])], tenant)
                    delivery.ok = True
                except (httpx.HTTPError, KeyError, ValueError) as exc:
                    log.warning("republishing a notification to %s failed: %s", target, exc)
            self._reply(200 if delivery.ok else 500, {"topic": target})

    return Handler


def message_size(message: dict[str, Any]) -> int:
    """A pushed message's size as Pub/Sub counts it: its data plus its attributes' keys and values (UTF-8)."""
    data = base64.b64decode(message.get("data") or "")
    attributes = message.get("attributes") or {}
    return len(data) + sum(len(k.encode()) + len(str(v).encode()) for k, v in attributes.items())


def topic_tenant(topic: str) -> str | None:
    """The tenant of a per-tenant topic (``raw-events.acme`` -> ``acme``); None for a shared one (``send-ticks``)."""
    _base, separator, tenant = topic.partition(TENANT_TOPIC_SEPARATOR)
    return tenant if separator and tenant else None


class _Delivery:
    """Bookkeeping around one push delivery: in flight while it runs, then settled, or counted towards dead-lettering
    (after the subscription's last attempt the emulator moves it to the dead-letter topic: nothing more will come).
    ``settle_key=False``: success passes the object on (to its tenant's topic), so it is still expected."""

    def __init__(
        self, state: RouterState, name: str, message_id: str, key: str | None, *, settle_key: bool = True,
        tenant: str | None = None,
    ) -> None:  # fmt: skip
        self.state, self.name, self.message_id, self.key, self.settle_key = state, name, message_id, key, settle_key
        self.tenant = tenant
        self.ok = False

    def __enter__(self) -> _Delivery:
        with self.state.lock:
            self.state.inflight[self.tenant] = self.state.inflight.get(self.tenant, 0) + 1
            self.state.inflight_functions[self.name] = self.state.inflight_functions.get(self.name, 0) + 1
            self.state.touch(self.tenant)
        return self

    def __exit__(self, *exc: object) -> None:
        state = self.state
        with state.lock:
            state.inflight[self.tenant] -= 1
            state.inflight_functions[self.name] -= 1
            state.touch(self.tenant)
            if self.ok:
                state.count("delivered", self.tenant, self.name)
                state.failing.pop(self.message_id, None)
                state.tenant_of.pop(self.message_id, None)
                state.settle(f"msg:{self.message_id}", self.key if self.settle_key else None)
                return
            state.count("failures", self.tenant, self.name)
            attempts = state.failing.get(self.message_id, 0) + 1
            if attempts >= state.max_attempts:
                state.failing.pop(self.message_id, None)
                state.tenant_of.pop(self.message_id, None)
                state.count("dead_lettered", self.tenant, self.name)
                state.settle(f"msg:{self.message_id}", self.key)
            else:
                state.failing[self.message_id] = attempts
                state.tenant_of[self.message_id] = self.tenant


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--function", action="append", default=[], help="NAME=URL")
    parser.add_argument("--project", required=True)
    parser.add_argument("--pubsub", required=True, help="HOST:PORT of the Pub/Sub emulator")
    parser.add_argument("--notifications-base", default="object-notifications", help="per-tenant notification topic")
    parser.add_argument("--max-delivery-attempts", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s router %(levelname)s %(message)s")
    functions = dict(item.split("=", 1) for item in args.function)
    state = RouterState(args.max_delivery_attempts)
    # Deliveries wait for the function (up to the ack deadline); keep-alive connections per target.
    client = httpx.Client(timeout=httpx.Timeout(600.0, connect=5.0), limits=httpx.Limits(max_connections=64))
    handler = make_handler(
        state,
        functions,
        client,
        tenants_file=os.environ.get("LANDLINE_TENANTS_FILE"),
        notifications_base=args.notifications_base,
        republisher=Republisher(client, args.pubsub, args.project),
    )
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler)
    server.daemon_threads = True
    log.info("router on 127.0.0.1:%d -> %s", args.port, functions)
    server.serve_forever()


if __name__ == "__main__":
    main()

"""The local event router: plays Eventarc between the emulators and the functions.

Pub/Sub emulator push subscriptions deliver here, at ``/push/<function>/projects/<P>/topics/<T>``:

* deliveries from the storage-notification topic become ``google.cloud.storage.object.v1.finalized`` CloudEvents
  (data = the object resource, as Eventarc sends it) for ``ingest_file``;
* deliveries from any other topic become ``google.cloud.pubsub.topic.v1.messagePublished`` CloudEvents (in the
  cloud these are Terraform-managed push subscriptions, whose raw pushes functions-framework turns into the same
  CloudEvent: tests/integration/test_raw_push.py).

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

import httpx

from shared.envelopes import PUBSUB_PUBLISHED, STORAGE_FINALIZED

log = logging.getLogger("landline.router")
_SETTLED_LIMIT = 100_000  # settled keys remembered (a few MB at most); far more than one test session drops


class RouterState:
    """Delivery bookkeeping, shared by the handler threads."""

    def __init__(self, max_delivery_attempts: int) -> None:
        self.lock = threading.Lock()
        self.inflight = 0
        self.last_activity = time.monotonic()
        self.max_attempts = max_delivery_attempts
        self.failing: dict[str, int] = {}  # message id -> failed attempts, until it succeeds or is dead-lettered
        self.dead_lettered = 0
        # "bucket/object#generation" dropped and not yet ingested, "msg:<id>" published and not yet processed
        self.expected: set[str] = set()
        # Keys already settled (ingested, processed or dead-lettered): an /expect that arrives after its object was
        # already handled (a small file can be ingested before `drop` reports it) must not wait for it forever.
        self.settled: dict[str, None] = {}
        self.delivered: dict[str, int] = {}
        self.failures: dict[str, int] = {}

    def settle(self, *keys: str | None) -> None:
        """Call with the lock held: these keys will not be delivered again."""
        for key in keys:
            if key:
                self.expected.discard(key)
                self.settled[key] = None
        while len(self.settled) > _SETTLED_LIMIT:  # oldest first (dicts keep insertion order)
            del self.settled[next(iter(self.settled))]

    def expect(self, keys: list[str]) -> None:
        """``landline drop``/``tick`` announce what they started; what already settled is not waited for."""
        with self.lock:
            self.expected.update(key for key in keys if key not in self.settled)
            self.last_activity = time.monotonic()

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "inflight": self.inflight,
                "idle_seconds": round(time.monotonic() - self.last_activity, 3),
                "awaiting_retry": len(self.failing),
                "dead_lettered": self.dead_lettered,
                "expected_objects": sorted(self.expected),
                "delivered": dict(self.delivered),
                "failures": dict(self.failures),
            }


def _storage_event(message: dict[str, Any], project: str) -> tuple[dict[str, str], bytes] | None:
    attributes = message.get("attributes") or {}
    if attributes.get("eventType") != "OBJECT_FINALIZE":
        return None  # fake-gcs-server also reports OBJECT_DELETE on overwrite; Eventarc would not route it here
    data = base64.b64decode(message.get("data") or b"")
    resource = json.loads(data) if data else {}
    bucket = resource.get("bucket") or attributes.get("bucketId")
    name = resource.get("name") or attributes.get("objectId")
    resource.setdefault("generation", attributes.get("objectGeneration"))
    headers = {
        "ce-id": message.get("messageId") or str(uuid.uuid4()),
        "ce-specversion": "1.0",
        "ce-type": STORAGE_FINALIZED,
        "ce-source": f"//storage.googleapis.com/projects/_/buckets/{bucket}",
        "ce-subject": f"objects/{name}",
        "ce-time": attributes.get("eventTime") or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "content-type": "application/json",
    }
    return headers, json.dumps(resource).encode()


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


def _tenant_buckets(tenants_file: str | None) -> set[str]:
    """Eventarc storage triggers are per bucket: only tenant data buckets reach ingest_file."""
    if not tenants_file:
        return set()
    try:
        with open(tenants_file) as handle:
            return {t["bucket"] for t in json.load(handle).values()}
    except (OSError, ValueError, KeyError):
        return set()


def make_handler(
    state: RouterState, functions: dict[str, str], notification_topic: str, client: httpx.Client,
    tenants_file: str | None = None,
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
            if self.path == "/healthz":
                self._reply(200, {"ok": True})
            elif self.path == "/stats":
                self._reply(200, state.snapshot())
            else:
                self._reply(404, {"error": "not found"})

        def do_POST(self) -> None:
            if self.path == "/expect":
                objects = json.loads(self._body() or b"[]")
                state.expect(objects)
                self._reply(200, {"expected": len(objects)})
                return
            parts = self.path.strip("/").split("/")
            # /push/<function>/projects/<P>/topics/<T>
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
            message_id = str(message.get("messageId") or "")
            expected_key = None
            if topic == notification_topic:
                converted = _storage_event(message, project)
                if converted is None:
                    self._reply(200, {"ignored": "not a finalize event"})
                    return
                resource = json.loads(converted[1])
                if tenants_file and resource.get("bucket") not in _tenant_buckets(tenants_file):
                    self._reply(200, {"ignored": "no trigger for this bucket"})
                    return
                expected_key = f"{resource.get('bucket')}/{resource.get('name')}#{resource.get('generation')}"
            else:
                converted = _pubsub_event(body, project, topic)
            headers, payload = converted
            with state.lock:
                state.inflight += 1
                state.last_activity = time.monotonic()
            status = 500
            try:
                response = client.post(target, content=payload, headers=headers)
                status = response.status_code
            except httpx.HTTPError as exc:
                log.warning("delivery to %s failed: %s", function, exc)
            finally:
                with state.lock:
                    state.inflight -= 1
                    state.last_activity = time.monotonic()
                    if 200 <= status < 300:
                        state.delivered[function] = state.delivered.get(function, 0) + 1
                        state.failing.pop(message_id, None)
                        state.settle(f"msg:{message_id}", expected_key)
                    else:
                        state.failures[function] = state.failures.get(function, 0) + 1
                        attempts = state.failing.get(message_id, 0) + 1
                        if attempts >= state.max_attempts:
                            # The emulator now moves it to the dead-letter topic: nothing more will come for it.
                            state.failing.pop(message_id, None)
                            state.dead_lettered += 1
                            state.settle(f"msg:{message_id}", expected_key)
                        else:
                            state.failing[message_id] = attempts
            self._reply(200 if 200 <= status < 300 else 500, {"function_status": status})

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--function", action="append", default=[], help="NAME=URL")
    parser.add_argument("--notification-topic", required=True)
    parser.add_argument("--max-delivery-attempts", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s router %(levelname)s %(message)s")
    functions = dict(item.split("=", 1) for item in args.function)
    state = RouterState(args.max_delivery_attempts)
    # Deliveries wait for the function (up to the ack deadline); keep-alive connections per target.
    client = httpx.Client(timeout=httpx.Timeout(600.0, connect=5.0), limits=httpx.Limits(max_connections=64))
    handler = make_handler(state, functions, args.notification_topic, client, os.environ.get("LANDLINE_TENANTS_FILE"))
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler)
    server.daemon_threads = True
    log.info("router on 127.0.0.1:%d -> %s", args.port, functions)
    server.serve_forever()


if __name__ == "__main__":
    main()

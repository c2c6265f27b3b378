"""Creates the topology from infra/topology.yaml in the Pub/Sub emulator, each tenant's own topics, and the default
tenant.

Shared topics (``send-ticks``, the legacy shared ``raw-events`` and ``send-requests``, and the topic fake-gcs-server
publishes every bucket's notifications to) are created when the stack comes up. A tenant's own copies
(``raw-events.<tenant>``, ``send-requests.<tenant>``, ``object-notifications.<tenant>``) are created with the tenant,
each with its dead-letter topic, a pull subscription that keeps the dead letters, and a push subscription per
function it triggers, through the router, with the retry and dead-letter policy the cloud's have.
"""

from __future__ import annotations

import os
import re
import sys
from typing import TYPE_CHECKING

from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1  # type: ignore[attr-defined, unused-ignore]
from google.protobuf import duration_pb2

from shared.config import TENANT_NAME_PATTERN, tenant_topic
from shared.errors import SetupError

if TYPE_CHECKING:
    from collections.abc import Callable

    from infra.local.stack_config import StackConfig
    from infra.local.topology import Topology

DEFAULT_TENANT = "default"
# The router's endpoint for the storage emulator's notifications: it republishes each to the bucket tenant's topic.
NOTIFICATIONS_PATH = "notifications"


def _clients(cfg: StackConfig) -> tuple[pubsub_v1.PublisherClient, pubsub_v1.SubscriberClient]:
    os.environ["PUBSUB_EMULATOR_HOST"] = f"127.0.0.1:{cfg.port('pubsub')}"
    return pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()


def push_subscription_name(function: str, topic: str, run_id: str) -> str:
    # Unique per run: re-creating a subscription with the same name stalled deliveries in the emulator.
    return f"{function}--{topic}--{run_id}"


def _create_topic_with_dead_letters(
    publisher: pubsub_v1.PublisherClient,
    subscriber: pubsub_v1.SubscriberClient,
    project: str,
    topic: str,
    topology: Topology,
) -> None:
    for name in (topic, topology.dead_letter_topic(topic)):
        try:
            publisher.create_topic(name=publisher.topic_path(project, name))
        except gexc.AlreadyExists:
            pass
    keep = subscriber.subscription_path(project, topology.keep_subscription(topic))
    try:  # a topic without subscriptions drops what is published to it: keep dead letters for inspection
        subscriber.create_subscription(
            name=keep, topic=publisher.topic_path(project, topology.dead_letter_topic(topic))
        )
    except gexc.AlreadyExists:
        pass


def _create_push_subscription(
    cfg: StackConfig, topology: Topology, subscriber: pubsub_v1.SubscriberClient, name: str, topic: str, path: str
) -> None:
    project, retry = cfg.project, topology.local.retry
    request = {
        "name": subscriber.subscription_path(project, name),
        "topic": subscriber.topic_path(project, topic),
        "push_config": {"push_endpoint": f"{cfg.url('router')}/{path}/projects/{project}/topics/{topic}"},
        "ack_deadline_seconds": topology.defaults.ack_deadline_seconds,
        "retry_policy": {
            "minimum_backoff": duration_pb2.Duration(seconds=retry.minimum_backoff_seconds),
            "maximum_backoff": duration_pb2.Duration(seconds=retry.maximum_backoff_seconds),
        },
        "dead_letter_policy": {
            "dead_letter_topic": subscriber.topic_path(project, topology.dead_letter_topic(topic)),
            "max_delivery_attempts": topology.defaults.max_delivery_attempts,
        },
    }
    try:
        subscriber.create_subscription(request=request)
    except gexc.AlreadyExists:
        pass


def create_topology(cfg: StackConfig, topology: Topology, *, pubsub_only: bool = False) -> None:
    """The shared topics and their subscriptions (``pubsub_only``: the topics alone, before the router is up)."""
    publisher, subscriber = _clients(cfg)
    notification_topic = topology.local.storage_notifications_topic
    shared = topology.shared_topics()
    for topic in [*shared, notification_topic]:
        _create_topic_with_dead_letters(publisher, subscriber, cfg.project, topic, topology)
    if pubsub_only:
        return
    for topic in shared:
        for fn_name in topology.triggered_by(topic):
            name = push_subscription_name(fn_name, topic, cfg.run_id)
            _create_push_subscription(cfg, topology, subscriber, name, topic, f"push/{fn_name}")
    name = push_subscription_name("router", notification_topic, cfg.run_id)
    _create_push_subscription(cfg, topology, subscriber, name, notification_topic, NOTIFICATIONS_PATH)


def create_tenant_topics(cfg: StackConfig, topology: Topology, tenant: str) -> list[str]:
    """The tenant's own copy of each per-tenant topic, with dead letters kept and a push subscription per function
    it triggers (what Terraform creates in the cloud). Idempotent; returns the topics."""
    if not re.fullmatch(TENANT_NAME_PATTERN, tenant):
        raise SetupError(f"invalid tenant name {tenant!r}", f"use a name matching {TENANT_NAME_PATTERN}")
    publisher, subscriber = _clients(cfg)
    created = []
    for base in topology.per_tenant_topics():
        topic = tenant_topic(base, tenant)
        _create_topic_with_dead_letters(publisher, subscriber, cfg.project, topic, topology)
        for fn_name in topology.triggered_by(base):
            name = push_subscription_name(fn_name, topic, cfg.run_id)
            _create_push_subscription(cfg, topology, subscriber, name, topic, f"push/{fn_name}")
        created.append(topic)
    return created


def ensure_tenants(
    cfg: StackConfig,
    topology: Topology,
    default_region: str | None,
    on_tenant: Callable[[int, int, str], None] | None = None,
) -> None:
    """Re-create every registered tenant's topics, bucket and dataset (the emulators keep them in memory only), and
    the default tenant if it does not exist yet; ``on_tenant(done, total, name)`` before each (for progress)."""
    import json

    from shared.config import parse_registry

    usable, problems = parse_registry(json.loads(cfg.paths.tenants.read_text() or "{}"))
    for name, problem in problems.items():  # an unusable tenant must not keep the stack, or the others, down
        print(f"warning: tenant {name!r} is not usable: {problem}", file=sys.stderr)
    registered = list(usable.values())
    for done, tenant in enumerate(registered):
        if on_tenant:
            on_tenant(done, len(registered), tenant.name)
        create_tenant_topics(cfg, topology, tenant.name)
        try:
            add_local_tenant(
                cfg,
                tenant.name,
                tenant.region,
                bucket=tenant.bucket,
                dataset=tenant.dataset,
                prefix=tenant.prefix,
                push_provider=tenant.push_provider,
                push_policy=tenant.push_policy.model_dump(),
                privacy=tenant.privacy.model_dump(),
            )
        except SetupError as exc:
            # One misconfigured tenant (e.g. a region mismatch) must not keep the stack, or other tenants, down.
            print(f"warning: tenant {tenant.name!r} is not usable: {exc}", file=sys.stderr)
    if DEFAULT_TENANT not in {t.name for t in registered} | set(problems):
        from infra.local.push_setup import setup_local_push

        create_tenant_topics(cfg, topology, DEFAULT_TENANT)
        add_local_tenant(cfg, DEFAULT_TENANT, default_region or topology.defaults.region, push_provider="fcm")
        setup_local_push(cfg, DEFAULT_TENANT, "fcm")


def add_local_tenant(cfg: StackConfig, name: str, region: str, **kwargs: object) -> object:
    """``shared.tenancy.add_tenant`` with this stack's settings."""
    from infra.local.stack_config import activate
    from shared.tenancy import add_tenant

    activate(cfg)
    return add_tenant(name, region, **kwargs)  # type: ignore[arg-type]

"""Creates the topology from infra/topology.yaml in the Pub/Sub emulator, and the default tenant."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1  # type: ignore[attr-defined, unused-ignore]
from google.protobuf import duration_pb2

from shared.errors import SetupError

if TYPE_CHECKING:
    from infra.local.stack import StackConfig
    from infra.local.topology import Topology

DEFAULT_TENANT = "default"


def _clients(cfg: StackConfig) -> tuple[pubsub_v1.PublisherClient, pubsub_v1.SubscriberClient]:
    os.environ["PUBSUB_EMULATOR_HOST"] = f"127.0.0.1:{cfg.port('pubsub')}"
    return pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()


def push_subscription_name(function: str, topic: str, run_id: str) -> str:
    # Unique per run: re-creating a subscription with the same name stalled deliveries in the emulator.
    return f"{function}--{topic}--{run_id}"


def create_topology(cfg: StackConfig, topology: Topology, *, pubsub_only: bool = False) -> None:
    publisher, subscriber = _clients(cfg)
    project = cfg.project
    notification_topic = topology.local.storage_notifications_topic
    topics = [*topology.topics, notification_topic]
    for topic in topics:
        for name in (topic, topology.dead_letter_topic(topic)):
            try:
                publisher.create_topic(name=publisher.topic_path(project, name))
            except gexc.AlreadyExists:
                pass
        keep = subscriber.subscription_path(project, f"{topology.dead_letter_topic(topic)}--keep")
        try:  # a topic without subscriptions drops what is published to it: keep dead letters for inspection
            subscriber.create_subscription(name=keep, topic=publisher.topic_path(project, topology.dead_letter_topic(topic)))
        except gexc.AlreadyExists:
            pass
    if pubsub_only:
        return
    retry = topology.local.retry
    for fn_name, fn in topology.functions.items():
        for trigger in fn.triggers:
            topic = trigger.topic if trigger.type == "pubsub" and trigger.topic else notification_topic
            sub = subscriber.subscription_path(project, push_subscription_name(fn_name, topic, cfg.run_id))
            endpoint = f"{cfg.url('router')}/push/{fn_name}/projects/{project}/topics/{topic}"
            request = {
                "name": sub,
                "topic": publisher.topic_path(project, topic),
                "push_config": {"push_endpoint": endpoint},
                "ack_deadline_seconds": topology.defaults.ack_deadline_seconds,
                "retry_policy": {
                    "minimum_backoff": duration_pb2.Duration(seconds=retry.minimum_backoff_seconds),
                    "maximum_backoff": duration_pb2.Duration(seconds=retry.maximum_backoff_seconds),
                },
                "dead_letter_policy": {
                    "dead_letter_topic": publisher.topic_path(project, topology.dead_letter_topic(topic)),
                    "max_delivery_attempts": topology.defaults.max_delivery_attempts,
                },
            }
            try:
                subscriber.create_subscription(request=request)
            except gexc.AlreadyExists:
                pass


def ensure_tenants(cfg: StackConfig, topology: Topology, default_region: str | None) -> None:
    """Re-create every registered tenant's bucket and dataset (the storage emulator keeps buckets in memory only),
    and the default tenant if it does not exist yet."""
    import json

    from shared.config import parse_registry

    usable, problems = parse_registry(json.loads(cfg.paths.tenants.read_text() or "{}"))
    for name, problem in problems.items():  # an unusable tenant must not keep the stack, or the others, down
        print(f"warning: tenant {name!r} is not usable: {problem}", file=sys.stderr)
    registered = list(usable.values())
    for tenant in registered:
        try:
            add_local_tenant(cfg, tenant.name, tenant.region, bucket=tenant.bucket, dataset=tenant.dataset,
                             prefix=tenant.prefix, push_provider=tenant.push_provider,
                             push_policy=tenant.push_policy.model_dump(), privacy=tenant.privacy.model_dump())
        except SetupError as exc:
            # One misconfigured tenant (e.g. a region mismatch) must not keep the stack, or other tenants, down.
            print(f"warning: tenant {tenant.name!r} is not usable: {exc}", file=sys.stderr)
    if DEFAULT_TENANT not in {t.name for t in registered} | set(problems):
        from infra.local.push_setup import setup_local_push

        add_local_tenant(cfg, DEFAULT_TENANT, default_region or topology.defaults.region, push_provider="fcm")
        setup_local_push(cfg, DEFAULT_TENANT, "fcm")


def add_local_tenant(cfg: StackConfig, name: str, region: str, **kwargs: object) -> object:
    """``shared.tenancy.add_tenant`` with this stack's settings."""
    from infra.local.stack import activate
    from shared.tenancy import add_tenant

    activate(cfg)
    return add_tenant(name, region, **kwargs)  # type: ignore[arg-type]

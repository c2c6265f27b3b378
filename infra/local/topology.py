"""Typed view of infra/topology.yaml for the local stack (Terraform reads the same file with yamldecode)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field

from shared.dead_letters import dead_letter_topic, keep_subscription

TOPOLOGY_FILE = Path(__file__).resolve().parents[1] / "topology.yaml"


class Retry(BaseModel):
    minimum_backoff_seconds: int
    maximum_backoff_seconds: int


class Defaults(BaseModel):
    region: str
    ack_deadline_seconds: int = Field(ge=10, le=600)
    retry: Retry
    max_delivery_attempts: int = Field(ge=5, le=100)
    message_retention: str


class Topic(BaseModel):
    description: str = ""
    schedule: str | None = None
    # A copy per tenant, "<topic>.<tenant>" (shared.config.tenant_topic), created with the tenant.
    per_tenant: bool = False
    # The shared copy of earlier versions stays, so what old publishers send to it is parked, not lost.
    legacy_shared: bool = False


class Trigger(BaseModel):
    type: Literal["pubsub"]
    topic: str


class Function(BaseModel):
    description: str = ""
    trigger: Trigger
    extra_triggers: list[Trigger] = Field(default_factory=list)
    timeout_seconds: int = 540
    memory: str = "512Mi"
    concurrency: int = 1

    @property
    def triggers(self) -> list[Trigger]:
        return [self.trigger, *self.extra_triggers]


class Local(BaseModel):
    storage_notifications_topic: str
    retry: Retry
    ports: dict[str, int]


class Topology(BaseModel):
    defaults: Defaults
    topics: dict[str, Topic]
    functions: dict[str, Function]
    local: Local

    @staticmethod
    def dead_letter_topic(topic: str) -> str:
        return dead_letter_topic(topic)

    @staticmethod
    def keep_subscription(topic: str) -> str:
        return keep_subscription(topic)

    def shared_topics(self) -> list[str]:
        """Topics created once, when the stack comes up: the ones not per tenant, and legacy shared copies."""
        return [name for name, topic in self.topics.items() if not topic.per_tenant or topic.legacy_shared]

    def per_tenant_topics(self) -> list[str]:
        """Topics of which every tenant gets its own copy when it is added."""
        return [name for name, topic in self.topics.items() if topic.per_tenant]

    def triggered_by(self, topic: str) -> list[str]:
        """The functions with a trigger on ``topic`` (the base name of a per-tenant topic)."""
        return [name for name, fn in self.functions.items() if any(t.topic == topic for t in fn.triggers)]


def load_topology(path: Path = TOPOLOGY_FILE) -> Topology:
    return Topology.model_validate(yaml.safe_load(path.read_text()))

"""Typed view of infra/topology.yaml for the local stack (Terraform reads the same file with yamldecode)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field

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


class Trigger(BaseModel):
    type: Literal["storage_finalized", "pubsub"]
    topic: str | None = None


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
        return f"{topic}-dead-letter"


def load_topology(path: Path = TOPOLOGY_FILE) -> Topology:
    return Topology.model_validate(yaml.safe_load(path.read_text()))

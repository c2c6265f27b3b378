"""``python -m bench.push [--quick]``: sends/s against the fake FCM on loopback, landline's FcmProvider vs
firebase-admin's ``messaging.send_each``, same fake, same run. The last line is ``ratio landline/firebase-admin = X.XX``
(best round vs best round).

Fairness: both clients send the same N messages to the same fake subprocess, in alternating rounds (the order flips
every round, so neither always runs right after the other's load); each round builds a fresh client (new connections,
new OAuth token) and warms it with 20 messages before the timed send. Client CPU is this process's user+system time
over the timed send only (firebase-admin's threads included), per message. The box is shared and noisy: we print
every round, the best and the median, and the load average before and after.

The fake runs in its own subprocess (``python -m infra.local.fakes``); both clients authenticate through the fake's
OAuth2 endpoint with a generated service account, so token exchange and bearer checks are on the path for both.

How firebase-admin is pointed at the fake (7.7.0): the token endpoint via the service-account JSON's ``token_uri``
(google-auth uses it); the send URL via the messaging service's ``_fcm_url`` attribute (built from the hard-coded
``_MessagingService.FCM_URL`` in ``__init__``), plus the same ``HTTPAdapter(pool_maxsize=100, max_retries=...)`` that
firebase-admin mounts for ``https://fcm.googleapis.com``, mounted for the fake's ``http://127.0.0.1:port`` instead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.stack_support import free_port_base

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "bench-proj"


def _free_port_base(count: int = 5) -> int:
    return free_port_base(count)


def start_fake(state_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    base = _free_port_base()
    proc = subprocess.Popen(
        [sys.executable, "-m", "infra.local.fakes", "--port-base", str(base), "--state-dir", str(state_dir)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not (state_dir / "ready.json").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("fake server did not start")
        time.sleep(0.05)
    return proc, f"http://127.0.0.1:{base}"


def service_account(fake_url: str) -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    email = "bench@bench-proj.iam.gserviceaccount.com"
    httpx.post(f"{fake_url}/_fake/register", json={"fcm": {"client_email": email, "public_key_pem": pub.decode()}})
    return {
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": "bench",
        "private_key": pem.decode(),
        "client_email": email,
        "client_id": "1",
        "token_uri": f"{fake_url}/token",
    }


def tokens(n: int, prefix: str) -> list[str]:
    return [f"{prefix}{i:06d}" + "x" * 140 for i in range(n)]


def run_landline(sa: dict[str, Any], fake_url: str, n: int) -> tuple[float, float, int]:
    from shared.push.credentials import FcmCredentials
    from shared.push.providers.base import PushMessage
    from shared.push.providers.fcm import FcmProvider
    from shared.secrets import Secret

    def messages(toks: list[str]) -> list[PushMessage]:
        return [
            PushMessage(f"m-{t[:12]}", "c", t, "Hello", "World", {"campaign": "bench"}, idempotency_key=t[:12])
            for t in toks
        ]

    async def go() -> tuple[float, float, int]:
        # Production defaults: 100 in flight, HTTP/2 pool of up to 2 connections (the 2nd opens only when needed).
        async with FcmProvider(FcmCredentials(PROJECT, Secret(sa)), base_url=fake_url) as provider:
            await provider.send_many(messages(tokens(20, "warm-l")), deadline=time.time() + 60)
            batch = messages(tokens(n, "land-"))
            cpu0, t0 = _cpu(), time.perf_counter()
            out = await provider.send_many(batch, deadline=time.time() + 600)
            elapsed, cpu = time.perf_counter() - t0, _cpu() - cpu0
        return elapsed, cpu, sum(o.status == "sent" for o in out)

    return asyncio.run(go())


def run_firebase_admin(sa: dict[str, Any], fake_url: str, n: int) -> tuple[float, float, int]:
    import firebase_admin
    import requests
    from firebase_admin import _http_client, credentials, messaging

    warnings.filterwarnings("ignore", message="Message.token is deprecated", category=DeprecationWarning)
    app = firebase_admin.initialize_app(credentials.Certificate(sa), name=f"bench-{os.getpid()}")
    try:
        svc = messaging._get_messaging_service(app)
        svc._fcm_url = f"{fake_url}/v1/projects/{PROJECT}/messages:send"
        adapter = requests.adapters.HTTPAdapter(
            pool_connections=100, pool_maxsize=100, max_retries=_http_client.DEFAULT_RETRY_CONFIG
        )
        svc._client.session.mount(fake_url, adapter)

        def messages(toks: list[str]) -> list[messaging.Message]:
            return [
                messaging.Message(  # token= is what 7.7.0 still sends (fid is opt-in)
                    token=t,
                    notification=messaging.Notification(title="Hello", body="World"),
                    data={"campaign": "bench"},
                    android=messaging.AndroidConfig(priority="high"),
                )
                for t in toks
            ]

        messaging.send_each(messages(tokens(20, "warm-f")), app=app)
        batch = messages(tokens(n, "fbad-"))
        cpu0, t0 = _cpu(), time.perf_counter()
        sent = 0
        for i in range(0, n, 500):  # send_each takes at most 500 messages
            sent += messaging.send_each(batch[i : i + 500], app=app).success_count
        return time.perf_counter() - t0, _cpu() - cpu0, sent
    finally:
        firebase_admin.delete_app(app)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


LABELS = {
    "landline": "FcmProvider, own h2 transport, <=100 streams",
    "firebase-admin": "send_each, threads, HTTP/1.1",
}
RUNNERS = {"landline": run_landline, "firebase-admin": run_firebase_admin}


def _proc_cpu(pid: int) -> float | None:
    """CPU seconds used so far by another process (Linux /proc), to show where the time goes: the fake's share."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.push")
    parser.add_argument("--quick", action="store_true", help="300 messages per client, 1 round (~5 s)")
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds per client (default 5, quick 1)")
    parser.add_argument("-n", type=int, default=None, help="messages per client (default 2000, quick 300)")
    args = parser.parse_args(argv)
    n = args.n or (300 if args.quick else 2000)
    rounds = args.rounds or (1 if args.quick else 5)
    rates: dict[str, list[float]] = {name: [] for name in RUNNERS}
    cpus: dict[str, list[float]] = {name: [] for name in RUNNERS}
    load_before = _loadavg()
    with tempfile.TemporaryDirectory(prefix="bench-push-") as tmp:
        proc, fake_url = start_fake(Path(tmp))
        try:
            sa = service_account(fake_url)
            print(
                f"fake FCM at {fake_url} (subprocess pid {proc.pid}); {n} messages per client; {rounds} rounds; "
                f"{os.cpu_count()} cores; load average {load_before}"
            )
            for r in range(rounds):
                order = list(RUNNERS) if r % 2 == 0 else list(reversed(RUNNERS))
                for name in order:
                    server0 = _proc_cpu(proc.pid)
                    elapsed, cpu, sent = RUNNERS[name](sa, fake_url, n)
                    server1 = _proc_cpu(proc.pid)
                    rate, cpu_ms = sent / elapsed, cpu / n * 1000
                    rates[name].append(rate)
                    cpus[name].append(cpu_ms)
                    # The fake's CPU over the whole round (incl. warm-up and token exchange): what the server pays.
                    fake_ms = f"{(server1 - server0) / (n + 20) * 1000:.2f}" if server0 and server1 else "?"
                    print(
                        f"round {r + 1} {name:15s} {LABELS[name]}: {sent}/{n} sent in {elapsed:.2f} s = {rate:.0f}/s,"
                        f" client CPU {cpu_ms:.3f} ms/msg, fake CPU ~{fake_ms} ms/msg"
                    )
            stats = httpx.get(f"{fake_url}/_fake/stats").json()["fcm"]
            print(
                f"fake: accepted {stats['accepted']}, connections {stats['connections']}, versions {stats['http_versions']}"
            )
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    summary: dict[str, Any] = {"n": n, "rounds": rounds, "load_before": load_before, "load_after": _loadavg()}
    for name in RUNNERS:
        best, med = max(rates[name]), statistics.median(rates[name])
        cpu_best, cpu_med = min(cpus[name]), statistics.median(cpus[name])
        print(
            f"{name:15s} sends/s best {best:.0f} median {med:.0f}; client CPU ms/msg best {cpu_best:.3f}"
            f" median {cpu_med:.3f}"
        )
        key = name.replace("-", "_")
        summary |= {
            f"{key}_best_per_s": round(best, 1),
            f"{key}_median_per_s": round(med, 1),
            f"{key}_cpu_ms_best": round(cpu_best, 3),
            f"{key}_cpu_ms_median": round(cpu_med, 3),
        }
    l_best, f_best = max(rates["landline"]), max(rates["firebase-admin"])
    l_med, f_med = statistics.median(rates["landline"]), statistics.median(rates["firebase-admin"])
    print(json.dumps(summary))
    print(f"median ratio landline/firebase-admin = {l_med / f_med:.2f}")
    print(f"ratio landline/firebase-admin = {l_best / f_best:.2f}")


if __name__ == "__main__":
    main()

"""`landline`: the command line for the local stack (and, where it makes sense, a real project).

Every command that talks to the stack reads its endpoints from the state folder (``$LANDLINE_HOME``, default
``.landline/`` in the repository), so scripts and tests can run several stacks side by side.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from infra.local.stack_ops import drop_files, expect, publish_tick, wait_idle

if TYPE_CHECKING:
    from infra.local.stack import Stack

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
tenant_app = typer.Typer(no_args_is_help=True, help="Tenants: a bucket and a dataset pinned to one region.")
app.add_typer(tenant_app, name="tenant")

HomeOpt = Annotated[Path | None, typer.Option("--home", envvar="LANDLINE_HOME", help="state folder of the stack")]
TenantOpt = Annotated[str, typer.Option("--tenant", "-t", help="tenant name")]


def _stack(home: Path | None, port_base: int | None = None) -> Stack:
    from infra.local.stack import Stack

    return Stack(home=home, port_base=port_base)


def _running(home: Path | None) -> Stack:
    from infra.local.stack_config import activate

    stack = _stack(home)
    if not stack.cfg.paths.config.exists() or stack.pid("pubsub") is None:
        typer.echo("The local stack is not running: start it with `landline up`.", err=True)
        raise typer.Exit(2)
    activate(stack.cfg)
    return stack


def _echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


@app.command()
def up(
    home: HomeOpt = None,
    port_base: Annotated[int | None, typer.Option(help="first of the stack's ports", envvar="LANDLINE_PORT_BASE")] = None,
    region: Annotated[str | None, typer.Option(help="region of the default tenant")] = None,
) -> None:
    """Start the local stack in the background (idempotent) and wait until it is healthy."""
    from infra.local.stack import StackError

    stack = _stack(home, port_base)
    try:
        seconds = stack.up(default_region=region)
    except StackError as exc:
        typer.echo(f"landline up failed: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"local stack healthy in {seconds:.1f}s (state in {stack.home})")
    _print_status(stack)


@app.command()
def down(home: HomeOpt = None) -> None:
    """Stop every process of the local stack."""
    stack = _stack(home)
    stopped = stack.down()
    typer.echo(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")


def _print_status(stack: Stack) -> None:
    for row in stack.status():
        mark = "healthy" if row["healthy"] else ("UNHEALTHY" if row["pid"] else "stopped")
        typer.echo(f"  {row['service']:<12} {mark:<10} port {row['port']!s:<6} pid {row['pid'] or '-'!s:<8} {row['log']}")


@app.command()
def status(home: HomeOpt = None, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """What runs, where, and whether it is healthy."""
    stack = _stack(home)
    rows = stack.status()
    if as_json:
        _echo_json(rows)
    else:
        typer.echo(f"state folder: {stack.home}")
        _print_status(stack)
    if not all(r["healthy"] for r in rows):
        raise typer.Exit(1)


@tenant_app.command("add")
def tenant_add(
    name: str,
    region: Annotated[str, typer.Option(help="GCP region the tenant's data is pinned to (it cannot change later)")],
    bucket: Annotated[str | None, typer.Option(help="bucket (default <project>-<name>); new tenants only")] = None,
    dataset: Annotated[str | None, typer.Option(help="dataset id (default landline_<name>); new tenants only")] = None,
    prefix: Annotated[str | None, typer.Option(help="prefix before segment-logs/ in the bucket")] = None,
    push_provider: Annotated[str | None, typer.Option(help="fcm, apns, onesignal, braze or expo")] = None,
    quiet_hours: Annotated[str | None, typer.Option(help="HH:MM-HH:MM in each contact's timezone, or off")] = None,
    frequency_cap: Annotated[int | None, typer.Option(help="max pushes per contact per 24 h (at least 1)")] = None,
    privacy: Annotated[
        str | None, typer.Option(help="PII in event metadata: 'remove' it (default), or 'hash' it (salted, per tenant)")
    ] = None,
    pii_key: Annotated[
        list[str] | None, typer.Option(help="another property key that holds personal data (repeatable; adds)")
    ] = None,
    drop_pii_key: Annotated[
        list[str] | None, typer.Option(help="stop treating this key as personal (repeatable; weaker privacy)")
    ] = None,
    scan_values: Annotated[
        bool | None, typer.Option("--scan-values/--no-scan-values", help="look for emails, phones, IPs in values")
    ] = None,
    rejected_retention_days: Annotated[
        int | None, typer.Option(help="days raw rejected lines are kept, for replay (default 30)")
    ] = None,
    allow_weaker_privacy: Annotated[
        bool, typer.Option("--allow-weaker-privacy", help="confirm a change that protects personal data less")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the tenant's whole configuration")] = False,
    home: HomeOpt = None,
) -> None:
    """Create a tenant's bucket and dataset (location REGION) and register it; for an existing tenant, keep what is
    stored, change only what is given, and upgrade its tables. On the local stack, a push provider gets generated
    credentials, and a hash-mode tenant a random salt, stored in the stack's secrets file."""
    from infra.local.secrets_file import ensure_local_privacy_salt
    from shared.errors import SetupError
    from shared.tenancy import plan_tenant, save_tenant

    if privacy not in (None, "remove", "hash"):
        raise _tenant_error(f"--privacy must be 'remove' or 'hash', got {privacy!r}", 2)
    if rejected_retention_days is not None and rejected_retention_days < 1:
        raise _tenant_error(f"--rejected-retention-days must be at least 1, got {rejected_retention_days}", 2)
    privacy_given: dict[str, Any] = {
        key: value
        for key, value in (("mode", privacy), ("scan_values", scan_values),
                           ("rejected_retention_days", rejected_retention_days))
        if value is not None
    }  # fmt: skip
    stack = _running(home)
    try:
        plan = plan_tenant(
            name, region, bucket=bucket, dataset=dataset, prefix=prefix, push_provider=push_provider,
            push_policy=_push_policy_given(quiet_hours, frequency_cap), privacy=privacy_given,
            add_pii_keys=pii_key or (), drop_pii_keys=drop_pii_key or (), allow_weaker_privacy=allow_weaker_privacy,
        )  # fmt: skip
    except SetupError as exc:
        raise _tenant_error(str(exc), 1) from exc
    except ValueError as exc:
        raise _tenant_error(str(exc), 2) from exc
    if plan.tenant.privacy.mode == "hash":
        ensure_local_privacy_salt(stack.cfg, name)  # before the tenant exists, so no message finds it without one
    from infra.local.provision import create_tenant_topics

    create_tenant_topics(stack.cfg, stack.topology, name)  # its own topics before anything can be sent to them
    try:
        tenant = save_tenant(plan.tenant)
    except SetupError as exc:
        raise _tenant_error(str(exc), 1) from exc
    generated = False
    if tenant.push_provider:
        from infra.local.push_setup import setup_local_push

        generated = setup_local_push(stack.cfg, name, tenant.push_provider)  # keeps credentials it already has
    if as_json:
        _echo_json(tenant.model_dump())
        return
    push = tenant.push_provider or "none"
    keys = f" ({tenant.push_provider} credentials generated)" if generated else ""
    if plan.created:
        typer.echo(f"created tenant {name} in {tenant.region}: bucket gs://{tenant.bucket}, dataset {tenant.dataset}, "
                   f"privacy {tenant.privacy.mode}, push {push}{keys}")  # fmt: skip
    elif plan.changes:
        typer.echo(f"updated tenant {name}: {'; '.join(plan.changes)}{keys}; everything else kept")
    else:
        typer.echo(f"tenant {name} unchanged ({tenant.region}, privacy {tenant.privacy.mode}, push {push}){keys}; "
                   "tables and views are up to date")  # fmt: skip


def _tenant_error(message: str, code: int) -> typer.Exit:
    """One line on stderr, and the exit to raise: `tenant add` refuses before it creates anything."""
    typer.echo(f"landline tenant add: {message}", err=True)
    return typer.Exit(code)


def _push_policy_given(quiet_hours: str | None, frequency_cap: int | None) -> dict[str, Any]:
    """The push-policy fields given on the command line (nothing for a flag left out)."""
    import re

    given: dict[str, Any] = {}
    if quiet_hours is not None:
        if quiet_hours.lower() in ("off", "none"):
            given.update(quiet_hours_start=None, quiet_hours_end=None)
        elif re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d", quiet_hours):
            start, _, end = quiet_hours.partition("-")
            given.update(quiet_hours_start=start, quiet_hours_end=end)
        else:
            raise _tenant_error(f"--quiet-hours must be HH:MM-HH:MM (e.g. 21:00-08:00) or off, got {quiet_hours!r}", 2)
    if frequency_cap is not None:
        if frequency_cap < 1:
            raise _tenant_error(
                f"--frequency-cap must be at least 1, got {frequency_cap} (a tenant that sends nothing needs no "
                "--push-provider)",
                2,
            )
        given["frequency_cap"] = frequency_cap
    return given


@tenant_app.command("list")
def tenant_list(home: HomeOpt = None) -> None:
    from shared.config import tenants

    _running(home)
    _echo_json([t.model_dump() for t in tenants().all()])


@app.command()
def drop(
    paths: Annotated[list[Path], typer.Argument(exists=True, help="files or directories to upload")],
    tenant: TenantOpt = "default",
    prefix: Annotated[str, typer.Option(help="object name prefix")] = "",
    home: HomeOpt = None,
) -> None:
    """Upload files into the tenant's bucket: a file to PREFIX/<name>, a directory's files to PREFIX/<relative path>."""
    stack = _running(home)
    for line in drop_files(stack.cfg, paths, tenant, prefix):
        typer.echo(line)


@app.command()
def wait(timeout: Annotated[float, typer.Option(help="seconds")] = 120.0, home: HomeOpt = None) -> None:
    """Return when every delivered message is processed (no backlog); non-zero on timeout."""
    stack = _running(home)
    try:
        stats = wait_idle(stack.cfg.url("router"), timeout)
    except TimeoutError as exc:
        typer.echo(f"still busy after {timeout:.0f}s: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"idle: delivered {stats['delivered']}, failures {stats['failures']}")


@app.command()
def query(sql: str, tenant: TenantOpt = "default", home: HomeOpt = None) -> None:
    """Run SQL against the tenant's dataset (unqualified table names resolve there); rows as JSON lines.

    An operator's tool, not a boundary: the SQL runs with the caller's own credentials, so it can do whatever those
    credentials allow (other datasets, DDL); it grants nothing the caller does not already hold."""
    from shared.warehouse.query import run_query

    _running(home)
    for row in run_query(tenant, sql):
        typer.echo(json.dumps(row, default=str))


@app.command()
def stats(
    tenant: TenantOpt = "default", as_json: Annotated[bool, typer.Option("--json")] = False, home: HomeOpt = None
) -> None:
    """Counts: files by status, lines, events, event_rows, duplicates, users, rejected by reason, sends by status,
    and unaccounted lines (read, but neither rows, rejections nor duplicates: 0 when nothing is lost)."""
    from infra.local.stats import tenant_stats

    _running(home)
    counts = tenant_stats(tenant)
    if as_json:
        typer.echo(json.dumps(counts, default=str))
    else:
        from infra.local.stats import format_stats

        typer.echo(format_stats(tenant, counts))


@app.command()
def tick(
    tenant: Annotated[str | None, typer.Option("--tenant", "-t", help="only this tenant")] = None,
    home: HomeOpt = None,
) -> None:
    """Publish one scheduler tick to send-ticks (what Cloud Scheduler does every few minutes)."""
    stack = _running(home)
    typer.echo(f"tick published: {publish_tick(stack.cfg.url('router'), tenant)}")


@app.command("schedule")
def schedule_cmd(
    contact: Annotated[str, typer.Option(help="contact_id")],
    title: Annotated[str, typer.Option()],
    body: Annotated[str, typer.Option()],
    tenant: TenantOpt = "default",
    at: Annotated[str | None, typer.Option(help="send time, ISO-8601 with offset (default: now)")] = None,
    local_time: Annotated[str | None, typer.Option(help="YYYY-MM-DDTHH:MM in the contact's timezone")] = None,
    message_id: Annotated[str | None, typer.Option(help="idempotency key of the message (default: random)")] = None,
    provider: Annotated[str | None, typer.Option(help="override the tenant's provider")] = None,
    data: Annotated[str | None, typer.Option(help="JSON object of string values")] = None,
    home: HomeOpt = None,
) -> None:
    """Schedule one push (lands in message_schedule; the next tick sends it when due)."""
    import uuid

    from shared.config import tenants
    from shared.push.schedule import SendRequest, schedule

    _running(home)
    request = SendRequest.model_validate(
        {
            "message_id": message_id or uuid.uuid4().hex,
            "contact_id": contact,
            "title": title,
            "body": body,
            "send_at": at,
            "local_send_time": local_time,
            "provider": provider,
            "data": json.loads(data) if data else {},
        }
    )
    schedule(tenants().get(tenant), [request])
    typer.echo(request.message_id)


@app.command()
def demo(
    home: HomeOpt = None,
    keep: Annotated[bool, typer.Option(help="leave the stack running afterwards")] = True,
) -> None:
    """Up, drop the bundled sample Segment files, wait, tick, wait, and print a readable summary."""
    from infra.local.demo import run_demo

    stack = _stack(home)
    typer.echo("starting the local stack ...")
    seconds = stack.up()
    typer.echo(f"stack healthy in {seconds:.1f}s")
    from infra.local.stack_config import activate

    activate(stack.cfg)
    try:
        run_demo(stack.cfg, typer.echo)
    finally:
        if not keep:
            stack.down()


@app.command()
def replay(
    tenant: TenantOpt,
    reason: Annotated[str | None, typer.Option(help="only rejected lines with this reason code")] = None,
    dead_letters: Annotated[
        bool, typer.Option("--dead-letters", help="republish the tenant's dead-lettered messages, not rejected lines")
    ] = False,
    fix_tenant: Annotated[
        bool, typer.Option("--fix-tenant", help="with --dead-letters: drop a tenant attribute naming another tenant")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="count what would be republished; publish nothing")] = False,
    batch_size: Annotated[int, typer.Option(min=1, max=10_000, help="rows read and published per batch")] = 500,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    home: HomeOpt = None,
) -> None:
    """Republish the tenant's rejected lines (deduplicated, optionally one reason) to its raw-events topic for another
    try; with --dead-letters, its dead-lettered messages to the topics they came from (after a fix, no duplicates)."""
    stack = _running(home)
    if not dead_letters:
        if fix_tenant:
            raise typer.BadParameter("only with --dead-letters", param_hint="--fix-tenant")
        from shared.replay import replay_rejected

        result = replay_rejected(tenant, reason=reason, dry_run=dry_run, batch_size=batch_size)
        typer.echo(json.dumps(result.as_dict()) if as_json else result.summary())
        return
    if reason:
        raise typer.BadParameter("rejected lines only; dead letters are whole messages", param_hint="--reason")
    from shared.dead_letters import replay_dead_letters

    with _progress("replaying dead letters") as advance:
        replayed = _recovery("replay", lambda: replay_dead_letters(
            tenant, dry_run=dry_run, fix_tenant=fix_tenant, on_letter=lambda _letter: advance(1)
        ))
    expect(stack.cfg.url("router"), [f"msg:{message_id}" for message_id in replayed.message_ids])
    typer.echo(json.dumps(replayed.as_dict()) if as_json else replayed.summary())


@app.command("dead-letters")
def dead_letters_cmd(
    tenant: TenantOpt, as_json: Annotated[bool, typer.Option("--json")] = False, home: HomeOpt = None
) -> None:
    """List what is parked in the tenant's dead-letter subscriptions, and why; nothing is consumed."""
    from shared.dead_letters import list_dead_letters

    _running(home)
    with _progress("reading dead letters") as advance:
        letters = _recovery("dead-letters", lambda: list_dead_letters(tenant, on_letter=lambda _letter: advance(1)))
    if as_json:
        typer.echo(json.dumps([letter.as_dict() for letter in letters], default=str))
        return
    typer.echo(f"{len(letters)} dead letters of tenant {tenant}")
    for letter in letters:
        item = letter.as_dict()
        attempts = item["delivery_attempts"] or "?"
        typer.echo(f"- {item['topic']}  message {item['message_id']}  published {item['publish_time']}  "
                   f"attempts {attempts}  {item['size']} bytes")
        typer.echo(f"  attributes: {json.dumps(item['attributes'], sort_keys=True)}")
        typer.echo(f"  why: {item['why']}")
        typer.echo(f"  replay: {item['replay']}")
        typer.echo(f"  head: {item['head'][:200]!r}")


@app.command()
def backfill(
    tenant: TenantOpt,
    prefix: Annotated[str, typer.Option(help="only objects whose name starts with this")] = "",
    since: Annotated[str | None, typer.Option(help="only objects created at or after this ISO date/time (UTC)")] = None,
    include_loaded: Annotated[
        bool, typer.Option("--include-loaded", help="also files the ledger says are loaded (adds no duplicates)")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="count what would be published; publish nothing")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    home: HomeOpt = None,
) -> None:
    """Re-ingest objects already in the tenant's bucket (files that arrived before the tenant existed, or while ingest
    failed): a finalize notification per object to its object-notifications topic, so they take the usual path."""
    from datetime import UTC, datetime

    from shared.backfill import backfill as run_backfill

    start = None
    if since:
        try:
            start = datetime.fromisoformat(since)
        except ValueError as exc:
            raise typer.BadParameter(f"not an ISO date or time: {since}", param_hint="--since") from exc
        start = start if start.tzinfo else start.replace(tzinfo=UTC)
    stack = _running(home)
    with _progress("publishing notifications") as advance:
        result = _recovery("backfill", lambda: run_backfill(
            tenant, prefix=prefix, since=start, include_loaded=include_loaded, dry_run=dry_run,
            on_object=lambda _origin, _published: advance(1), on_total=lambda total: advance(0, total),
        ))
    expect(stack.cfg.url("router"), [f"msg:{message_id}" for message_id in result.message_ids])
    typer.echo(json.dumps(result.as_dict()) if as_json else result.summary())


T = TypeVar("T")


def _recovery(command: str, run: Callable[[], T]) -> T:
    """Run a recovery tool: an error it can name is one line on stderr and exit code 1, not a traceback."""
    from google.api_core import exceptions as gexc

    from shared.errors import LandlineError

    try:
        return run()
    except (LandlineError, gexc.GoogleAPIError) as exc:
        typer.echo(f"landline {command}: {exc}", err=True)
        raise typer.Exit(1) from exc


@contextmanager
def _progress(description: str) -> Iterator[Callable[..., None]]:
    """A progress bar on stderr while a long job runs (none when stderr is not a terminal); yields
    ``advance(done, total=None)``."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    columns = (
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
    )
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task(description, total=None)

        def advance(done: int, total: int | None = None) -> None:
            if total is not None:
                progress.update(task, total=total)
            progress.advance(task, done)

        yield advance


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()

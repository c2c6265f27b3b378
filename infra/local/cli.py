"""landline: the command line for the local stack.

Every command that talks to the stack reads its endpoints from the state folder (LANDLINE_HOME, default .landline/
in the repository), so scripts and tests can run several stacks side by side. Errors are one line on stderr with a
non-zero exit code (--debug shows the traceback); commands that print data take --json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from infra.local.cli_support import CliError, CliGroup, echo_json, fail, progress, status_line, table, warn
from infra.local.stack_ops import expect, publish_tick, wait_idle

if TYPE_CHECKING:
    from infra.local.stack import Stack

CONTEXT = {"help_option_names": ["-h", "--help"]}
app = typer.Typer(
    cls=CliGroup, no_args_is_help=True, help=__doc__, context_settings=CONTEXT, rich_markup_mode=None,
    pretty_exceptions_enable=False,
)  # fmt: skip
tenant_app = typer.Typer(
    no_args_is_help=True, help="Tenants: a bucket and a dataset pinned to one region.", rich_markup_mode=None
)
app.add_typer(tenant_app, name="tenant")
audience_app = typer.Typer(
    no_args_is_help=True, help="Audiences: who a tenant sends to, from a YAML or JSON file.", rich_markup_mode=None
)
app.add_typer(audience_app, name="audience")
campaign_app = typer.Typer(
    no_args_is_help=True, help="Campaigns: variants and a holdout sent to an audience, balanced across user types.",
    rich_markup_mode=None,
)  # fmt: skip
app.add_typer(campaign_app, name="campaign")
report_app = typer.Typer(
    no_args_is_help=True, help="Reports: what a campaign changed, as a table, JSON or a page with charts.",
    rich_markup_mode=None,
)  # fmt: skip
app.add_typer(report_app, name="report")

HomeOpt = Annotated[Path | None, typer.Option("--home", envvar="LANDLINE_HOME", help="state folder of the stack")]
TenantOpt = Annotated[str, typer.Option("--tenant", "-t", help="tenant name")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of text")]
HtmlOpt = Annotated[Path | None, typer.Option("--html", help="also write a self-contained page with charts")]


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"landline {version('landline')}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="show the traceback of an error")] = False,
    _version_flag: Annotated[
        bool, typer.Option("--version", "-V", callback=_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    """landline: the command line for the local stack."""
    ctx.obj = {"debug": debug}


def _stack(home: Path | None, port_base: int | None = None) -> Stack:
    from infra.local.stack import Stack

    return Stack(home=home, port_base=port_base)


def _running(home: Path | None) -> Stack:
    from infra.local.stack_config import activate

    stack = _stack(home)
    if not stack.cfg.paths.config.exists() or stack.pid("pubsub") is None:
        fail("the local stack is not running: start it with `landline up`", 2)
    activate(stack.cfg)
    return stack


def _tenant(name: str) -> Any:
    """The registered tenant (an unknown one is a setup error that says how to create it)."""
    from shared.config import tenants

    return tenants().get(name)


@app.command()
def up(
    home: HomeOpt = None,
    port_base: Annotated[int | None, typer.Option(help="first of the stack's ports", envvar="LANDLINE_PORT_BASE")] = None,
    region: Annotated[str | None, typer.Option(help="region of the default tenant (when it is created)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Start the local stack in the background (idempotent) and wait until it is healthy; re-provisions every
    registered tenant (the emulators keep nothing across restarts, and it upgrades their tables)."""
    from infra.local.stack import StackError
    from shared.config import region_problem

    if region is not None and (problem := region_problem(region)):
        fail(f"--region: {problem}", 2)
    stack = _stack(home, port_base)
    try:
        with progress("starting the stack") as advance:
            seconds = stack.up(
                default_region=region,
                on_tenant=lambda done, total, name: advance(
                    1 if done else 0, total, f"re-provisioning tenant {name} ({done + 1}/{total})"
                ),
            )
    except StackError as exc:
        fail(f"{exc}")
    if as_json:
        echo_json({"seconds": round(seconds, 1), "started": stack.started, "home": str(stack.home),
                   "services": stack.status()})  # fmt: skip
        return
    what = f"started {', '.join(stack.started)}" if stack.started else "already running"
    typer.echo(f"local stack healthy in {seconds:.1f}s ({what}; state in {stack.home})")
    _print_status(stack)


@app.command()
def down(home: HomeOpt = None) -> None:
    """Stop every process of the local stack."""
    stack = _stack(home)
    stopped = stack.down()
    typer.echo(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")


def _print_status(stack: Stack) -> None:
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)  # colour on a terminal only; NO_COLOR is respected
    for row in stack.status():
        mark = "healthy" if row["healthy"] else ("UNHEALTHY" if row["pid"] else "stopped")
        colour = {"healthy": "green", "UNHEALTHY": "red"}.get(mark, "yellow")
        console.print(
            f"  {row['service']:<12} [{colour}]{mark:<10}[/{colour}] port {row['port']!s:<6} "
            f"pid {row['pid'] or '-'!s:<8} {row['log']}"
        )


@app.command()
def status(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """What runs, where, and whether it is healthy (exit code 1 if anything is not)."""
    stack = _stack(home)
    rows = stack.status()
    if as_json:
        echo_json(rows)
    else:
        registry = stack.cfg.paths.tenants
        count = len(json.loads(registry.read_text() or "{}")) if registry.exists() else 0
        typer.echo(f"state folder: {stack.home} ({count} tenants registered: `landline tenant list`)")
        _print_status(stack)
    if not all(r["healthy"] for r in rows):
        raise typer.Exit(1)


@app.command()
def logs(
    service: Annotated[str | None, typer.Argument(help="one service (see `landline status`); default: all")] = None,
    lines: Annotated[int, typer.Option("--lines", "-n", min=1, help="how many of the last lines")] = 20,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing new lines (one service)")] = False,
    home: HomeOpt = None,
) -> None:
    """The last lines of a service's log (or of every non-empty log), from the state folder."""
    import time
    from collections import deque

    stack = _stack(home)
    known = [row["service"] for row in stack.status()]
    if service is not None and service not in known:
        fail(f"unknown service {service!r}: use one of {', '.join(known)}", 2)
    if follow and service is None:
        fail("--follow needs one SERVICE", 2)
    for name in [service] if service else known:
        path = stack.cfg.paths.logs / f"{name}.log"
        if not path.exists() or (service is None and path.stat().st_size == 0):
            if service:
                typer.echo(f"{path} is empty: the service has not written anything yet", err=True)
            continue
        with path.open(errors="replace") as handle:
            tail = deque(handle, maxlen=lines)
            if service is None:
                typer.echo(f"==> {name} ({path}) <==")
            typer.echo("".join(tail), nl=False)
            while follow:
                line = handle.readline()
                if line:
                    typer.echo(line, nl=False)
                else:
                    time.sleep(0.5)


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
    from shared.config import region_problem
    from shared.errors import SetupError
    from shared.tenancy import PUSH_PROVIDERS, plan_tenant, save_tenant

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
    if push_provider is not None and push_provider not in PUSH_PROVIDERS:
        raise _tenant_error(f"--push-provider must be one of {', '.join(PUSH_PROVIDERS)}, got {push_provider!r}", 2)
    if problem := region_problem(region.lower()):
        raise _tenant_error(f"--region: {problem}", 2)
    push_policy = _push_policy_given(quiet_hours, frequency_cap)
    stack = _running(home)  # every value above is checked before the stack is even asked
    try:
        plan = plan_tenant(
            name, region, bucket=bucket, dataset=dataset, prefix=prefix, push_provider=push_provider,
            push_policy=push_policy, privacy=privacy_given,
            add_pii_keys=pii_key or (), drop_pii_keys=drop_pii_key or (), allow_weaker_privacy=allow_weaker_privacy,
        )  # fmt: skip
    except SetupError as exc:
        raise _tenant_error(str(exc), 1) from exc
    except ValueError as exc:
        raise _tenant_error(str(exc), 2) from exc
    _check_shares_nothing(plan.tenant)
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
        echo_json(tenant.model_dump())
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


def _check_shares_nothing(tenant: Any) -> None:
    """Refuse, before anything is created, a bucket or dataset another tenant already has (the registry's own rule,
    ``parse_registry``, applied to the registry with this tenant in it)."""
    from shared.config import parse_registry, settings

    path = settings().tenants_file
    registry = json.loads(path.read_text() or "{}") if path and path.exists() else {}
    _usable, problems = parse_registry({**registry, tenant.name: tenant.model_dump(mode="json")})
    if tenant.name in problems:
        raise _tenant_error(f"tenant {tenant.name!r} {problems[tenant.name]}: give it its own (--bucket, --dataset)", 1)


def _tenant_error(message: str, code: int) -> CliError:
    """The refusal to raise: `tenant add` refuses before it creates anything (one line, exit code ``code``)."""
    return CliError(message, code)


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
def tenant_list(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """The registered tenants as a table (--json: each one's whole configuration); unusable ones say why."""
    from shared.config import parse_registry, settings

    _running(home)
    path = settings().tenants_file
    usable, problems = parse_registry(json.loads(path.read_text() or "{}") if path and path.exists() else {})
    tenants = sorted(usable.values(), key=lambda t: t.name)
    if as_json:
        echo_json([t.model_dump() for t in tenants])
        return
    rows = [
        {"name": t.name, "region": t.region, "push": t.push_provider, "privacy": t.privacy.mode,
         "bucket": t.bucket, "dataset": t.dataset, "prefix": t.prefix or None}
        for t in tenants
    ]  # fmt: skip
    typer.echo(table(rows, ["name", "region", "push", "privacy", "bucket", "dataset", "prefix"]))
    for name, problem in sorted(problems.items()):
        warn(f"tenant {name!r} is not usable: {problem}")


@tenant_app.command("remove")
def tenant_remove(
    name: Annotated[str, typer.Argument(help="the tenant to remove")],
    purge: Annotated[
        bool, typer.Option("--purge", help="also delete its buckets, dataset and local keys (its data is gone)")
    ] = False,
    home: HomeOpt = None,
) -> None:
    """Unregister a tenant: nothing is ingested, loaded or sent for it any more. Its bucket, dataset and keys stay
    (`tenant add` with the same values brings it back) unless --purge deletes them."""
    from infra.local.tenant_admin import remove_tenant

    stack = _running(home)
    removed = remove_tenant(stack.cfg, name, purge=purge)
    kept = "" if purge else "; its bucket, dataset and keys are kept (--purge deletes them)"
    typer.echo(f"removed tenant {name}{': deleted ' + ', '.join(removed) if removed else ''}{kept}")


@app.command()
def drop(
    paths: Annotated[list[Path], typer.Argument(exists=True, help="files or directories to upload")],
    tenant: TenantOpt = "default",
    prefix: Annotated[str, typer.Option(help="object name prefix")] = "",
    as_json: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Upload files into the tenant's bucket: a file to PREFIX/<name>, a directory's files to PREFIX/<relative path>.
    Prints one gs:// URL per file; warns about files whose names no layout recognises (they will be ignored)."""
    from infra.local.stack_ops import plan_drop, upload

    empty = [str(p) for p in paths if p.is_dir() and not any(f.is_file() for f in p.rglob("*"))]
    if empty:
        fail(f"no files under {', '.join(empty)}: nothing to upload")
    stack = _running(home)
    config = _tenant(tenant)
    uploads = plan_drop(paths, prefix, config.prefix)
    ignored = [u for u in uploads if not u.layout.is_data]
    if ignored:
        reasons = sorted({str(u.layout.reason) for u in ignored})
        examples = ", ".join(u.name for u in ignored[:3]) + (", ..." if len(ignored) > 3 else "")
        warn(f"{len(ignored)} of {len(uploads)} files will be ignored ({', '.join(reasons)}): {examples}. Data files "
             "go under segment-logs/<source>/<day-ms>/, mixpanel/, amplitude/ or csv/<source>/"
             f"{' after the tenant prefix ' + repr(config.prefix) if config.prefix else ''}: drop the folder that "
             "holds them, or name the path with --prefix")  # fmt: skip
    with progress(f"uploading to gs://{config.bucket}") as advance:
        advance(0, len(uploads))
        uploaded = upload(stack.cfg, uploads, tenant, on_file=lambda _item: advance(1))
    if as_json:
        echo_json({"tenant": tenant, "uploaded": uploaded, "ignored": [u.name for u in ignored]})
        return
    for line in uploaded:
        typer.echo(line)
    size = sum(u.size for u in uploads)
    typer.echo(f"uploaded {len(uploaded)} files ({size:,} bytes) to gs://{config.bucket}; "
               f"`landline wait -t {tenant}` returns when they are loaded", err=True)  # fmt: skip


@app.command()
def wait(
    timeout: Annotated[float, typer.Option(min=0, help="seconds to wait at most")] = 120.0,
    tenant: Annotated[
        str | None, typer.Option("--tenant", "-t", help="wait only for this tenant's files and messages")
    ] = None,
    as_json: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Return when every delivered message is processed (no backlog); exit code 1 on timeout. Says which
    deliveries failed while it waited, and where to look."""
    from infra.local.stack_ops import router_stats

    stack = _running(home)
    if tenant:
        _tenant(tenant)
    router = stack.cfg.url("router")
    before = router_stats(router, tenant)
    with status_line(f"waiting{' for ' + tenant if tenant else ''}") as update:
        try:
            stats = wait_idle(router, timeout, tenant=tenant, on_poll=lambda s: update(_busy_text(s)))
        except TimeoutError as exc:
            last = json.loads(str(exc))
            fail(f"still busy after {timeout:g}s: {_busy_text(last)}; see `landline logs` and `landline status`")
    failed = {k: n - before["failures"].get(k, 0) for k, n in stats["failures"].items() if n > before["failures"].get(k, 0)}
    parked = stats["dead_lettered"] - before["dead_lettered"]
    for function, n in sorted(failed.items()):
        warn(f"{n} failed deliveries to {function} while waiting (retried by Pub/Sub): see "
             f"{stack.cfg.paths.logs / (function + '.log')} or `landline logs {function}`")  # fmt: skip
    if parked:
        warn(f"{parked} messages were dead-lettered while waiting: `landline dead-letters -t {tenant or 'T'}` shows "
             "them, `landline replay -t T --dead-letters` republishes them after a fix")  # fmt: skip
    if as_json:
        echo_json({**stats, "failed_while_waiting": failed, "dead_lettered_while_waiting": parked})
        return
    delivered = ", ".join(f"{k} {v}" for k, v in sorted(stats["delivered"].items())) or "none"
    typer.echo(f"idle{' (tenant ' + tenant + ')' if tenant else ''}: delivered so far {delivered}; "
               f"failed while waiting {sum(failed.values())}, dead-lettered {parked}")  # fmt: skip


def _busy_text(stats: dict[str, Any]) -> str:
    return (f"{stats['inflight']} deliveries in flight, {stats['awaiting_retry']} awaiting a retry, "
            f"{len(stats['expected_objects'])} files or messages not yet handled")  # fmt: skip


@app.command()
def query(
    sql: Annotated[str, typer.Argument(help="one SQL statement; unqualified table names are the tenant's")],
    tenant: TenantOpt = "default",
    write: Annotated[bool, typer.Option("--write", help="allow DDL, DML and scripts (they change or drop data)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON array instead of JSON lines")] = False,
    home: HomeOpt = None,
) -> None:
    """Run SQL against the tenant's dataset; rows as JSON lines. Read-only unless --write: BigQuery checks the
    statement first (a dry run), and only a SELECT of the tenant's own tables runs. `landline tables` lists them.
    A guard against mistakes, not a boundary: it runs with your credentials."""
    from infra.local.operator_query import run_guarded

    if not sql.strip():
        fail('empty SQL: give one statement, e.g. landline query "SELECT * FROM files_latest"', 2)
    _running(home)
    result = run_guarded(tenant, sql, write=write)
    if as_json:
        echo_json(result.rows)
    else:
        for row in result.rows:
            typer.echo(json.dumps(row, default=str))
    if result.statement_type != "SELECT" and not result.rows:
        typer.echo(result.summary(), err=True)


@app.command()
def tables(tenant: TenantOpt = "default", as_json: JsonOpt = False, home: HomeOpt = None) -> None:
    """The tables and views of the tenant's dataset, and what each holds."""
    from infra.local.operator_query import catalog, table_names

    _running(home)
    present = set(table_names(tenant))
    rows = [{**item, "present": item["name"] in present} for item in catalog()]
    if as_json:
        echo_json(rows)
        return
    typer.echo(table([{**r, "present": "yes" if r["present"] else "MISSING"} for r in rows],
                     ["name", "kind", "present", "description"]))  # fmt: skip
    if not all(r["present"] for r in rows):
        region = _tenant(tenant).region
        warn(f"tables are missing: re-create them with `landline tenant add {tenant} --region {region}`")


@app.command()
def stats(tenant: TenantOpt = "default", as_json: JsonOpt = False, home: HomeOpt = None) -> None:
    """Counts: files by status (and why files were ignored or rejected), lines, events, event_rows, duplicates,
    users, rejected by reason, sends by status, and unaccounted lines (read, but neither rows, rejections nor
    duplicates: 0 when nothing is lost)."""
    from infra.local.stats import format_stats, tenant_stats

    _running(home)
    counts = tenant_stats(tenant)
    typer.echo(json.dumps(counts, default=str) if as_json else format_stats(tenant, counts))


@app.command()
def tick(
    tenant: Annotated[
        str | None, typer.Option("--tenant", "-t", help="only this tenant (or several, comma-separated)")
    ] = None,
    as_json: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Publish one scheduler tick to send-ticks (what Cloud Scheduler does every few minutes); `landline wait`
    returns once it was handled."""
    stack = _running(home)
    names = [n.strip() for n in (tenant or "").split(",") if n.strip()]
    for name in names:
        if not _tenant(name).push_provider:
            warn(f"tenant {name} has no push provider: the tick sends nothing for it "
                 f"(set one with `landline tenant add {name} --region R --push-provider P`)")  # fmt: skip
    message_id = publish_tick(stack.cfg.url("router"), tenant)
    if as_json:
        echo_json({"message_id": message_id, "tenants": names or "all"})
    else:
        typer.echo(f"tick published: {message_id} (message id on send-ticks, for {', '.join(names) or 'all tenants'})")


@app.command("schedule")
def schedule_cmd(
    contact: Annotated[str, typer.Option(help="contact_id of the recipient")],
    title: Annotated[str, typer.Option(help="notification title")],
    body: Annotated[str, typer.Option(help="notification text")],
    tenant: TenantOpt = "default",
    at: Annotated[
        str | None, typer.Option(help="send time, ISO-8601 with an offset, e.g. 2027-01-01T09:00Z (default: now)")
    ] = None,
    local_time: Annotated[
        str | None, typer.Option(help="YYYY-MM-DDTHH:MM in the contact's timezone (instead of --at)")
    ] = None,
    message_id: Annotated[str | None, typer.Option(help="idempotency key of the message (default: random)")] = None,
    provider: Annotated[str | None, typer.Option(help="override the tenant's provider: fcm, apns, onesignal, braze, expo")] = None,
    data: Annotated[str | None, typer.Option(help='JSON object of string values, e.g. {"campaign": "x"}')] = None,
    as_json: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Schedule one push (lands in message_schedule; the next tick sends it when due). Refuses what can never be
    sent; warns about a contact with no push token yet. Prints the message id."""
    import uuid

    from infra.local.schedule_checks import check_schedule_options, contact_has_token
    from shared.push.schedule import SendRequest, schedule

    send_at, payload = check_schedule_options(at, local_time, provider, data, title, body)
    _running(home)
    config = _tenant(tenant)
    if not (provider or config.push_provider):
        fail(f"tenant {tenant} has no push provider, so this message could never be sent: set one with "
             f"`landline tenant add {tenant} --region {config.region} --push-provider P` (or pass --provider)")  # fmt: skip
    request = SendRequest.model_validate(
        {
            "message_id": message_id or uuid.uuid4().hex,
            "contact_id": contact,
            "title": title,
            "body": body,
            "send_at": at,
            "local_send_time": local_time,
            "provider": provider,
            "data": payload,
        }
    )
    if not contact_has_token(tenant, contact):
        warn(f"contact {contact!r} has no push token in tenant {tenant} yet (users_latest): unless one arrives, the "
             "tick records it skipped / no_token")  # fmt: skip
    schedule(config, [request])
    when = f"{local_time} in the contact's timezone" if local_time else (send_at.isoformat() if send_at else "now")
    if as_json:
        echo_json({"message_id": request.message_id, "tenant": tenant, "contact_id": contact, "when": when})
        return
    typer.echo(request.message_id)
    typer.echo(f"scheduled {request.message_id} for {contact} at {when}; the next `landline tick -t {tenant}` sends "
               "it when due", err=True)  # fmt: skip


@app.command()
def demo(
    home: HomeOpt = None,
    keep: Annotated[bool, typer.Option(help="leave the stack running afterwards")] = True,
) -> None:
    """Up, drop the bundled sample Segment files, wait, tick, wait, and print a readable summary."""
    from infra.local.demo import run_demo
    from infra.local.stack_config import activate

    stack = _stack(home)
    typer.echo("starting the local stack ...")
    seconds = stack.up()
    typer.echo(f"stack healthy in {seconds:.1f}s")
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
    as_json: JsonOpt = False,
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
        expect(stack.cfg.url("router"), [f"msg:{message_id}" for message_id in result.message_ids], tenant)
        typer.echo(json.dumps(result.as_dict()) if as_json else result.summary())
        if result.selected == 0:
            _nothing_to_replay(tenant, reason)
        elif not dry_run and not as_json:
            typer.echo(f"`landline wait -t {tenant} && landline stats -t {tenant}` shows what loaded this time "
                       "(a line rejected again stays under rejected)", err=True)  # fmt: skip
        return
    if reason:
        raise typer.BadParameter("rejected lines only; dead letters are whole messages", param_hint="--reason")
    from shared.dead_letters import replay_dead_letters

    with progress("replaying dead letters") as advance:
        replayed = replay_dead_letters(
            tenant, dry_run=dry_run, fix_tenant=fix_tenant, on_letter=lambda _letter: advance(1)
        )
    expect(stack.cfg.url("router"), [f"msg:{message_id}" for message_id in replayed.message_ids], tenant)
    typer.echo(json.dumps(replayed.as_dict()) if as_json else replayed.summary())


def _nothing_to_replay(tenant: str, reason: str | None) -> None:
    """Say so, and for a reason the tenant has no lines of, which reasons it has."""
    from shared.warehouse.query import run_query

    if reason is None:
        warn(f"tenant {tenant} has no rejected lines: nothing to replay")
        return
    rows = run_query(tenant, "SELECT DISTINCT reason_code FROM rejected_deduped ORDER BY reason_code")
    known = ", ".join(str(r["reason_code"]) for r in rows) or "none"
    warn(f"tenant {tenant} has no rejected lines with reason {reason!r}; its reasons: {known}")


@app.command("dead-letters")
def dead_letters_cmd(tenant: TenantOpt, as_json: JsonOpt = False, home: HomeOpt = None) -> None:
    """List what is parked in the tenant's dead-letter subscriptions, and why; nothing is consumed."""
    from shared.dead_letters import list_dead_letters

    _running(home)
    with progress("reading dead letters") as advance:
        letters = list_dead_letters(tenant, on_letter=lambda _letter: advance(1))
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
    bulk: Annotated[
        bool, typer.Option("--bulk", help="validate in parallel tasks and load with one load job per day and table")
    ] = False,
    tasks: Annotated[int, typer.Option(min=1, max=64, help="with --bulk: parallel tasks (processes here)")] = 2,
    run: Annotated[str | None, typer.Option(help="with --bulk: finish this earlier run instead of planning one")] = None,
    as_json: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Re-ingest objects already in the tenant's bucket (files that arrived before the tenant existed, or while ingest
    failed): a finalize notification per object to its object-notifications topic, so they take the usual path.
    With --bulk (months of archives): the same validation in parallel tasks, rows staged as files in the tenant's
    staging bucket, and one BigQuery load job per day and table; re-running replaces those objects' rows."""
    from datetime import UTC, datetime

    from shared.backfill import backfill as run_backfill

    if bulk:
        if since or include_loaded or dry_run:
            fail("--bulk replaces every object under --prefix: drop --since, --include-loaded and --dry-run", 2)
        _bulk_backfill(tenant, prefix, tasks, run, as_json, home)
        return
    if run:
        fail("--run goes with --bulk", 2)
    start = None
    if since:
        try:
            start = datetime.fromisoformat(since)
        except ValueError as exc:
            raise typer.BadParameter(f"not an ISO date or time: {since}", param_hint="--since") from exc
        start = start if start.tzinfo else start.replace(tzinfo=UTC)
    stack = _running(home)
    with progress("publishing notifications") as advance:
        result = run_backfill(
            tenant, prefix=prefix, since=start, include_loaded=include_loaded, dry_run=dry_run,
            on_object=lambda _origin, _published: advance(1), on_total=lambda total: advance(0, total),
        )
    expect(stack.cfg.url("router"), [f"msg:{message_id}" for message_id in result.message_ids], tenant)
    typer.echo(json.dumps(result.as_dict()) if as_json else result.summary())


def _bulk_backfill(tenant: str, prefix: str, tasks: int, run: str | None, as_json: bool, home: Path | None) -> None:
    from shared.bulk import plan_run, read_plan, run_local

    _running(home)
    _tenant(tenant)
    plan = read_plan(tenant, run) if run else plan_run(tenant, prefix=prefix, tasks=tasks)
    if not plan.objects:
        fail(f"no data objects under gs://{_tenant(tenant).bucket}/{prefix}: nothing to backfill", 1)
    with progress(f"bulk run {plan.run}: {plan.tasks} tasks, then load jobs") as advance:
        advance(0, plan.tasks)
        summary = run_local(tenant, run=plan.run, on_task=advance)
    if as_json:
        echo_json(summary.as_dict())
        return
    rows = ", ".join(f"{table} {n}" for table, n in sorted(summary.rows.items())) or "no rows"
    replaced = sum(summary.replaced.values())
    typer.echo(f"bulk run {summary.run}: {summary.objects} objects, {summary.lines} lines -> {rows} in "
               f"{summary.load_jobs} load jobs ({replaced} earlier rows of these objects replaced)")  # fmt: skip


@audience_app.command("create")
def audience_create(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="the audience file, YAML or JSON")],
    tenant: TenantOpt = "default",
    as_json: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Check an audience file and store it in the tenant's dataset (a new version of an existing name replaces it).
    The file is checked, and its query compiled, before anything is stored."""
    from shared.campaigns.audience import AudienceError, compile_audience, load_audience
    from shared.campaigns.store import save_audience

    try:
        audience = load_audience(file)
        compile_audience(audience)
    except AudienceError as exc:
        fail(str(exc), 2)
    _running(home)
    _tenant(tenant)
    stored = save_audience(tenant, audience)
    if as_json:
        echo_json({"tenant": tenant, "name": audience.name, "created_at": stored.created_at.isoformat(),
                   "definition": json.loads(audience.to_json())})  # fmt: skip
        return
    typer.echo(f"stored audience {audience.name} for tenant {tenant}; "
               f"`landline audience preview {audience.name} -t {tenant}` shows who is in it")  # fmt: skip


@audience_app.command("list")
def audience_list(tenant: TenantOpt = "default", as_json: JsonOpt = False, home: HomeOpt = None) -> None:
    """The tenant's audiences (each one's newest version) with when it was stored (--json: with definitions)."""
    from shared.campaigns.store import list_audiences

    _running(home)
    _tenant(tenant)
    stored = list_audiences(tenant)
    if as_json:
        echo_json([{"name": s.audience.name, "created_at": s.created_at.isoformat(),
                    "definition": json.loads(s.audience.to_json())} for s in stored])  # fmt: skip
        return
    if not stored:
        typer.echo(f"tenant {tenant} has no audiences yet: `landline audience create -t {tenant} FILE` adds one")
        return
    typer.echo(table([{"name": s.audience.name, "created_at": s.created_at.isoformat(timespec="seconds"),
                       "description": s.audience.description or None} for s in stored],
                     ["name", "created_at", "description"]))  # fmt: skip


@audience_app.command("preview")
def audience_preview(
    name: Annotated[str, typer.Argument(help="the audience's name")],
    tenant: TenantOpt = "default",
    as_json: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Who is in the audience now: its size, counts by country and by activity level, and up to 5 contact ids (no
    addresses or tokens)."""
    from shared.campaigns.store import get_audience, preview_audience

    _running(home)
    _tenant(tenant)
    result = preview_audience(tenant, get_audience(tenant, name).audience)
    if as_json:
        echo_json(result.as_dict())
        return

    def counts(values: dict[str, int]) -> str:
        return ", ".join(f"{key} {n:,}" for key, n in values.items()) or "none"

    typer.echo(f"audience {name} (tenant {tenant}): {result.size:,} contacts")
    typer.echo(f"  by country:  {counts(result.by_country)}")
    typer.echo(f"  by activity: {counts(result.by_activity)}")
    typer.echo(f"  for example: {', '.join(result.sample) or 'nobody'}")


@campaign_app.command("create")
def campaign_create(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="the campaign file, YAML or JSON")],
    tenant: TenantOpt = "default",
    as_json: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Check a campaign file (fields, shares, templates, its audience) and store it in the tenant's dataset. Nothing
    is sent until `landline campaign launch` (or its launch_at, at the next tick)."""
    from shared.campaigns.campaign import CampaignError, load_campaign
    from shared.campaigns.store import save_campaign

    try:
        campaign = load_campaign(file)
    except CampaignError as exc:
        fail(str(exc), 2)
    _running(home)
    _tenant(tenant)
    stored = save_campaign(tenant, campaign)  # SetupError (one line with its fix) for an unknown audience
    if as_json:
        echo_json({"tenant": tenant, "name": campaign.name, "created_at": stored.created_at.isoformat(),
                   "arms": dict(campaign.arm_shares()), "definition": json.loads(campaign.to_json())})  # fmt: skip
        return
    arms = ", ".join(f"{arm} {share / 10_000:g}%" for arm, share in campaign.arm_shares())
    when = f"launches by itself at {campaign.launch_at.isoformat()}" if campaign.launch_at else (
        f"`landline campaign launch {campaign.name} -t {tenant}` launches it")
    typer.echo(f"stored campaign {campaign.name} for tenant {tenant} (audience {campaign.audience}; {arms}); {when}")


@campaign_app.command("launch")
def campaign_launch(
    name: Annotated[str, typer.Argument(help="the campaign's name")],
    tenant: TenantOpt = "default",
    as_json: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Assign every audience member an arm and schedule the variants' messages, inside BigQuery. Launching again
    changes nothing; the next `landline tick` sends what is due."""
    from shared.campaigns.launch import launch_campaign

    _running(home)
    _tenant(tenant)
    launch = launch_campaign(tenant, name)
    if as_json:
        echo_json({"campaign": name, "launch_id": launch.launch_id, "new": launch.new,
                   "launched_at": launch.launched_at.isoformat(), "audience_size": launch.audience_size,
                   "scheduled": launch.scheduled})  # fmt: skip
        return
    if not launch.new:
        typer.echo(f"campaign {name} was already launched at {launch.launched_at.isoformat(timespec='seconds')} "
                   f"(launch {launch.launch_id}); nothing changed")  # fmt: skip
        return
    typer.echo(f"launched {name}: {launch.audience_size:,} members assigned, {launch.scheduled:,} messages scheduled; "
               f"`landline tick -t {tenant}` sends what is due, `landline campaign status {name} -t {tenant}` "
               "shows where it stands")  # fmt: skip


@campaign_app.command("status")
def campaign_status_command(
    name: Annotated[str, typer.Argument(help="the campaign's name")],
    tenant: TenantOpt = "default",
    as_json: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Members per arm, messages scheduled, each message's latest outcome, skips and failures by reason."""
    from shared.campaigns.status import campaign_status
    from shared.campaigns.store import get_campaign

    _running(home)
    _tenant(tenant)
    get_campaign(tenant, name)  # an unknown name: one line naming the known ones
    status = campaign_status(tenant, name)
    if as_json:
        echo_json(status.as_dict())
        return
    if not status.launched:
        typer.echo(f"campaign {name} (tenant {tenant}) is not launched yet: `landline campaign launch {name} -t {tenant}`")
        return

    def counts(values: dict[str, int]) -> str:
        return ", ".join(f"{key} {n:,}" for key, n in sorted(values.items())) or "none"

    typer.echo(f"campaign {name} (tenant {tenant}), launched {status.launched_at:%Y-%m-%d %H:%M:%S} UTC: "
               f"{status.audience_size:,} members")  # fmt: skip
    typer.echo(f"  assigned:  {counts(status.assigned)}")
    typer.echo(f"  scheduled: {status.scheduled:,} (waiting {status.waiting:,})")
    typer.echo(f"  sends:     {counts(status.sends)}")
    typer.echo(f"  skipped:   {counts(status.skipped)}")
    typer.echo(f"  failed:    {counts(status.failed)}")


@report_app.command("campaign")
def report_campaign(
    name: Annotated[str, typer.Argument(help="the campaign's name")],
    tenant: TenantOpt = "default",
    as_json: JsonOpt = False,
    html_file: HtmlOpt = None,
    home: HomeOpt = None,
) -> None:
    """Per arm: assigned, sent, opened, converted, and each variant's lift over the holdout with its 95% interval and
    p-value; by activity level; a sample-ratio check. Computed in BigQuery (README, "Reports")."""
    from shared.campaigns.results import campaign_report
    from shared.campaigns.store import get_campaign

    _running(home)
    _tenant(tenant)
    get_campaign(tenant, name)  # an unknown name: one line naming the known ones
    report = campaign_report(tenant, name)
    if html_file is not None:
        from infra.local.report_page import campaign_page

        html_file.write_text(campaign_page(report, tenant), encoding="utf-8")
    if as_json:
        echo_json(report.as_dict())
        return
    if not report.launched:
        typer.echo(f"campaign {name} (tenant {tenant}) is not launched yet: `landline campaign launch {name} -t {tenant}`")
        return
    typer.echo(f"campaign {name} (tenant {tenant}): conversion = {', '.join(report.conversion_events) or 'none'} "
               f"within {report.window_hours:g} h of the send")  # fmt: skip
    typer.echo(table([_report_row(vars(a)) for a in report.arms], _REPORT_COLUMNS))
    srm = (f"sample ratio: chi2 {report.srm_chi2 or 0:.3g}, p {_number(report.srm_p_value)}; "
           f"strata off their shares: {report.strata_off}")  # fmt: skip
    typer.echo(srm + ("  MISMATCH: the assignment is not what was configured; the lifts are not trustworthy"
                      if report.srm_alarm else "  ok"))  # fmt: skip
    if report.by_activity:
        typer.echo("by activity level:")
        typer.echo(table([_report_row(r) for r in report.by_activity], ["activity", *_REPORT_COLUMNS]))
    if report.by_send_reason:
        typer.echo("by send time's reason (exploration: a random time in the window, to check the model against):")
        typer.echo(table([_report_row(r) for r in report.by_send_reason], ["send_reason", *_REPORT_COLUMNS]))
    if report.waves:
        typer.echo(f"waves ({report.allocation} allocation): shares per activity level (* = every other level)")
        typer.echo(table(_wave_rows(report.waves), ["wave", "launched", "members", "level", "shares"]))
        typer.echo("lifts weighted by the recorded shares (inverse-propensity; pooling the waves would be biased):")
        typer.echo(table([{"arm": r["arm"], "members": r["members"], "lift": _number(r["lift_abs"], True),
                           "95% interval": f"[{_number(r['lift_ci_low'], True)}, {_number(r['lift_ci_high'], True)}]"}
                          for r in report.weighted_lifts], ["arm", "members", "lift", "95% interval"]))  # fmt: skip
    if html_file is not None:
        typer.echo(f"page: {html_file}")


def _wave_rows(waves: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"wave": w["wave"], "launched": f"{w['launched_at']:%Y-%m-%d %H:%M}", "members": w["audience_size"],
         "level": level, "shares": " ".join(f"{arm} {share:.0%}" for arm, share in arms.items())}
        for w in waves for level, arms in sorted(w["shares"].items())
    ]  # fmt: skip


@report_app.command("pipeline")
def report_pipeline(
    tenant: TenantOpt = "default",
    as_json: JsonOpt = False,
    html_file: HtmlOpt = None,
    home: HomeOpt = None,
) -> None:
    """Files, lines (where each one went), rejects by reason and sends by status per hour: `stats` as a report."""
    from infra.local.stats import format_stats, sends_by_hour, tenant_stats

    _running(home)
    _tenant(tenant)
    stats = tenant_stats(tenant)
    sends = sends_by_hour(tenant)
    if html_file is not None:
        from infra.local.report_page import pipeline_page

        html_file.write_text(pipeline_page(stats, sends), encoding="utf-8")
    if as_json:
        echo_json({**stats, "sends_by_hour": sends})
        return
    typer.echo(format_stats(tenant, stats))
    if html_file is not None:
        typer.echo(f"page: {html_file}")


@app.command()
def simulate(
    tenant: Annotated[str, typer.Option("--tenant", "-t", help="tenant to run in (created if missing)")] = "sim",
    contacts: Annotated[int, typer.Option(min=40, max=200_000, help="synthetic contacts")] = 2000,
    seed: Annotated[int | None, typer.Option(help="reproduce a run's data (default: a random seed, printed)")] = None,
    as_json: JsonOpt = False,
    html_file: HtmlOpt = None,
    home: HomeOpt = None,
) -> None:
    """A campaign with a known truth through the real pipeline: synthetic contacts as a Segment export, a launch
    sent to the fake FCM, receipts and conversions as a later export; then the report against the truth (exact
    counts per arm and activity level, and which 95% intervals cover the true lift). Exit 1 if a count differs."""
    import contextlib
    import random
    import sys

    from infra.local.simulate import format_comparison, run_simulation
    from shared.config import tenants

    stack = _running(home)
    if tenant not in {t.name for t in tenants().all()}:
        with contextlib.redirect_stdout(sys.stderr):  # stdout keeps only the result (--json)
            tenant_add(tenant, region="europe-west1", push_provider="fcm", quiet_hours="off", home=home)
        tenants.cache_clear()
    seed = random.SystemRandom().randrange(1_000_000) if seed is None else seed
    typer.echo(f"seed {seed} (`--seed {seed}` reproduces this run's data)", err=True)
    sim = run_simulation(stack.cfg, tenant, contacts, seed, lambda line: typer.echo(line, err=True))
    assert sim.report is not None
    if html_file is not None:
        from infra.local.report_page import campaign_page

        html_file.write_text(campaign_page(sim.report, tenant), encoding="utf-8")
    result = sim.comparison()
    if as_json:
        echo_json(result)
    else:
        typer.echo(format_comparison(result))
        if html_file is not None:
            typer.echo(f"page: {html_file}")
    if not result["exact"]:
        raise typer.Exit(1)


_REPORT_COLUMNS = ["arm", "assigned", "sent", "opened", "converted", "rate", "lift", "95% interval", "p"]


def _number(value: float | None, percent: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.2%}" if percent else f"{value:.3g}"


def _report_row(r: dict[str, Any]) -> dict[str, Any]:
    interval = (f"[{_number(r['lift_ci_low'], True)}, {_number(r['lift_ci_high'], True)}]"
                if r["lift_ci_low"] is not None else "-")  # fmt: skip
    return {**r, "rate": f"{r['conversion_rate']:.2%}", "lift": _number(r["lift_abs"], True), "95% interval": interval,
            "p": _number(r["p_value"])}  # fmt: skip


@campaign_app.command("list")
def campaign_list(tenant: TenantOpt = "default", as_json: JsonOpt = False, home: HomeOpt = None) -> None:
    """The tenant's campaigns (each one's newest version), their audience and whether they were launched."""
    from shared.campaigns.launch import launched
    from shared.campaigns.store import list_campaigns

    _running(home)
    _tenant(tenant)
    rows = []
    for stored in list_campaigns(tenant):
        launch = launched(tenant, stored.campaign.name)
        rows.append({"name": stored.campaign.name, "audience": stored.campaign.audience,
                     "created_at": stored.created_at.isoformat(timespec="seconds"),
                     "launch_at": stored.campaign.launch_at.isoformat() if stored.campaign.launch_at else None,
                     "launched_at": launch.launched_at.isoformat(timespec="seconds") if launch else None,
                     "definition": json.loads(stored.campaign.to_json())})  # fmt: skip
    if as_json:
        echo_json(rows)
        return
    if not rows:
        typer.echo(f"tenant {tenant} has no campaigns yet: `landline campaign create -t {tenant} FILE` adds one")
        return
    typer.echo(table(rows, ["name", "audience", "created_at", "launch_at", "launched_at"]))


def main() -> None:
    app()


if __name__ == "__main__":
    main()

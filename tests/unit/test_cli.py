"""`landline` without a stack: the newcomer review's mistakes end in one line and a non-zero exit, conventions hold
(-h, --version, completion, --json), and the README's CLI section matches the commands and lists every table."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from infra.local import cli
from infra.local.cli import app
from infra.local.stack_config import REPO

if TYPE_CHECKING:
    from collections.abc import Iterator

runner = CliRunner()
ADD = ["tenant", "add", "acme", "--region", "europe-west1"]
SCHEDULE = ["schedule", "--contact", "u1", "--title", "Hi", "--body", "Hello"]


def leaf_commands() -> Iterator[tuple[str, Any]]:
    def walk(command: Any, path: list[str]) -> Iterator[tuple[str, Any]]:
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                yield from walk(sub, [*path, name])
        else:
            yield " ".join(path), command

    yield from walk(get_command(app), [])


def long_options(command: Any) -> set[str]:
    names = {o for p in command.params for o in [*p.opts, *getattr(p, "secondary_opts", [])] if o.startswith("--")}
    return names - {"--help", "--home"}


# -- the review's mistakes: one line on stderr, a non-zero exit, no traceback ---------------------------------------
MISTAKES = {
    "region that does not exist (row 10)": (["tenant", "add", "uxmars", "--region", "mars-1"], "unknown region"),
    "misspelt push provider (row 12)": ([*ADD, "--push-provider", "fcmm"], "--push-provider must be one of"),
    "quiet hours out of range (row 13)": ([*ADD, "--quiet-hours", "25:00-08:00"], "HH:MM-HH:MM"),
    "quiet hours without colons (row 13)": ([*ADD, "--quiet-hours", "2100-0800"], "HH:MM-HH:MM"),
    "frequency cap 0 (row 14)": ([*ADD, "--frequency-cap", "0"], "--frequency-cap must be at least 1"),
    "frequency cap -1 (row 13)": ([*ADD, "--frequency-cap", "-1"], "--frequency-cap must be at least 1"),
    "privacy typo (row 15)": ([*ADD, "--privacy", "hsh"], "--privacy must be"),
    "send time in words (row 40)": ([*SCHEDULE, "--at", "tomorrow"], "--at must be ISO-8601 with an offset"),
    "send time without zone (row 40)": ([*SCHEDULE, "--at", "2027-01-01T09:00"], "--at needs an offset"),
    "impossible month (row 40)": ([*SCHEDULE, "--at", "2027-13-01T09:00Z"], "--at must be ISO-8601"),
    "local time in words (row 41)": ([*SCHEDULE, "--local-time", "9am"], "--local-time must be YYYY-MM-DDTHH:MM"),
    "local time with zone (row 41)": ([*SCHEDULE, "--local-time", "2027-01-01T09:00Z"], "--local-time must be"),
    "both send times (row 42)": (
        [*SCHEDULE, "--at", "2027-01-01T09:00Z", "--local-time", "2027-01-01T09:00"], "exclude each other"
    ),
    "data that is not JSON (row 46)": ([*SCHEDULE, "--data", "notjson"], "--data must be a JSON object of string"),
    "data with a number (row 46)": ([*SCHEDULE, "--data", '{"a": 1}'], "--data must be a JSON object of string"),
    "unknown provider (row 46)": ([*SCHEDULE, "--provider", "zzz"], "--provider must be one of"),
    "empty title (row 46)": (["schedule", "--contact", "u1", "--title", " ", "--body", "b"], "--title must not be"),
    "empty SQL (row 27)": (["query", ""], "empty SQL"),
    "up in a region that does not exist": (["up", "--region", "mars-1"], "unknown region"),
    "follow every log at once": (["logs", "--follow"], "--follow needs one SERVICE"),
    "stack not running (row 53)": (["stats", "-t", "acme"], "start it with `landline up`"),
}


@pytest.mark.parametrize("args, says", MISTAKES.values(), ids=MISTAKES.keys())
def test_a_mistake_is_one_line_and_a_non_zero_exit(args: list[str], says: str, tmp_path: Path) -> None:
    # GIVEN no running stack (an empty state folder): every check happens before the stack is asked
    # WHEN the mistake is made
    result = runner.invoke(app, args, env={"LANDLINE_HOME": str(tmp_path / "home")})
    # THEN it is refused in one line on stderr that says what to do, with a non-zero exit and no traceback
    assert result.exit_code != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert says in lines[0]
    assert "Traceback" not in result.output + result.stderr
    # AND nothing was created
    assert not (tmp_path / "home").exists()


def test_a_usage_mistake_keeps_clicks_form_and_exit_code_2(tmp_path: Path) -> None:
    # row 35 (a negative timeout) and row 18 (a typo, rated good): usage, a hint, and the error, exit code 2
    for args in (["wait", "--timeout", "-5"], ["stats", "--tenat", "x"]):
        result = runner.invoke(app, args, env={"LANDLINE_HOME": str(tmp_path / "home")})
        assert result.exit_code == 2
        assert result.stderr.strip().splitlines()[-1].startswith("Error: ")
        assert "Traceback" not in result.stderr


def test_an_empty_folder_is_not_dropped(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["drop", str(tmp_path / "empty")], env={"LANDLINE_HOME": str(tmp_path / "home")})
    assert result.exit_code == 1
    assert result.stderr.strip() == f"landline drop: no files under {tmp_path / 'empty'}: nothing to upload"


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty tenant registry this process reads, and a CLI that believes the stack runs."""
    from shared import config

    path = tmp_path / "tenants.json"
    path.write_text("{}")
    monkeypatch.setenv("LANDLINE_TENANTS_FILE", str(path))
    monkeypatch.setattr(cli, "_running", lambda home: None)
    config.settings.cache_clear()
    config.tenants.cache_clear()
    yield path
    config.settings.cache_clear()
    config.tenants.cache_clear()


@pytest.mark.parametrize("args", [["stats", "-t", "nosuch"], ["tick", "-t", "nosuch"], ["wait", "-t", "nosuch"]])
def test_an_unknown_tenant_is_one_line_naming_the_fix(registry: Path, args: list[str]) -> None:
    # WHEN a command names a tenant that does not exist (row 22, row 49)
    result = runner.invoke(app, args)
    # THEN the setup error is one line with its fix, exit code 1
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"landline {args[0]}: unknown tenant 'nosuch'. Fix: create it with `landline tenant add nosuch --region R`"
    )


def test_a_bug_is_one_line_unless_debug(registry: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a command that hits a bug (not an error the product names)
    def broken(_tenant: str) -> None:
        raise TypeError("unsupported operand")

    monkeypatch.setattr("infra.local.stats.tenant_stats", broken)
    # THEN it is one line that says how to see more ...
    result = runner.invoke(app, ["stats"])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "landline stats: TypeError: unsupported operand (a bug? run again with --debug for the traceback)"
    )
    # ... and --debug lets the traceback through
    debug = runner.invoke(app, ["--debug", "stats"])
    assert isinstance(debug.exception, TypeError)


def test_a_bigquery_error_is_its_message_without_the_request_dump() -> None:
    from google.api_core import exceptions as gexc

    from infra.local.cli_support import one_line

    exc = gexc.BadRequest(
        'Syntax error: Unexpected identifier "selec" at [1:1]\n\nLocation: US\nJob ID: 7c1f',
        errors=[{"message": 'Syntax error: Unexpected identifier "selec" at [1:1]'}],
    )
    assert one_line(exc) == 'Syntax error: Unexpected identifier "selec" at [1:1]'
    missing = gexc.NotFound("Not found: Table landline-local:landline_uxa.nosuchtable was not found in location US")
    assert one_line(missing) == "Not found: Table landline-local:landline_uxa.nosuchtable was not found"


# -- conventions ------------------------------------------------------------------------------------------------------
def test_version_short_help_and_completion() -> None:
    from importlib.metadata import version

    assert runner.invoke(app, ["--version"]).stdout.strip() == f"landline {version('landline')}"
    root_help = runner.invoke(app, ["-h"])
    assert root_help.exit_code == 0 and "--install-completion" in root_help.stdout
    for path, command in leaf_commands():
        result = runner.invoke(app, [*path.split(), "-h"])
        assert result.exit_code == 0, path
        assert command.help, f"{path} has no description"
        assert "``" not in result.stdout, f"{path}: markup in its help"
        undocumented = [p.opts[0] for p in command.params if p.param_type_name == "option" and not p.help]
        assert undocumented == [], f"{path}: options without help"


PRINTS_NOTHING_BUT_A_LINE = {"down", "logs", "demo", "tenant remove"}  # no data to print as JSON


def test_every_command_that_prints_data_takes_json() -> None:
    missing = [p for p, c in leaf_commands() if p not in PRINTS_NOTHING_BUT_A_LINE and "--json" not in long_options(c)]
    assert missing == []


# -- the README ---------------------------------------------------------------------------------------------------------
def readme_cli_block() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index("### The CLI") :]
    return section.split("```")[1]


def test_the_readme_cli_section_matches_the_commands() -> None:
    # GIVEN the README's usage block: each command starts a line `landline <command> ...`, continued by indented lines
    documented: dict[str, set[str]] = {}
    current = ""
    for line in readme_cli_block().splitlines():
        usage = line.split("  #", 1)[0]
        if usage.startswith("landline "):
            words = usage.split()[1:]
            current = " ".join(words[:2] if words[0] in ("tenant", "audience", "campaign", "report") else words[:1])
            documented.setdefault(current, set())
        if current:
            documented[current] |= set(re.findall(r"--[a-z][a-z-]*", usage))
    # THEN it names exactly the commands the CLI has, and every option of each
    commands = dict(leaf_commands())
    assert sorted(documented) == sorted(commands)
    gaps = {path: sorted(long_options(c) - documented[path]) for path, c in commands.items()}
    assert {p: g for p, g in gaps.items() if g} == {}
    unknown = {path: sorted(documented[path] - long_options(c)) for path, c in commands.items()}
    assert {p: u for p, u in unknown.items() if u} == {}


def test_the_readme_lists_every_table_and_view() -> None:
    from infra.local.operator_query import VIEW_DESCRIPTIONS, catalog
    from shared.warehouse.schema import TABLES, VIEWS

    section = (REPO / "README.md").read_text().split("### The CLI")[1]
    rows = dict(re.findall(r"^\| (\w+) \| (table|view) \|", section, re.M))
    assert rows == {**{t.name: "table" for t in TABLES}, **dict.fromkeys(VIEWS, "view")}
    assert set(VIEW_DESCRIPTIONS) == set(VIEWS)
    assert all(item["description"] for item in catalog())


def test_a_bucket_another_tenant_has_is_refused_before_anything_is_created(registry: Path) -> None:
    # GIVEN a registered tenant
    registry.write_text(json.dumps({"acme": {"name": "acme", "region": "europe-west1", "bucket": "b-acme",
                                             "dataset": "landline_acme"}}))  # fmt: skip
    before = registry.read_text()
    # WHEN another tenant is added with its bucket (the stack is never touched: `_running` gives no stack)
    result = runner.invoke(app, ["tenant", "add", "globex", "--region", "europe-west1", "--bucket", "b-acme"])
    # THEN it is refused in one line, and the registry is as it was
    assert result.exit_code == 1
    line = result.stderr.strip()
    assert line.startswith("landline tenant add: tenant 'globex' shares bucket 'b-acme")  # or its claims bucket
    assert line.endswith("with tenant acme: give it its own (--bucket, --dataset)") and "\n" not in line
    assert registry.read_text() == before

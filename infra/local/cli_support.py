"""How `landline` talks to a person: one-line errors with a non-zero exit, JSON on request, tables, progress.

Every command's failure goes through ``CliGroup.invoke``: an error the product names (a ``SetupError`` with its fix,
a refused value, a BigQuery error) becomes one line on stderr and exit code 1; only ``--debug`` shows a traceback.
Usage mistakes stay click's (exit code 2).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from typer.core import TyperGroup

ERROR_EXIT = 1
USAGE_EXIT = 2


class CliError(Exception):
    """A refusal the CLI itself makes: ``message`` says what is wrong and what to do instead."""

    def __init__(self, message: str, code: int = ERROR_EXIT) -> None:
        super().__init__(message)
        self.code = code


def fail(message: str, code: int = ERROR_EXIT) -> NoReturn:
    raise CliError(message, code)


def warn(message: str) -> None:
    typer.echo(f"warning: {message}", err=True)


def echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


# Noise the Google clients add to an error: the request URL, the job's location and id, the emulator's host.
_GOOGLE_NOISE = (
    re.compile(r"^\d{3} (GET|POST|PUT|PATCH|DELETE) \S+: "),
    re.compile(r"\s*Location: \S+\s*Job ID: \S+.*$", re.S),
    re.compile(r" in location [A-Za-z0-9-]+"),
)


def one_line(exc: BaseException) -> str:
    """The error as one line a person can act on (no traceback, no request dump, no documentation URL)."""
    from google.api_core import exceptions as gexc
    from pydantic import ValidationError

    from shared.config import validation_message

    if isinstance(exc, ValidationError):
        text = validation_message(exc)
    elif isinstance(exc, gexc.GoogleAPICallError):
        errors = getattr(exc, "errors", None) or []
        first = errors[0] if errors and isinstance(errors[0], dict) else {}
        text = str(first.get("message") or exc.message or exc)
        for noise in _GOOGLE_NOISE:
            text = noise.sub("", text)
    elif isinstance(exc, (OSError, TimeoutError)) and type(exc).__module__.startswith("httpx"):
        text = f"cannot reach the local stack ({exc}); check it with `landline status`, start it with `landline up`"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def _is_bug(exc: BaseException) -> bool:
    """Not an error the product names: a bug, whose traceback matters (shown with --debug)."""
    import httpx
    from google.api_core import exceptions as gexc
    from pydantic import ValidationError

    from shared.errors import LandlineError

    named = (CliError, LandlineError, ValidationError, gexc.GoogleAPIError, httpx.HTTPError, ValueError, LookupError)
    return not isinstance(exc, named)


class CliGroup(TyperGroup):
    """The root command: turns every error a command raises into one line and an exit code."""

    def invoke(self, ctx: Any) -> Any:  # typer.Context
        path = self._command_path(ctx)
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):  # exits, and usage errors (exit code 2)
            raise
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        except Exception as exc:
            if (ctx.obj or {}).get("debug"):
                raise
            bug = _is_bug(exc)
            what = f"{type(exc).__name__}: " if bug else ""
            hint = " (a bug? run again with --debug for the traceback)" if bug else ""
            typer.echo(f"landline {path}: {what}{one_line(exc)}{hint}", err=True)
            raise typer.Exit(exc.code if isinstance(exc, CliError) else ERROR_EXIT) from None

    def _command_path(self, ctx: Any) -> str:
        """``tenant add`` for `landline tenant add x ...`: what the error line names."""
        names: list[str] = []
        command: Any = self
        for arg in [*getattr(ctx, "_protected_args", []), *ctx.args]:
            if arg not in getattr(command, "commands", {}):
                break
            names.append(arg)
            command = command.commands[arg]
        return " ".join(names) or "error"


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Rows as aligned plain-text columns (a header, then one line per row)."""
    cells = [[("-" if row.get(c) is None else str(row.get(c))) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


@contextmanager
def progress(description: str) -> Iterator[Callable[..., None]]:
    """A progress bar on stderr while a long job runs (none when stderr is not a terminal); yields
    ``advance(done, total=None, description=None)``."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    columns = (
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
    )
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task(description, total=None)

        def advance(done: int, total: int | None = None, description: str | None = None) -> None:
            if total is not None:
                bar.update(task, total=total)
            if description is not None:
                bar.update(task, description=description)
            bar.advance(task, done)

        yield advance


@contextmanager
def status_line(description: str) -> Iterator[Callable[[str], None]]:
    """A one-line live status on stderr (a terminal only); yields ``update(text)``."""
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal:
        yield lambda _text: None
        return
    with console.status(description) as live:
        yield lambda text: live.update(f"{description}: {text}")


def stderr_is_terminal() -> bool:
    return sys.stderr.isatty()

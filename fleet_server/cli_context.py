"""Shared plumbing of the CLI commands that talk to a fleet server.

- Where the server is and which token to use, resolved in ONE place:
  ``--server``/``--token`` flags, then ``EDGEFLEET_SERVER``/``EDGEFLEET_TOKEN``, then the config file
  written by ``edgefleet login`` (``save_config``), then the default URL.
- Output: rich tables for people, ``--json`` for scripts.
- Errors: one ``error:`` line and one ``hint:`` line on stderr, and an exit code scripts can rely on:
  0 ok, 1 the server said no, 2 usage (bad flags, missing token), 3 the server cannot be reached.

Sub-apps use it like this::

    @device_app.command("list")
    def device_list(server: ServerOption = None, token: TokenOption = None, as_json: JsonOption = False):
        with cli_errors(), connect(server, token) as client:
            emit(client.devices(), as_json, render_devices)
"""

import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from agent.protocol.errors import EdgeFleetError
from agent.storage import atomic_write_bytes
from fleet_server.client import FleetClient, FleetClientError, FleetServerUnreachableError
from fleet_server.errors import FleetServerError

DEFAULT_SERVER = "http://127.0.0.1:8000"
CONFIG_ENV = "EDGEFLEET_CONFIG"  # overrides the config file location (tests, several fleets)
EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
DEFAULT_HINT = "run 'edgefleet --help' for usage"

ServerOption = Annotated[str | None, typer.Option(
    "--server", envvar="EDGEFLEET_SERVER", show_default=False,
    help=f"Fleet server URL [default: from 'edgefleet login', else {DEFAULT_SERVER}]")]
TokenOption = Annotated[str | None, typer.Option(
    "--token", envvar="EDGEFLEET_TOKEN", show_default=False,
    help="API token [default: from 'edgefleet login']")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts) instead of a table")]


class CliUsageError(FleetServerError):
    """The command line lacks something the command needs (exit code 2)."""


class CliConfigError(CliUsageError):
    """The CLI config file cannot be read or written."""

    hint = f"fix or delete the file, or point {CONFIG_ENV} elsewhere; 'edgefleet login' rewrites it"


@dataclass(frozen=True)
class CliConfig:
    server: str | None = None
    token: str | None = None


def config_path() -> Path:
    """``$EDGEFLEET_CONFIG``, else ``$XDG_CONFIG_HOME/edgefleet/cli.json`` (``~/.config`` by default)."""
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "edgefleet" / "cli.json"


def load_config(path: Path | None = None) -> CliConfig:
    path = path or config_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return CliConfig()
    except (OSError, ValueError) as exc:
        raise CliConfigError(f"cannot read the CLI config {path}: {exc}") from None
    if not isinstance(data, dict):
        raise CliConfigError(f"the CLI config {path} is not a JSON object")
    server, token = data.get("server"), data.get("token")
    return CliConfig(server if isinstance(server, str) else None, token if isinstance(token, str) else None)


def save_config(server: str, token: str, path: Path | None = None) -> Path:
    """Store the server URL and token (file mode 0600, written atomically); what ``edgefleet login`` calls."""
    path = path or config_path()
    body = json.dumps({"server": server, "token": token}, indent=2).encode("utf-8") + b"\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write_bytes(path, body, mode=0o600)
    except OSError as exc:
        raise CliConfigError(f"cannot write the CLI config {path}: {exc}") from None
    return path


@dataclass(frozen=True)
class Connection:
    server: str
    token: str


def resolve_connection(server: str | None, token: str | None) -> Connection:
    """Flags and environment (already merged by typer) win over the config file, then the default."""
    config = load_config() if server is None or token is None else CliConfig()
    url = (server or config.server or DEFAULT_SERVER).strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise CliUsageError(f"invalid server URL {url!r}", hint="use http://HOST:PORT or https://HOST")
    token = token or config.token
    if not token:
        raise CliUsageError("no API token given",
                            hint="pass --token, set EDGEFLEET_TOKEN, or run 'edgefleet login'")
    return Connection(url, token)


def connect(server: str | None, token: str | None) -> FleetClient:
    connection = resolve_connection(server, token)
    return FleetClient(connection.server, connection.token)


def exit_code_for(exc: BaseException) -> int:
    if isinstance(exc, FleetServerUnreachableError):
        return EXIT_UNREACHABLE
    if isinstance(exc, CliUsageError):
        return EXIT_USAGE
    return EXIT_REFUSED


def hint_for(exc: EdgeFleetError) -> str:
    if isinstance(exc, FleetServerUnreachableError):
        return "is the server running? check --server / EDGEFLEET_SERVER ('edgefleet server' starts one)"
    if isinstance(exc, FleetClientError) and exc.status_code is not None:
        by_status = {
            401: "check the token: --token, EDGEFLEET_TOKEN or 'edgefleet login'",
            403: "this needs a token with a higher role (operator or admin)",
            404: "check the name or id; the list commands show what exists",
            409: "the server's current state does not allow this; 'show' the resource to see why",
            413: "the file is larger than the server accepts (EDGEFLEET_MAX_UPLOAD_BYTES)",
            422: "the server rejected the input; see the message above",
        }
        if exc.status_code in by_status:
            return by_status[exc.status_code]
    return getattr(exc, "hint", "") or DEFAULT_HINT


def report_error(exc: EdgeFleetError) -> int:
    """Print ``error: ...`` and ``hint: ...`` on stderr; return the exit code."""
    typer.echo(f"error: {exc}", err=True)
    typer.echo(f"hint: {hint_for(exc)}", err=True)
    return exit_code_for(exc)


@contextmanager
def cli_errors() -> Iterator[None]:
    """Turn EdgeFleet errors raised inside into the one-line report and the exit code."""
    try:
        yield
    except EdgeFleetError as exc:
        raise typer.Exit(report_error(exc)) from None


# -- output ------------------------------------------------------------------------------------------


def console() -> Console:
    return Console(highlight=False, soft_wrap=False)


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def emit(data: Any, as_json: bool, render: Callable[[Any], None]) -> None:
    """``--json``: the API's JSON unchanged; otherwise ``render(data)`` for people."""
    if as_json:
        print_json(data)
    else:
        render(data)


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    grid = Table(title=title, title_justify="left", header_style="bold", box=None, pad_edge=False)
    for column in columns:
        grid.add_column(column, overflow="fold")
    for row in rows:
        grid.add_row(*(cell_text(cell) for cell in row))
    console().print(grid)


def fields(pairs: Sequence[tuple[str, Any]]) -> None:
    """A two-column ``key  value`` block (the ``show`` commands)."""
    grid = Table(box=None, show_header=False, pad_edge=False)
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for key, value in pairs:
        grid.add_row(key, cell_text(value))
    console().print(grid)


def cell_text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(cell_text(item) for item in value) or "-"
    if isinstance(value, str) and len(value) >= 19 and value[4:5] == "-" and value[10:11] == "T":
        return short_time(value)
    return str(value)


def short_time(value: str) -> str:
    """An API timestamp as ``YYYY-MM-DD HH:MM:SS`` (UTC)."""
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return value

"""``edgefleet deployment create|list|show``: send a release to devices at once
(no phases; ``edgefleet rollout`` stages it) and follow it with a progress bar."""

import time
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fleet_server.cli_context import (
    CliUsageError,
    JsonOption,
    ServerOption,
    TokenOption,
    cli_errors,
    connect,
    console,
    emit,
    fields,
    print_json,
    table,
)
from fleet_server.client import FINAL_DEVICE_STATES, FleetClient
from fleet_server.errors import FleetServerError

deployment_app = typer.Typer(no_args_is_help=True, help="Send a release to devices at once (no phases) and follow it.")
EXIT_NOT_ALL_SUCCEEDED = 1


class DeploymentWaitTimeoutError(FleetServerError):
    """``--wait`` gave up before every device reached a final state."""

    hint = "'edgefleet deployment show ID' shows which devices lag (offline devices stay 'pending')"


def parse_release(text: str) -> tuple[str, int]:
    name, _, version = text.rpartition(":")
    if not name or not version.isdigit():
        raise CliUsageError(f"release {text!r} is not NAME:VERSION", hint="e.g. digits:3 ('edgefleet release list')")
    return name, int(version)


def _states(deployment: dict[str, Any]) -> str:
    return ", ".join(f"{state} {count}" for state, count in sorted(deployment["states"].items()))


def _render_list(deployments: list[dict[str, Any]]) -> None:
    table(None, ("ID", "RELEASE", "ACTION", "DEVICES", "CREATED"),
          [(d["id"], f"{d['release']['name']} v{d['release']['version']}", d["action"], _states(d), d["created_at"])
           for d in deployments])


def _render_deployment(deployment: dict[str, Any]) -> None:
    fields([("deployment", deployment["id"]),
            ("release", f"{deployment['release']['name']} v{deployment['release']['version']}"),
            ("action", deployment["action"]), ("created", deployment["created_at"]),
            ("devices", _states(deployment))])
    table("devices", ("DEVICE", "SEQ", "STATE", "REASON", "REPORTED STATES"),
          [(t["device_id"], t["sequence"], t["state"], t["reason"], " → ".join(e["state"] for e in t["history"]))
           for t in deployment["targets"]])


def follow(client: FleetClient, deployment_id: int, timeout: float, interval: float = 0.5) -> dict[str, Any]:
    """A progress bar of devices in a final state until all are (or ``timeout``); the last deployment view."""
    deadline = time.monotonic() + timeout
    with Progress(TextColumn("[bold]deployment {task.fields[id]}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[states]}"), TimeElapsedColumn(), console=console(), transient=False) as bar:
        deployment = client.deployment(deployment_id)
        task = bar.add_task("devices", total=len(deployment["targets"]), id=deployment_id, states="")
        while True:
            done = sum(1 for target in deployment["targets"] if target["state"] in FINAL_DEVICE_STATES)
            bar.update(task, completed=done, states=_states(deployment))
            if done == len(deployment["targets"]):
                return deployment
            if time.monotonic() > deadline:
                raise DeploymentWaitTimeoutError(f"deployment {deployment_id} not finished after {timeout:.0f}s: "
                                                 f"{_states(deployment)}")
            time.sleep(interval)
            deployment = client.deployment(deployment_id)


@deployment_app.command("create")
def deployment_create(
    release: Annotated[str, typer.Argument(help="NAME:VERSION of a signed release", show_default=False)],
    tag: Annotated[list[str] | None, typer.Option("--tag", "-t", help="Devices with this tag (repeatable)")] = None,
    device: Annotated[list[str] | None, typer.Option("--device", "-d", help="This device (repeatable)")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow it with a progress bar until every device is "
                                       "final; exit 1 unless all succeeded")] = False,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds --wait waits")] = 600.0,
    server: ServerOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Sign one directive per selected device and publish them all now."""
    with cli_errors():
        name, version = parse_release(release)
        if not tag and not device:
            raise CliUsageError("no devices selected", hint="give --tag TAG and/or --device ID")
        with connect(server, token) as client:
            deployment = client.deploy(name, version, device_ids=device or [], tags=tag or [])
            if wait:
                deployment = follow(client, deployment["id"], timeout)
    if as_json:
        print_json(deployment)
    elif not wait:
        typer.echo(f"deployment {deployment['id']}: {name} v{version} to {len(deployment['targets'])} device(s)")
    else:
        _render_deployment(deployment)
    if wait and any(target["state"] != "succeeded" for target in deployment["targets"]):
        raise typer.Exit(EXIT_NOT_ALL_SUCCEEDED)


@deployment_app.command("list")
def deployment_list(
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Deployments per page, newest first")] = 20,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many")] = 0,
    server: ServerOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Deployments, newest first, with device counts per state."""
    with cli_errors(), connect(server, token) as client:
        deployments = client.deployments(limit, offset)
    emit(deployments, as_json, _render_list)


@deployment_app.command("show")
def deployment_show(
    deployment_id: Annotated[int, typer.Argument(help="Deployment id", show_default=False)],
    server: ServerOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """One deployment: every device's state and the states it reported."""
    with cli_errors(), connect(server, token) as client:
        deployment = client.deployment(deployment_id)
    emit(deployment, as_json, _render_deployment)

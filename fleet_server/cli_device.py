"""``edgefleet device list|show|revoke|tag``: the enrolled fleet from the terminal."""

from typing import Annotated, Any

import typer

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
    short_time,
    table,
)

device_app = typer.Typer(no_args_is_help=True, help="List, inspect, tag and revoke enrolled devices.")

DeviceArg = Annotated[str, typer.Argument(help="Device id", show_default=False)]


def model_label(model: dict[str, Any] | None) -> str | None:
    return None if not model else f"{model['name']} v{model['version']}"


def _render_list(page: dict[str, Any]) -> None:
    rows = [
        (d["device_id"], "online" if d["online"] else "offline", model_label(d["current_model"]),
         d["deployment_state"], d["tags"], d["arch"], d["last_seen"])
        for d in page["devices"]
    ]
    table(None, ("DEVICE", "PRESENCE", "MODEL", "STATE", "TAGS", "ARCH", "LAST SEEN"), rows)
    shown, total, offset = len(page["devices"]), page["total"], page["offset"]
    if shown < total:
        more = f"; next page: --offset {offset + shown}" if offset + shown < total else ""
        console().print(f"[dim]{offset + 1}-{offset + shown} of {total} devices{more}[/dim]")
    elif not total:
        console().print("[dim]no devices match[/dim]")


@device_app.command("list")
def device_list(
    tag: Annotated[str | None, typer.Option(help="Only devices with this tag")] = None,
    online: Annotated[bool | None, typer.Option("--online/--offline", help="Only online / offline devices",
                                                show_default=False)] = None,
    state: Annotated[str | None, typer.Option(help="Latest deployment state (e.g. succeeded, failed; "
                                              "'none': never deployed)")] = None,
    model: Annotated[str | None, typer.Option(help="Current model: NAME or NAME:VERSION")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Devices per page")] = 100,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many devices")] = 0,
    server: ServerOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """List devices, ordered by id, filtered and one page at a time."""
    with cli_errors(), connect(server, token) as client:
        devices, total = client.device_page(tag=tag, online=online, state=state, model=model, limit=limit,
                                            offset=offset)
    emit({"devices": devices, "total": total, "limit": limit, "offset": offset}, as_json, _render_list)


def _render_device(device: dict[str, Any]) -> None:
    latest = device.get("latest_deployment")
    fields([
        ("device", device["device_id"]),
        ("presence", ("online" if device["online"] else "offline") + (
            f", last seen {short_time(device['last_seen'])}" if device["last_seen"] else "")),
        ("model", model_label(device["current_model"])),
        ("state", device["deployment_state"]),
        ("tags", device["tags"]),
        ("hardware", f"{device['arch']}, {device['ram_mb']} MB RAM, runtimes: {', '.join(device['runtimes'])}"),
        ("agent", device["agent_version"] or None),
        ("enrolled", device["enrolled_at"]),
        ("sequence", device["directive_sequence"]),
        ("latest deployment", None if not latest else
         f"#{latest['deployment_id']} {latest['release_name']} v{latest['release_version']}: {latest['state']}"
         + (f" ({latest['reason']})" if latest.get("reason") else "")),
    ])
    if device["models"]:
        table("installed models", ("NAME", "VERSION", "VARIANT", "SHA256"),
              [(m["name"], m["version"], m["variant"], m["sha256"][:16]) for m in device["models"]])


@device_app.command("show")
def device_show(device_id: DeviceArg, server: ServerOption = None, token: TokenOption = None,
                as_json: JsonOption = False) -> None:
    """Inventory, presence, installed models and the latest deployment of one device."""
    with cli_errors(), connect(server, token) as client:
        device = client.device(device_id)
    emit(device, as_json, _render_device)


@device_app.command("tag")
def device_tag(
    device_id: DeviceArg,
    add: Annotated[list[str] | None, typer.Option("--add", "-a", help="Tag to add (repeatable)")] = None,
    remove: Annotated[list[str] | None, typer.Option("--remove", "-r", help="Tag to remove (repeatable)")] = None,
    server: ServerOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Add or remove tags of a device (deployments and rollouts select devices by tag)."""
    with cli_errors():
        if not add and not remove:
            raise CliUsageError("nothing to change", hint="give --add TAG and/or --remove TAG")
        with connect(server, token) as client:
            device = client.tag_device(device_id, add or [], remove or [])
    if as_json:
        print_json(device)
    else:
        typer.echo(f"{device['device_id']}: tags {', '.join(device['tags']) or '(none)'}")


@device_app.command("revoke")
def device_revoke(
    device_id: DeviceArg,
    reason: Annotated[str, typer.Option(help="Why (kept in the audit trail)")] = "",
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation")] = False,
    server: ServerOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Revoke a device: its credential and certificates stop working; it gets no more directives."""
    with cli_errors():
        if not yes and not typer.confirm(f"Revoke device {device_id}? It must be re-provisioned to come back"):
            raise typer.Exit(1)
        with connect(server, token) as client:
            revocation = client.revoke_device(device_id, reason)
    if as_json:
        print_json(revocation)
    else:
        typer.echo(f"revoked {device_id}" + (f" ({reason})" if reason else ""))

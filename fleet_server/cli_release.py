"""``edgefleet release list|show``: signed releases (``release sign`` registers here too)."""

from typing import Annotated, Any

import typer

from fleet_server.cli_context import JsonOption, ServerOption, TokenOption, cli_errors, connect, emit, fields, table

release_app = typer.Typer(no_args_is_help=True, help="Signed model releases.")


def _render_list(releases: list[dict[str, Any]]) -> None:
    rows = [
        (r["name"], r["version"], r["sha256"][:16], ", ".join(v["name"] for v in r["variants"]), r["created_at"],
         r["expires_at"])
        for r in releases
    ]
    table(None, ("NAME", "VERSION", "SHA256", "VARIANTS", "SIGNED", "EXPIRES"), rows)


@release_app.command("list")
def release_list(
    model: Annotated[str | None, typer.Option(help="Only releases of this model")] = None,
    server: ServerOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """List signed releases by model name and version."""
    with cli_errors(), connect(server, token) as client:
        releases = client.releases(model)
    emit(releases, as_json, _render_list)


def _render_release(release: dict[str, Any]) -> None:
    signed = release["envelope"].get("signed", {})
    signatures = release["envelope"].get("signatures", [])
    fields([
        ("release", f"{release['name']} v{release['version']}"),
        ("sha256", release["sha256"]),
        ("signed", release["created_at"]),
        ("expires", release["expires_at"]),
        ("signatures", [s.get("keyid", "?")[:16] for s in signatures]),
        ("inputs", [f"{t['name']} {t['dtype']}{t['shape']}" for t in signed.get("inputs", [])]),
        ("outputs", [f"{t['name']} {t['dtype']}{t['shape']}" for t in signed.get("outputs", [])]),
    ])
    table("variants", ("VARIANT", "RUNTIME", "PRECISION", "BYTES", "ARCH", "MIN RAM MB", "SHA256"),
          [(v["name"], v["runtime"], v["precision"], v["length"], v["arch"] or "any", v["min_ram_mb"],
            v["sha256"][:16]) for v in release["variants"]])


@release_app.command("show")
def release_show(
    name: Annotated[str, typer.Argument(help="Model name", show_default=False)],
    version: Annotated[int, typer.Argument(help="Version", min=1, show_default=False)],
    server: ServerOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """A release: variants, schema, signatures (--json: with the signed envelope as stored)."""
    with cli_errors(), connect(server, token) as client:
        release = client.release(name, version)
    emit(release, as_json, _render_release)

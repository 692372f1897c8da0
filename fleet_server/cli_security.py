"""``edgefleet login``, ``edgefleet token ...``, ``edgefleet device token ...`` and
``edgefleet audit ...``: who may use the server, and what was done with it."""

import json
import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from fleet_server.cli_context import (
    DEFAULT_SERVER,
    CliUsageError,
    JsonOption,
    ServerOption,
    TokenOption,
    cli_errors,
    connect,
    emit,
    load_config,
    print_json,
    save_config,
    table,
)
from fleet_server.client import FleetClient
from fleet_server.services.audit_chain import ChainEntry, verify_chain

token_app = typer.Typer(no_args_is_help=True, help="Operator API tokens with roles admin, operator, viewer.")
bootstrap_app = typer.Typer(no_args_is_help=True, help="Single-use bootstrap tokens that enroll devices.")
audit_app = typer.Typer(no_args_is_help=True, help="The hash-chained audit trail: list, verify, export.")

DURATION = re.compile(r"^(\d+)([smhd]?)$")
UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """``90``, ``90s``, ``15m``, ``24h``, ``7d`` -> seconds."""
    match = DURATION.match(text.strip().lower())
    if not match:
        raise CliUsageError(f"invalid duration {text!r}", hint="use a number with s, m, h or d, e.g. 24h")
    return int(match.group(1)) * UNIT_SECONDS[match.group(2)]


def login(
    server: Annotated[str | None, typer.Option("--server", envvar="EDGEFLEET_SERVER", show_default=False,
                                               help=f"Fleet server URL [default: {DEFAULT_SERVER}]")] = None,
    token: Annotated[str | None, typer.Option("--token", envvar="EDGEFLEET_TOKEN", show_default=False,
                                              help="API token (asked for when not given)")] = None,
) -> None:
    """Check a token against the server and store both for later commands (file mode 0600)."""
    with cli_errors():
        url = (server or load_config().server or DEFAULT_SERVER).strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise CliUsageError(f"invalid server URL {url!r}", hint="use http://HOST:PORT or https://HOST")
        secret = token or typer.prompt("API token", hide_input=True).strip()
        with FleetClient(url, secret) as client:
            who = client.whoami()
        if who.get("role") is None:
            raise CliUsageError("that is a device credential, not an operator token",
                                hint="create an operator token with 'edgefleet token create NAME --role operator'")
        path = save_config(url, secret)
    typer.echo(f"logged in to {url} as {who['actor']} (role {who['role']}); saved to {path}")


def _render_tokens(tokens: list[dict[str, Any]]) -> None:
    table(None, ("ID", "NAME", "ROLE", "ACTIVE", "CREATED", "BY", "EXPIRES", "REVOKED"),
          [(t["id"], t["name"], t["role"], t["active"], t["created_at"], t["created_by"], t["expires_at"],
            t["revoked_at"]) for t in tokens])


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="Who or what holds the token", show_default=False)],
    role: Annotated[str, typer.Option(help="viewer, operator or admin")] = "operator",
    expires_days: Annotated[int, typer.Option(help="Days until it expires", min=1)] = 90,
    no_expiry: Annotated[bool, typer.Option("--no-expiry", help="Never expires (revoke it when done)")] = False,
    server: ServerOption = None, token: TokenOption = None, as_json: JsonOption = False,
) -> None:
    """Issue an API token (admin only). The secret is printed once; the server keeps only its hash."""
    with cli_errors(), connect(server, token) as client:
        issued = client.create_token(name, role, None if no_expiry else expires_days)
    if as_json:
        print_json(issued)
    else:
        typer.echo(f"token {issued['id']} for {issued['name']} (role {issued['role']}, expires "
                    f"{issued['expires_at'] or 'never'}):")
        typer.echo(issued["token"])


@token_app.command("list")
def token_list(
    include_inactive: Annotated[bool, typer.Option("--all", help="Also expired and revoked tokens")] = False,
    server: ServerOption = None, token: TokenOption = None, as_json: JsonOption = False,
) -> None:
    """List API tokens (never their secrets)."""
    with cli_errors(), connect(server, token) as client:
        emit(client.tokens(include_inactive), as_json, _render_tokens)


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[int, typer.Argument(help="Token id (see 'edgefleet token list')", show_default=False)],
    server: ServerOption = None, token: TokenOption = None, as_json: JsonOption = False,
) -> None:
    """Revoke an API token: refused from the next request on."""
    with cli_errors(), connect(server, token) as client:
        revoked = client.revoke_token(token_id)
    emit(revoked, as_json, lambda t: typer.echo(f"revoked token {t['id']} ({t['name']})"))


@bootstrap_app.command("create")
def bootstrap_create(
    device_id: Annotated[str | None, typer.Option(help="Only this device may enroll with it")] = None,
    ttl: Annotated[str, typer.Option(help="Time until the unused token expires (e.g. 30m, 24h, 7d)")] = "24h",
    server: ServerOption = None, token: TokenOption = None, as_json: JsonOption = False,
) -> None:
    """Issue a single-use bootstrap token: 'edgefleet-agent enroll --token T' on the device."""
    with cli_errors():
        seconds = parse_duration(ttl)
        with connect(server, token) as client:
            issued = client.create_bootstrap_token(device_id, seconds)
    if as_json:
        print_json(issued)
    else:
        scope = f"device {issued['device_id']}" if issued["device_id"] else "any one device"
        typer.echo(f"bootstrap token {issued['id']} for {scope}, single use, expires {issued['expires_at']}:")
        typer.echo(issued["token"])


@bootstrap_app.command("list")
def bootstrap_list(
    include_inactive: Annotated[bool, typer.Option("--all", help="Also used and expired tokens")] = False,
    server: ServerOption = None, token: TokenOption = None, as_json: JsonOption = False,
) -> None:
    """List bootstrap tokens (never their secrets)."""
    with cli_errors(), connect(server, token) as client:
        rows = client.bootstrap_tokens(include_inactive)
    emit(rows, as_json, lambda items: table(None, ("ID", "DEVICE", "CREATED", "BY", "EXPIRES", "USED", "USED BY"), [
        (t["id"], t["device_id"] or "any", t["created_at"], t["created_by"], t["expires_at"], t["used_at"],
         t["used_by"]) for t in items]))


@bootstrap_app.command("revoke")
def bootstrap_revoke(
    token_id: Annotated[int, typer.Argument(help="Bootstrap token id", show_default=False)],
    server: ServerOption = None, token: TokenOption = None, as_json: JsonOption = False,
) -> None:
    """Make an unused bootstrap token unusable."""
    with cli_errors(), connect(server, token) as client:
        revoked = client.revoke_bootstrap_token(token_id)
    emit(revoked, as_json, lambda t: typer.echo(f"bootstrap token {t['id']} can no longer enroll a device"))


@audit_app.command("list")
def audit_list(
    after: Annotated[int, typer.Option(help="Entries after this sequence number", min=0)] = 0,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    action: Annotated[str | None, typer.Option(help="Only this action, e.g. device.revoked")] = None,
    server: ServerOption = None, token: TokenOption = None, as_json: JsonOption = False,
) -> None:
    """Audit entries in chain order."""
    with cli_errors(), connect(server, token) as client:
        entries = client.audit_entries(after, limit, action)
    emit(entries, as_json, lambda items: table(None, ("SEQ", "TIME", "ACTOR", "ACTION", "DETAILS"), [
        (e["seq"], e["created_at"], e["actor"], e["action"], json.dumps(e["details"], sort_keys=True))
        for e in items]))


def _verify_file(path: Path, expect_head: str | None) -> None:
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        entries = [ChainEntry.from_export(json.loads(line)) for line in lines]
    except (OSError, ValueError) as exc:
        raise CliUsageError(f"cannot read the audit export {path}: {exc}",
                            hint="give a file written by 'edgefleet audit export'") from None
    start = (entries[0].seq - 1, entries[0].prev_hash) if entries and entries[0].seq > 1 else (0, "0" * 64)
    verdict = verify_chain(entries, start=start)
    _report(verdict.ok, verdict.entries, verdict.last_seq, verdict.last_hash, verdict.problem, expect_head)


def _report(ok: bool, entries: int, seq: int, head_hash: str, problem: str | None, expect_head: str | None) -> None:
    if ok and expect_head is not None and expect_head != head_hash:
        ok, problem = False, f"the chain ends at {head_hash}, not at the expected head {expect_head}"
    if not ok:
        typer.echo(f"error: the audit trail is NOT intact: {problem}", err=True)
        typer.echo("hint: compare with an earlier export; the first broken entry is named above", err=True)
        raise typer.Exit(1)
    typer.echo(f"audit trail intact: {entries} entries, head {seq} {head_hash}")


@audit_app.command("verify")
def audit_verify(
    file: Annotated[Path | None, typer.Option("--file", help="Verify this export offline instead of the server",
                                              exists=True, dir_okay=False)] = None,
    expect_head: Annotated[str | None, typer.Option(help="The head hash you recorded earlier (detects a "
                                                         "rewritten tail)")] = None,
    server: ServerOption = None, token: TokenOption = None,
) -> None:
    """Recompute every entry's hash and link; exit code 1 names the first edited or missing entry."""
    with cli_errors():
        if file is not None:
            _verify_file(file, expect_head)
            return
        with connect(server, token) as client:
            result = client.audit_verify()
        _report(result["ok"], result["entries"], result["head_seq"], result["head_hash"], result["problem"],
                expect_head)


@audit_app.command("export")
def audit_export(
    out: Annotated[Path | None, typer.Option("--out", help="Write here (default: stdout)", dir_okay=False)] = None,
    after: Annotated[int, typer.Option(help="Entries after this sequence number", min=0)] = 0,
    server: ServerOption = None, token: TokenOption = None,
) -> None:
    """Write the audit trail as JSON lines (one entry per line, chain order)."""
    with cli_errors(), connect(server, token) as client:
        count = 0
        handle = open(out, "w", encoding="utf-8") if out is not None else sys.stdout  # noqa: SIM115
        try:
            for line in client.audit_export(after):
                if line:
                    handle.write(line + "\n")
                    count += 1
        finally:
            if out is not None:
                handle.close()
    if out is not None:
        typer.echo(f"wrote {count} audit entries to {out}")

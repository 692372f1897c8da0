"""The ``edgefleet`` operator CLI. Sub-commands register on ``app``; errors print as one line."""

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer

import fleet_server.cli_compress  # noqa: F401  (registers model push/compress/jobs/variants)
from agent.protocol.errors import EdgeFleetError
from agent.protocol.fields import format_time
from agent.protocol.keys import key_id
from agent.protocol.metadata import Role
from fleet_server import cli_security, cli_trust
from fleet_server.cli_agent import agent_app
from fleet_server.cli_deployment import deployment_app
from fleet_server.cli_device import device_app
from fleet_server.cli_model import model_app
from fleet_server.cli_release import release_app
from fleet_server.cli_rollout import rollout_app
from fleet_server.cli_telemetry import alerts_app, telemetry_app
from fleet_server.keyring import Keyring, init_keyring, load_keyring
from fleet_server.pki import CA_DIR, init_ca

app = typer.Typer(no_args_is_help=True, help="EdgeFleet: signed ML model rollouts to edge devices.")
keys_app = typer.Typer(no_args_is_help=True, help="Create and inspect the signing keys (root, release, rollout).")
app.add_typer(keys_app, name="keys")
app.add_typer(device_app, name="device")
app.add_typer(model_app, name="model")
app.add_typer(release_app, name="release")
app.add_typer(deployment_app, name="deployment")
app.add_typer(rollout_app, name="rollout")
app.add_typer(agent_app, name="agent")
app.add_typer(telemetry_app, name="telemetry")
app.add_typer(alerts_app, name="alerts")
app.add_typer(cli_security.token_app, name="token")
app.add_typer(cli_security.audit_app, name="audit")
device_app.add_typer(cli_security.bootstrap_app, name="token")
app.command("login")(cli_security.login)
app.command("broker-config")(cli_trust.broker_config)
keys_app.command("rotate-root")(cli_trust.keys_rotate_root)
keys_app.command("reload")(cli_trust.keys_reload)
release_app.command("request")(cli_trust.release_request)
release_app.command("sign")(cli_trust.release_sign)
release_app.command("submit")(cli_trust.release_submit)

DEFAULT_HINT = "run 'edgefleet --help' for usage"


@app.callback()
def configure(
    log_level: Annotated[str, typer.Option(envvar="EDGEFLEET_LOG_LEVEL", help="debug, info, warning or error")]
    = "info",
) -> None:
    level = logging.getLevelNamesMapping().get(log_level.upper())
    if level is None:
        raise typer.BadParameter(f"unknown log level {log_level!r}", param_hint="--log-level")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if level > logging.DEBUG:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per HTTP request only with --log-level debug


def _describe(keyring: Keyring) -> dict[str, Any]:
    here = {key_id(key) for key in keyring.root_keys} | {key_id(keyring.rollout_key)}
    if keyring.release_key is not None:
        here.add(key_id(keyring.release_key))
    root = keyring.root
    return {
        "directory": str(keyring.directory),
        "version": root.version,
        "expires": format_time(root.expires),
        "roles": {
            role.value: {
                "threshold": spec.threshold,
                "keys": [{"keyid": keyid, "private_key_here": keyid in here} for keyid in spec.keyids],
            }
            for role, spec in root.roles.items()
        },
    }


def _print_table(description: dict[str, Any]) -> None:
    typer.echo(f"keyring  {description['directory']}")
    typer.echo(f"root     version {description['version']}, expires {description['expires']}")
    typer.echo(f"{'role':<8} {'threshold':<10} {'key id':<64}  private key here")
    for role in Role:
        spec = description["roles"][role.value]
        for index, key in enumerate(spec["keys"]):
            label, threshold = (role.value, f"{spec['threshold']} of {len(spec['keys'])}") if index == 0 else ("", "")
            typer.echo(f"{label:<8} {threshold:<10} {key['keyid']:<64}  {'yes' if key['private_key_here'] else 'no'}")


@keys_app.command("init")
def keys_init(
    directory: Annotated[Path, typer.Argument(help="New (or empty) directory for the keys and root.json")],
    root_keys: Annotated[int, typer.Option(help="Number of root keys")] = 1,
    threshold: Annotated[int, typer.Option(help="Root keys needed to sign a new root")] = 1,
    expires_days: Annotated[int, typer.Option(help="Days until root.json expires")] = 365,
) -> None:
    """Generate root, release and rollout keys and a signed root.json (version 1)."""
    keyring = init_keyring(directory, root_keys=root_keys, threshold=threshold, expires_days=expires_days)
    init_ca(directory / CA_DIR)
    _print_table(_describe(keyring))
    typer.echo(
        "Devices trust root.json. Keep root-*.pem offline (and release.pem if releases are signed elsewhere); "
        "the server needs root.json and rollout.pem, and ca/ (the fleet CA for device certificates)."
    )


@keys_app.command("show")
def keys_show(
    directory: Annotated[Path, typer.Argument(help="Keyring directory")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")] = False,
) -> None:
    """Print the roles, key ids and thresholds of a keyring, and which private keys it holds."""
    description = _describe(load_keyring(directory))
    if as_json:
        typer.echo(json.dumps(description, indent=2))
    else:
        _print_table(description)


@app.command("server")
def server(
    host: Annotated[str, typer.Option(help="HTTP listen address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP listen port", min=1, max=65535)] = 8000,
    data_dir: Annotated[Path | None, typer.Option(help="Data directory (default: EDGEFLEET_DATA_DIR)")] = None,
) -> None:
    """Run the fleet server (REST API, MQTT bridge; embedded broker unless EDGEFLEET_MQTT_URL is set)."""
    from fleet_server.core.config import load_settings
    from fleet_server.server import run_server

    run_server(load_settings(data_dir=data_dir), host=host, port=port)


@app.command("demo")
def demo(
    devices: Annotated[int, typer.Option(help="Number of device agents to start", min=1, max=20)] = 3,
    workdir: Annotated[Path | None, typer.Option(help="Keep everything in this directory (default: a temp dir)")]
    = None,
    keep: Annotated[bool, typer.Option(help="Keep the work directory afterwards")] = False,
) -> None:
    """Train a small model, start a server and device agents, roll the model out, and query every device."""
    from fleet_server.demo import run_demo

    run_demo(devices=devices, workdir=workdir, keep=keep or workdir is not None)


def main() -> None:
    """Console entry point: EdgeFleet errors become ``error: ...`` and a hint, and an exit code."""
    try:
        app(prog_name="edgefleet")
    except EdgeFleetError as exc:
        from fleet_server.cli_context import report_error  # exit codes: 1 refused, 2 usage, 3 unreachable

        raise SystemExit(report_error(exc)) from None


if __name__ == "__main__":
    main()

"""Keys and trust from the command line: ``edgefleet broker-config``,
``edgefleet keys rotate-root|reload`` and ``edgefleet release request|sign|submit``
(releases signed where the release key is kept, without the server)."""

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from agent.protocol.canonical import parse_json
from agent.protocol.errors import ProtocolError
from agent.protocol.keys import load_private_key_pem
from agent.protocol.verify import load_trusted_root
from agent.storage import atomic_write_bytes
from fleet_server.broker_config import BrokerConfigPlan, write_broker_config
from fleet_server.cli_context import CliUsageError, JsonOption, ServerOption, TokenOption, cli_errors, connect, emit
from fleet_server.keyring import ROOT_FILE
from fleet_server.pki import CA_DIR, open_ca
from fleet_server.root_rotation import RotationPlan, rotate_root
from fleet_server.services.offline_release import sign_request

MAX_FILE_BYTES = 4 * 1024 * 1024
KeyDirOption = Annotated[Path, typer.Option("--key-dir", envvar="EDGEFLEET_KEY_DIR",
                                            help="The server's key directory (holds ca/)")]


def _read_json(path: Path, what: str) -> Any:
    try:
        return parse_json(path.read_bytes(), MAX_FILE_BYTES)
    except OSError as exc:
        raise CliUsageError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except ProtocolError as exc:
        raise CliUsageError(f"{what} {path} is not valid JSON: {exc}") from None


def _write_json(path: Path | None, document: Any) -> None:
    text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    if path is None:
        typer.echo(text, nl=False)
    else:
        atomic_write_bytes(path, text.encode("utf-8"))


def broker_config(
    out: Annotated[Path, typer.Argument(help="Directory for mosquitto.conf, acl, ca.pem, broker.pem/key")],
    key_dir: KeyDirOption = Path("./edgefleet-data/keys"),
    hostname: Annotated[list[str] | None, typer.Option("--hostname", help="Name or IP devices use to reach the "
                                                                          "broker (repeatable)")] = None,
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8883,
    bind: Annotated[str, typer.Option(help="Listen address")] = "0.0.0.0",
    crl: Annotated[Path | None, typer.Option(help="CRL path the broker reads (default: <key dir>/ca/crl.pem, "
                                                  "which the server rewrites on each revocation)")] = None,
    observer: Annotated[list[str] | None, typer.Option(help="Read-only identity edgefleet.observer[.NAME]")] = None,
    user: Annotated[str | None, typer.Option(help="Mosquitto 'user' option (the account it runs as)")] = None,
) -> None:
    """Generate a Mosquitto config: TLS with client certificates from the fleet CA, CRL and per-device ACL."""
    with cli_errors():
        ca = open_ca(key_dir / CA_DIR)
        plan = BrokerConfigPlan(out, port=port, bind=bind, hostnames=tuple(hostname or ("localhost", "127.0.0.1")),
                                crl_path=crl, observers=tuple(observer or ()), run_as_user=user)
        try:
            files = write_broker_config(ca, plan)
        except ValueError as exc:
            raise CliUsageError(str(exc)) from None
    typer.echo(f"wrote {files.config}")
    typer.echo(f"run:   mosquitto -c {files.config}")
    typer.echo(f"after 'edgefleet device revoke': kill -HUP <mosquitto pid> (reloads {files.crl})")
    typer.echo(f"server: EDGEFLEET_MQTT_URL=mqtts://{plan.hostnames[0]}:{port}  (client certificate: {key_dir}/ca)")


def keys_rotate_root(
    directory: Annotated[Path, typer.Argument(help="Keyring directory holding the root keys")],
    rotate_rollout: Annotated[bool, typer.Option("--rotate-rollout", help="New rollout key (old one dropped)")]
    = False,
    rotate_release: Annotated[bool, typer.Option("--rotate-release", help="New release key (old one dropped)")]
    = False,
    root_keys: Annotated[int | None, typer.Option(help="Replace the root keys with this many new ones")] = None,
    threshold: Annotated[int | None, typer.Option(help="Root keys needed to sign the next root")] = None,
    expires_days: Annotated[int, typer.Option(help="Days until the new root expires", min=1)] = 365,
) -> None:
    """Sign root N+1 with the old and new root keys; devices accept it per the protocol."""
    with cli_errors():
        result = rotate_root(directory, RotationPlan(rotate_rollout, rotate_release, root_keys, threshold,
                                                     expires_days))
    root = result.keyring.root
    typer.echo(f"root v{result.previous_version} -> v{root.version} in {directory / ROOT_FILE}; "
               f"{len(result.removed_keyids)} key(s) no longer trusted")
    typer.echo("next: 'edgefleet keys reload' (or restart the server); devices fetch the new root before "
               "their next directive")


def keys_reload(server: ServerOption = None, token: TokenOption = None, as_json: JsonOption = False) -> None:
    """Make the running server re-read its key directory (after 'keys rotate-root')."""
    with cli_errors(), connect(server, token) as client:
        result = client.reload_keys()
    emit(result, as_json, lambda r: typer.echo(f"server now signs with root v{r['root_version']} "
                                               f"(new: {r['new_root_versions'] or 'none'})"))


def release_request(
    name: Annotated[str, typer.Argument(help="Model name", show_default=False)],
    version: Annotated[int, typer.Argument(help="Model version", min=1, show_default=False)],
    out: Annotated[Path | None, typer.Option("--out", help="Write the request here (default: stdout)")] = None,
    server: ServerOption = None, token: TokenOption = None,
) -> None:
    """Fetch the unsigned release of a model version, to sign where the release key is kept."""
    with cli_errors(), connect(server, token) as client:
        request = client.release_request(name, version)
        _write_json(out, request)
    if out is not None:
        typer.echo(f"wrote {out}; sign it with 'edgefleet release sign {out} --key release.pem'")


def release_sign(
    request: Annotated[Path, typer.Argument(help="Release request (or a signed release to add a signature to)",
                                            exists=True, dir_okay=False)],
    key: Annotated[list[Path], typer.Option("--key", help="Release private key PEM (repeatable)", exists=True,
                                            dir_okay=False)],
    root: Annotated[Path | None, typer.Option(help="root.json to check the keys and threshold against",
                                              exists=True, dir_okay=False)] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write the signed release here (default: stdout)")]
    = None,
) -> None:
    """Sign a release request offline (no server contact); submit the result with 'edgefleet release submit'."""
    with cli_errors():
        document = _read_json(request, "release request")
        try:
            keys = [load_private_key_pem(path.read_bytes()) for path in key]
            trusted = None if root is None else load_trusted_root(_read_json(root, "root"), datetime.now(UTC))
        except (OSError, ProtocolError) as exc:
            raise CliUsageError(f"cannot load the keys or root: {exc}") from None
        envelope = sign_request(document, keys, trusted)
        _write_json(out, envelope)
    if out is not None:
        os.chmod(out, 0o644)
        signed = envelope["signed"]
        typer.echo(f"signed {signed['name']} v{signed['version']} with {len(envelope['signatures'])} "
                   f"signature(s): {out}")


def release_submit(
    signed: Annotated[Path, typer.Argument(help="Signed release from 'edgefleet release sign'", exists=True,
                                           dir_okay=False)],
    server: ServerOption = None, token: TokenOption = None, as_json: JsonOption = False,
) -> None:
    """Hand a release signed offline to the server, which verifies it against the root before storing it."""
    with cli_errors():
        envelope = _read_json(signed, "signed release")
        with connect(server, token) as client:
            release = client.submit_signed_release(envelope)
    emit(release, as_json, lambda r: typer.echo(f"release {r['name']} v{r['version']} accepted ({r['sha256']})"))

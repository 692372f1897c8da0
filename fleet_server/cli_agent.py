"""``edgefleet agent push``: release a new version of the device agent itself.

An agent release is a wheel of this project (``pip wheel --no-deps . -w dist``)
uploaded like a model, signed as a release with runtime ``agent`` and deployed
with the same directives (or staged with ``edgefleet rollout``). Devices
installed by firmware_images/install.sh install it into their other agent slot
and fall back by themselves if the new agent does not come up.
"""

from pathlib import Path
from typing import Annotated, Any

import typer

from agent.errors import InvalidBundleError
from agent.selfupdate.bundle import inspect_wheel
from fleet_server.cli_context import (
    CliUsageError,
    JsonOption,
    ServerOption,
    TokenOption,
    cli_errors,
    connect,
    emit,
    fields,
    table,
)

agent_app = typer.Typer(no_args_is_help=True, help="Releases of the device agent itself (agent self-update).")

DEFAULT_NAME = "edgefleet-agent"


def _render(result: dict[str, Any]) -> None:
    release = result["release"]
    fields([
        ("agent", result["agent_version"]),
        ("uploaded", f"{result['model']['name']} v{result['model']['version']} ({result['model']['sha256'][:16]})"),
        ("release", f"{release['name']} v{release['version']} ({release['sha256'][:16]})" if release else None),
        ("deployment", result["deployment"]["id"] if result["deployment"] else None),
    ])
    deployment = result["deployment"]
    if deployment and deployment.get("targets"):
        table("devices", ("DEVICE", "STATE", "REASON"),
              [(t["device_id"], t["state"], t.get("reason")) for t in deployment["targets"]])


@agent_app.command("push")
def agent_push(
    wheel: Annotated[Path, typer.Argument(help="The edgefleet wheel (pip wheel --no-deps . -w dist)",
                                          exists=True, dir_okay=False, show_default=False)],
    name: Annotated[str, typer.Option(help="Registry name of the agent releases")] = DEFAULT_NAME,
    release: Annotated[bool, typer.Option(help="Sign a release of the upload (needs the online release key)")]
    = True,
    device: Annotated[list[str] | None, typer.Option("--device", help="Deploy to this device (repeatable)")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="Deploy to devices with this tag (repeatable)")]
    = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait for every device to finish (0: do not wait)", min=0)]
    = 0.0,
    server: ServerOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Upload an agent wheel, sign its release and (with --device/--tag) deploy it."""
    with cli_errors():
        try:
            bundle = inspect_wheel(wheel)
        except InvalidBundleError as exc:
            raise CliUsageError(f"{wheel} is not an agent bundle: {exc}",
                                hint="build one with 'pip wheel --no-deps . -w dist' in the repository") from None
        if (device or tag) and not release:
            raise CliUsageError("--device/--tag deploy a release", hint="drop --no-release")
        with connect(server, token) as client:
            precision = bundle.tags[0].split("-")[0]  # e.g. py3: the variant is named whl-py3
            model = client.upload_model(wheel, name, {"description": f"edgefleet agent {bundle.version}"},
                                        precision)
            signed = client.create_release(name, model["version"]) if release else None
            deployment = None
            if signed is not None and (device or tag):
                deployment = client.deploy(name, model["version"], device_ids=device or [], tags=tag or [])
                if wait:
                    deployment = client.wait_for_deployment(deployment["id"], timeout=wait)
    emit({"agent_version": bundle.version, "model": model, "release": signed, "deployment": deployment},
         as_json, _render)

"""``edgefleet model list|show|upload``: the model registry (``model push``/``compress`` register here too)."""

import math
from pathlib import Path
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
    table,
)

model_app = typer.Typer(no_args_is_help=True, help="The model registry: versions, lineage, releases.")


def _render_list(models: list[dict[str, Any]]) -> None:
    table(None, ("NAME", "VERSIONS", "LATEST", "CREATED"),
          [(m["name"], m["version_count"], m["latest_version"], m["created_at"]) for m in models])


@model_app.command("list")
def model_list(server: ServerOption = None, token: TokenOption = None, as_json: JsonOption = False) -> None:
    """List registered models."""
    with cli_errors(), connect(server, token) as client:
        models = client.models()
    emit(models, as_json, _render_list)


def _render_versions(data: dict[str, Any]) -> None:
    model = data["model"]
    fields([("model", model["name"]), ("versions", model["version_count"]), ("created", model["created_at"])])
    table("versions", ("VERSION", "FORMAT", "PRECISION", "BYTES", "SHA256", "RELEASED", "CREATED"),
          [(v["version"], v["format"], v["precision"], v["size_bytes"], v["sha256"][:16], v["released"],
            v["created_at"]) for v in data["versions"]])


def _render_version(version: dict[str, Any]) -> None:
    lineage = version.get("lineage") or {}
    metrics = lineage.get("metrics") or {}
    fields([
        ("model", f"{version['name']} v{version['version']}"),
        ("file", version["filename"]),
        ("format", f"{version['format']} ({version['runtime']}), {version['precision']}"),
        ("size", f"{version['size_bytes']} bytes"),
        ("sha256", version["sha256"]),
        ("released", version["released"]),
        ("compatibility", f"arch {', '.join(version['arch']) or 'any'}, min RAM {version['min_ram_mb']} MB"),
        ("inputs", [f"{t['name']} {t['dtype']}{t['shape']}" for t in version["inputs"]]),
        ("outputs", [f"{t['name']} {t['dtype']}{t['shape']}" for t in version["outputs"]]),
        ("description", version["description"]),
        ("training data", lineage.get("training_data_uri")),
        ("data sha256", lineage.get("training_data_sha256")),
        ("code", lineage.get("training_code_ref")),
        ("parent version", lineage.get("parent_version")),
        ("metrics", [f"{key}={value}" for key, value in sorted(metrics.items())]),
    ])


@model_app.command("show")
def model_show(
    name: Annotated[str, typer.Argument(help="Model name", show_default=False)],
    version: Annotated[int | None, typer.Option("--version", "-v", min=1,
                                                help="One version in detail (lineage, schema)")] = None,
    server: ServerOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """A model's versions, or one version with its lineage and schema."""
    with cli_errors(), connect(server, token) as client:
        if version is not None:
            emit(client.model_version(name, version), as_json, _render_version)
            return
        data = {"model": client.model(name), "versions": client.model_versions(name)}
    emit(data, as_json, _render_versions)


def parse_metrics(pairs: list[str]) -> dict[str, float]:
    """``["accuracy=0.96", ...]`` as a dict; ``CliUsageError`` names the first pair that is not NAME=NUMBER."""
    metrics: dict[str, float] = {}
    for pair in pairs:
        name, separator, value = pair.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not separator or not name.strip() or not math.isfinite(number):
            raise CliUsageError(f"--metric {pair!r} is not NAME=NUMBER", hint="e.g. --metric accuracy=0.96")
        metrics[name.strip()] = number
    return metrics


def _render_upload(version: dict[str, Any]) -> None:
    console().print(f"uploaded {version['name']} v{version['version']} ({version['size_bytes']} bytes, "
                    f"sha256 {version['sha256']})")
    profile = version.get("reference_profile_sha256")
    console().print(f"reference profile {profile} (from the calibration data)" if profile else
                    "no reference profile: drift needs --calibration here, or a compression job")


@model_app.command("upload")
def model_upload(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="ONNX or TFLite model file",
                                         show_default=False)],
    name: Annotated[str, typer.Option("--name", help="Model name", show_default=False)],
    calibration: Annotated[Path | None, typer.Option(
        "--calibration", exists=True, dir_okay=False, show_default=False,
        help="Data like the model's inputs (.npz, .npy or CSV): the server builds the reference profile "
             "drift is measured against")] = None,
    precision: Annotated[str, typer.Option("--precision", help="Precision label of this file")] = "fp32",
    description: Annotated[str | None, typer.Option("--description", show_default=False)] = None,
    training_data: Annotated[str | None, typer.Option("--training-data", show_default=False,
                                                      help="Lineage: URI of the training data")] = None,
    training_data_sha256: Annotated[str | None, typer.Option("--training-data-sha256", show_default=False)] = None,
    code_ref: Annotated[str | None, typer.Option("--code-ref", show_default=False,
                                                 help="Lineage: training code revision, e.g. git:abc123")] = None,
    parent_version: Annotated[int | None, typer.Option("--parent-version", min=1, show_default=False)] = None,
    metric: Annotated[list[str] | None, typer.Option("--metric", show_default=False,
                                                     help="Lineage: NAME=NUMBER, repeatable")] = None,
    server: ServerOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Register a model file as the next version of NAME, with its lineage and optional calibration data."""
    with cli_errors():
        lineage = {key: value for key, value in (
            ("training_data_uri", training_data), ("training_data_sha256", training_data_sha256),
            ("training_code_ref", code_ref), ("parent_version", parent_version),
            ("metrics", parse_metrics(metric or []) or None)) if value is not None}
        metadata = {key: value for key, value in (("description", description), ("lineage", lineage or None))
                    if value is not None}
        with connect(server, token) as client:
            version = client.upload_model(file, name, metadata, precision, calibration)
    emit(version, as_json, _render_upload)

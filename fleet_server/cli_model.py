"""``edgefleet model list|show``: the model registry (``model push``/``compress`` register here too)."""

from typing import Annotated, Any

import typer

from fleet_server.cli_context import JsonOption, ServerOption, TokenOption, cli_errors, connect, emit, fields, table

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

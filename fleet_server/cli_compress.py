"""``edgefleet model push|compress|jobs|variants|compress-local``: compression from the command line.

``push`` uploads a model (a Keras model or SavedModel is converted to TFLite
here first), uploads the calibration and validation data, starts a
compression job on the server, shows its progress and prints the comparison
table. The data are checked against the model locally before anything is
uploaded, so a wrong-shaped data set registers nothing.
"""

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from compression.report import TABLE_COLUMNS, format_table, table_rows
from fleet_server.cli_context import (
    CliUsageError,
    JsonOption,
    ServerOption,
    TokenOption,
    cli_errors,
    connect,
    console,
    print_json,
    table,
)
from fleet_server.cli_model import model_app
from fleet_server.client import FleetClient, FleetClientError

POLL_INTERVAL_S = 0.5
WIDE_TABLE = 120

CalibrationOption = Annotated[Path, typer.Option(
    "--calibration", exists=True, dir_okay=False, show_default=False,
    help="Calibration data: .npz (arrays named after the inputs), .npy or CSV")]
ValidationOption = Annotated[Path | None, typer.Option(
    "--validation", exists=True, dir_okay=False, show_default=False,
    help="Labelled validation data (.npz with 'labels', or CSV with a 'label' column); default: the calibration data")]
VariantsOption = Annotated[str | None, typer.Option(
    "--variants", show_default=False, help="Comma-separated variant names (default: all that apply; see 'variants')")]
MethodOption = Annotated[str, typer.Option("--method", help="Static int8 calibration: minmax, percentile or entropy")]
Top1Option = Annotated[float, typer.Option("--min-top1", min=0.0, max=1.0, help="Gate: minimum top-1 agreement")]
DropOption = Annotated[float, typer.Option("--max-accuracy-drop", min=0.0, max=100.0,
                                           help="Gate: maximum accuracy drop in percentage points")]
RamOption = Annotated[int, typer.Option("--ram-budget-mb", min=1, help="Flag variants needing more RAM than this")]
LatencyRunsOption = Annotated[int, typer.Option("--latency-runs", min=1, max=10_000,
                                                help="Timed single-row inferences per variant")]
TimeoutOption = Annotated[float, typer.Option("--timeout", min=1.0, help="Seconds to wait for the job")]


def _variant_names(variants: str | None) -> list[str] | None:
    names = None if variants is None else [item.strip() for item in variants.split(",") if item.strip()]
    if names is not None and not names:
        raise CliUsageError("--variants names no variant", hint="e.g. --variants onnx-int8-static,onnx-fp16")
    return names


@dataclass(frozen=True)
class CompressionRequest:
    """What ``push`` and ``compress`` ask the server's pipeline for (the data are uploaded first)."""

    calibration: Path
    validation: Path | None
    variants: str | None
    method: str
    min_top1: float
    max_drop_points: float
    ram_budget_mb: int
    latency_runs: int

    def options(self, calibration_sha256: str, validation_sha256: str | None) -> dict[str, Any]:
        return {"calibration_sha256": calibration_sha256, "validation_sha256": validation_sha256,
                "variants": _variant_names(self.variants),
                "calibration_method": self.method, "ram_budget_mb": self.ram_budget_mb,
                "latency_runs": self.latency_runs,
                "thresholds": {"min_top1_agreement": self.min_top1,
                               "max_accuracy_drop": self.max_drop_points / 100.0}}


def _compress_version(client: FleetClient, name: str, version: int, request: CompressionRequest, release: bool,
                      timeout: float, as_json: bool) -> None:
    """Upload the data sets, run the compression job with a progress bar and finish it (table, release)."""
    calibration_sha = client.upload_dataset(request.calibration)["sha256"]
    validation_sha = None if request.validation is None else client.upload_dataset(request.validation)["sha256"]
    job = follow_job(client, client.compress(name, version, request.options(calibration_sha, validation_sha)),
                     timeout, as_json)
    _finish(client, job, release, as_json)


def _parse_ref(ref: str) -> tuple[str, int]:
    name, _, version = ref.rpartition("@")
    if not name or not version.isdigit() or int(version) < 1:
        raise CliUsageError(f"{ref!r} is not NAME@VERSION", hint="e.g. digits@3")
    return name, int(version)


def _quiet_pipeline_logs() -> None:
    """The pipeline logs every model load at info level: keep that for --log-level debug."""
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        for name in ("agent", "compression"):
            logging.getLogger(name).setLevel(logging.WARNING)


def check_locally(model: Path, calibration: Path, validation: Path | None) -> None:
    """Fail before uploading when the data do not fit the model (same loaders as the server)."""
    _quiet_pipeline_logs()
    from compression.data import load_dataset
    from compression.source import open_source

    with tempfile.TemporaryDirectory(prefix="edgefleet-check-") as workdir:
        source = open_source(model, Path(workdir))
        load_dataset(calibration, source.inputs, "calibration data")
        if validation is not None:
            load_dataset(validation, source.inputs, "validation data")


def follow_job(client: FleetClient, job: dict[str, Any], timeout: float, quiet: bool) -> dict[str, Any]:
    """Poll the job to its end with a progress bar; return the final job."""
    deadline = time.monotonic() + timeout
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console(), transient=True, disable=quiet) as progress:
        task = progress.add_task(f"job {job['id']}: {job['stage']}", total=1.0)
        while job["status"] not in ("succeeded", "failed"):
            if time.monotonic() > deadline:
                raise FleetClientError(f"compression job {job['id']} still {job['status']} after {timeout:.0f}s "
                                       f"(at {job['stage']}); follow it with 'edgefleet model jobs'")
            time.sleep(POLL_INTERVAL_S)
            job = client.compression_job(job["id"])
            progress.update(task, completed=job["progress"], description=f"job {job['id']}: {job['stage']}")
    return job


def render_job(job: dict[str, Any]) -> None:
    report = job.get("report")
    if report is None:
        console().print(f"job {job['id']} {job['status']}: {job.get('error') or job['stage']}")
        return
    title = (f"{job['name']} v{job['version']}: compression job {job['id']} ({report['evaluation']['data']} data, "
             f"{report['evaluation']['rows']} rows, on {report['host']['cpu']})")
    grid = Table(title=title, title_justify="left", header_style="bold", box=None, pad_edge=False)
    for column in TABLE_COLUMNS:
        grid.add_column(column, no_wrap=True)
    for row in table_rows(report):
        grid.add_row(*row)
    wide = Console(highlight=False, width=max(console().width, WIDE_TABLE))  # a folded table is unreadable
    wide.print(grid)
    for variant in report["variants"]:
        for reason in variant["reasons"]:
            console().print(f"[red]{variant['name']} rejected[/red]: {reason}")
    order = [variant["name"] for variant in job["variants"]]
    console().print(f"release order: {', '.join(order) or '-'}, then the original")


def _finish(client: FleetClient, job: dict[str, Any], release: bool, as_json: bool) -> None:
    if job["status"] != "succeeded":
        raise FleetClientError(f"compression job {job['id']} failed: {job.get('error')}")
    released = client.create_release(job["name"], job["version"]) if release else None
    if as_json:
        print_json({"job": job, "release": released})
        return
    render_job(job)
    if released is not None:
        console().print(f"released {released['name']} v{released['version']} (sha256 {released['sha256']}) "
                        f"with {', '.join(v['name'] for v in released['variants'])}")


@model_app.command("push")
def model_push(
    file: Annotated[Path, typer.Argument(exists=True, help="ONNX or TFLite file, Keras .keras/.h5 or SavedModel dir",
                                         show_default=False)],
    name: Annotated[str, typer.Option("--name", help="Model name", show_default=False)],
    calibration: CalibrationOption,
    validation: ValidationOption = None,
    variants: VariantsOption = None,
    method: MethodOption = "minmax",
    min_top1: Top1Option = 0.99,
    max_accuracy_drop: DropOption = 1.0,
    ram_budget_mb: RamOption = 256,
    latency_runs: LatencyRunsOption = 100,
    release: Annotated[bool, typer.Option("--release", help="Sign a release with the passing variants")] = False,
    timeout: TimeoutOption = 3600.0,
    server: ServerOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Upload a model, compress it on the server and print the comparison table."""
    with cli_errors(), tempfile.TemporaryDirectory(prefix="edgefleet-push-") as workdir:
        model = _uploadable(file, Path(workdir))
        check_locally(model, calibration, validation)
        with connect(server, token) as client:
            version = client.upload_model(model, name, calibration=calibration)  # its reference profile too
            if not as_json:
                console().print(f"uploaded {name} v{version['version']} ({version['size_bytes']} bytes)")
            request = CompressionRequest(calibration, validation, variants, method, min_top1, max_accuracy_drop,
                                         ram_budget_mb, latency_runs)
            _compress_version(client, name, version["version"], request, release, timeout, as_json)


def _uploadable(file: Path, workdir: Path) -> Path:
    from compression.source import SourceKind, detect_kind

    if detect_kind(file) is not SourceKind.KERAS:
        return file
    from compression.tf_convert import convert_to_tflite

    return convert_to_tflite(file, workdir / f"{file.stem or 'model'}.tflite")


@model_app.command("compress")
def model_compress(
    ref: Annotated[str, typer.Argument(help="NAME@VERSION of a registered model", show_default=False)],
    calibration: CalibrationOption,
    validation: ValidationOption = None,
    variants: VariantsOption = None,
    method: MethodOption = "minmax",
    min_top1: Top1Option = 0.99,
    max_accuracy_drop: DropOption = 1.0,
    ram_budget_mb: RamOption = 256,
    latency_runs: LatencyRunsOption = 100,
    release: Annotated[bool, typer.Option("--release", help="Sign a release with the passing variants")] = False,
    timeout: TimeoutOption = 3600.0,
    server: ServerOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Compress a registered model version on the server and print the comparison table."""
    with cli_errors():
        name, version = _parse_ref(ref)
        with connect(server, token) as client:
            request = CompressionRequest(calibration, validation, variants, method, min_top1, max_accuracy_drop,
                                         ram_budget_mb, latency_runs)
            _compress_version(client, name, version, request, release, timeout, as_json)


@model_app.command("jobs")
def model_jobs(
    ref: Annotated[str, typer.Argument(help="NAME@VERSION", show_default=False)],
    job_id: Annotated[int | None, typer.Option("--job", min=1, help="Show one job with its report")] = None,
    server: ServerOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """The compression jobs of a model version, or one job's comparison table."""
    with cli_errors():
        name, version = _parse_ref(ref)
        with connect(server, token) as client:
            if job_id is not None:
                job = client.compression_job(job_id)
                print_json(job) if as_json else render_job(job)
                return
            jobs = client.compression_jobs(name, version)
    if as_json:
        print_json(jobs)
        return
    table(f"{name} v{version}: compression jobs", ("JOB", "STATUS", "STAGE", "PROGRESS", "VARIANTS", "ERROR"),
          [(j["id"], j["status"], j["stage"], f"{j['progress']:.0%}", [v["name"] for v in j["variants"]],
            j["error"]) for j in jobs])


@model_app.command("variants")
def model_variants() -> None:
    """The variants the compression pipeline can build."""
    from compression.variants import VARIANTS

    table(None, ("VARIANT", "RUNTIME", "PRECISION", "FROM", "WHAT"),
          [(spec.name, spec.runtime.value, spec.precision,
            "keras" if spec.origins == ("keras",) else ", ".join(kind.value for kind in spec.kinds),
            spec.description) for spec in VARIANTS])


@model_app.command("compress-local")
def model_compress_local(
    file: Annotated[Path, typer.Argument(exists=True, help="ONNX or TFLite file, Keras .keras/.h5 or SavedModel dir",
                                         show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="New directory for the variants, profile and report",
                                      show_default=False)],
    calibration: CalibrationOption,
    validation: ValidationOption = None,
    variants: VariantsOption = None,
    method: MethodOption = "minmax",
    min_top1: Top1Option = 0.99,
    max_accuracy_drop: DropOption = 1.0,
    ram_budget_mb: RamOption = 256,
    latency_runs: LatencyRunsOption = 100,
    as_json: JsonOption = False,
) -> None:
    """Compress on this machine without a server (writes OUT/variants, OUT/report.json, the profile)."""
    from compression.pipeline import compress_to_directory
    from compression.settings import CompressionSettings, GateThresholds

    _quiet_pipeline_logs()
    with cli_errors():
        names = _variant_names(variants)
        settings = CompressionSettings(
            variants=None if names is None else tuple(names), calibration_method=method,
            ram_budget_mb=ram_budget_mb, latency_runs=latency_runs,
            thresholds=GateThresholds(min_top1_agreement=min_top1, max_accuracy_drop=max_accuracy_drop / 100.0))
        result = compress_to_directory(file, calibration, out, validation=validation, settings=settings)
    if as_json:
        print_json(result.report)
    else:
        typer.echo(format_table(result.report))
        typer.echo(f"wrote {out}: release order {', '.join(result.report['release_order']) or '-'}")

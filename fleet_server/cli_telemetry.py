"""``edgefleet telemetry show DEVICE|MODEL`` and ``edgefleet alerts list|show``: what devices report,
drift, and the alerts raised from it."""

from datetime import UTC, datetime, timedelta
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
from fleet_server.client import FleetClientError

telemetry_app = typer.Typer(no_args_is_help=True, help="Telemetry of devices, model versions and cohorts.")
alerts_app = typer.Typer(no_args_is_help=True, help="Drift, latency, error-rate and offline alerts.")

SUBJECT_HELP = "A device id, or a model name (MODEL or MODEL:VERSION); --model forces the model reading"


def _number(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def _render_series(series: dict[str, Any]) -> None:
    what = series["subject"] if series["scope"] == "device" else (
        f"{series['subject']}" + (f" v{series['model_version']}" if series["model_version"] else "")
        + (f" (devices tagged {series['tag']})" if series["tag"] else " (all devices)"))
    rows = [(p["bucket_start"][:19].replace("T", " "), p["devices"], p["windows"], p["requests"],
             _number(None if p["error_rate"] is None else 100 * p["error_rate"], 2, "%"),
             _number(p["latency_p50_ms"], 3), _number(p["latency_p95_ms"], 3), _number(p["drift_score"], 3)
             + (" drift" if p["drifted"] else ""), p["out_of_range"], _number(p["cpu_percent"], 0, "%"))
            for p in series["points"]]
    table(f"{series['scope']} {what}, {series['bucket_s']} s per row",
          ("BUCKET (UTC)", "DEVICES", "WINDOWS", "REQUESTS", "ERRORS", "P50 MS", "P95 MS", "DRIFT (JS)",
           "OUT OF RANGE", "CPU"), rows)
    if not rows:
        console().print("[dim]no telemetry in this range[/dim]")


@telemetry_app.command("show")
def telemetry_show(
    subject: Annotated[str, typer.Argument(help=SUBJECT_HELP, show_default=False)],
    model: Annotated[bool, typer.Option("--model", help="SUBJECT is a model name")] = False,
    tag: Annotated[str | None, typer.Option(help="Model only: the cohort of devices with this tag")] = None,
    since: Annotated[float, typer.Option(help="Hours back from now", min=0.001, max=24 * 90)] = 1.0,
    bucket: Annotated[int, typer.Option(help="Seconds per row", min=1, max=86400)] = 300,
    server: ServerOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Requests, errors, latency percentiles, drift scores and CPU over time, per device or per model."""
    end = datetime.now(UTC)
    params = {"start": (end - timedelta(hours=since)).isoformat(), "end": end.isoformat(), "bucket_s": bucket}
    name, _, version = subject.partition(":")
    with cli_errors():
        if version and not version.isdigit():
            raise CliUsageError(f"{subject!r}: a model version must be a number (MODEL:VERSION)")
    with cli_errors(), connect(server, token) as client:
        series = None
        if not model and not version and tag is None:
            try:
                series = client.device_telemetry(subject, params)
            except FleetClientError as exc:
                if exc.status_code != 404:
                    raise
        if series is None:
            series = client.model_telemetry(name, {**params, **({"version": int(version)} if version else {}),
                                                   **({"tag": tag} if tag else {})})
    emit(series, as_json, _render_series)


def _render_alerts(alerts: list[dict[str, Any]]) -> None:
    rows = [(a["id"], a["state"], a["kind"], f"{a['scope']} {a['subject']}",
             f"{a['model_name']} v{a['model_version']}" if a["model_name"] else "-", a["opened_at"][:19],
             ", ".join(sorted({d["state"] for d in a["deliveries"]})) or "-", a["summary"]) for a in alerts]
    table(None, ("ID", "STATE", "KIND", "SUBJECT", "MODEL", "OPENED (UTC)", "DELIVERIES", "SUMMARY"), rows)
    if not rows:
        console().print("[dim]no alerts[/dim]")


@alerts_app.command("list")
def alerts_list(
    state: Annotated[str | None, typer.Option(help="firing or resolved")] = None,
    kind: Annotated[str | None, typer.Option(help="drift, latency, error_rate or offline")] = None,
    subject: Annotated[str | None, typer.Option(help="A device id or a cohort tag")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    server: ServerOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Alerts, newest first, with the state of their webhook deliveries."""
    params = {key: value for key, value in (("state", state), ("kind", kind), ("subject", subject)) if value}
    with cli_errors(), connect(server, token) as client:
        alerts = client.alerts({**params, "limit": limit})
    emit(alerts, as_json, _render_alerts)


def _render_alert(alert: dict[str, Any]) -> None:
    fields([("alert", alert["id"]), ("state", alert["state"]), ("kind", alert["kind"]),
            ("subject", f"{alert['scope']} {alert['subject']}"),
            ("model", f"{alert['model_name']} v{alert['model_version']}" if alert["model_name"] else None),
            ("summary", alert["summary"]), ("opened", alert["opened_at"]), ("resolved", alert["resolved_at"])])
    table("deliveries", ("EVENT", "TARGET", "STATE", "ATTEMPTS", "LAST ERROR"),
          [(d["event"], d["target"], d["state"], d["attempts"], d["last_error"] or "") for d in alert["deliveries"]])


@alerts_app.command("show")
def alerts_show(
    alert_id: Annotated[int, typer.Argument(help="Alert id", show_default=False)],
    server: ServerOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """One alert with its details and every delivery attempt's outcome."""
    with cli_errors(), connect(server, token) as client:
        alert = client.alert(alert_id)
    emit(alert, as_json, _render_alert)

"""``edgefleet rollout create|list|show|start|pause|resume|abort|rollback|promote|drop|watch``.

``create MODEL@VERSION --target tag:line-3`` works with defaults (phases 10 %, 50 %, 100 %, 60 s bake,
90 % success threshold, health gates on error rate and p95 latency, automatic rollback). ``watch`` follows
the per-phase progress live until the rollout ends; its exit code is 0 when it succeeded, 1 otherwise.
"""

import time
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from fleet_server.cli_context import (
    JsonOption,
    ServerOption,
    TokenOption,
    cell_text,
    cli_errors,
    connect,
    console,
    emit,
    fields,
    print_json,
    table,
)
from fleet_server.cli_rollout_args import parse_duration, parse_phases, parse_release, parse_start_at, parse_target
from fleet_server.client import FleetClient

rollout_app = typer.Typer(no_args_is_help=True, help="Staged rollouts with health gates, A/B cohorts and shadows.")

FINAL_STATES = ("succeeded", "aborted", "rolled_back")
STATUS_COLUMNS = ("succeeded", "notified", "pending", "failed", "timed_out", "rolled_back")
IdArgument = Annotated[int, typer.Argument(help="Rollout id (see 'edgefleet rollout list')", show_default=False)]


def _release(ref: dict[str, Any] | None) -> str:
    return "-" if ref is None else f"{ref['name']} v{ref['version']}"


def _phase_label(phase: dict[str, Any]) -> str:
    return f"{phase['share'] * 100:g}%" if phase["share"] is not None else f"{phase['count']} devices"


def _headline(rollout: dict[str, Any]) -> str:
    release = _release(rollout["release"])
    if rollout.get("release_b"):
        release += f" | B {_release(rollout['release_b'])} ({rollout['b_share']:.0%})"
    where = f"phase {rollout['current_phase'] + 1} of {rollout['phases']}"
    return f"rollout {rollout['id']}: {rollout['action']} {release}, {rollout['state']} ({where})"


def phase_table(rollout: dict[str, Any]) -> Table:
    grid = Table(title=_headline(rollout), title_justify="left", header_style="bold", box=None, pad_edge=False)
    for column in ("PHASE", "TARGET", "DEVICES", "STATE", *(c.upper().replace("_", " ") for c in STATUS_COLUMNS),
                   "BAKE"):
        grid.add_column(column)
    for phase in rollout["phase_details"]:
        counts = phase["devices"]
        own = sum(counts.values())
        grid.add_row(str(phase["index"] + 1), _phase_label(phase), str(own), phase["state"],
                     *(str(counts.get(status, 0)) for status in STATUS_COLUMNS), f"{phase['bake_s']:g}s")
    return grid


def _summary_line(rollout: dict[str, Any]) -> str:
    counts = ", ".join(f"{count} {status}" for status, count in sorted(rollout["devices"].items()))
    reason = f"; reason: {rollout['reason']}" if rollout.get("reason") else ""
    scheduled = f"; starts at {rollout['start_at']}" if rollout.get("start_at") and rollout["state"] == "draft" else ""
    return f"devices: {counts or 'none'}{scheduled}{reason}"


def render_rollout(rollout: dict[str, Any]) -> None:
    out = console()
    out.print(phase_table(rollout))
    out.print(_summary_line(rollout))
    odd = [d for d in rollout["device_details"] if d["status"] not in ("succeeded", "pending", "notified")]
    if odd:
        table(None, ("DEVICE", "PHASE", "COHORT", "STATUS", "ATTEMPTS", "SEQ", "REPORTED", "REASON"),
              [(d["device_id"], "-" if d["phase"] is None else d["phase"] + 1, d["cohort"], d["status"],
                d["attempts"], d["sequence"], d["agent_state"], d["reason"]) for d in odd])


def render_list(rollouts: list[dict[str, Any]]) -> None:
    table(None, ("ID", "ACTION", "RELEASE", "STATE", "PHASE", "DEVICES", "CREATED", "REASON"),
          [(r["id"], r["action"], _release(r["release"]) + (f" | B {_release(r['release_b'])}" if r["release_b"]
                                                           else ""),
            r["state"], f"{r['current_phase'] + 1}/{r['phases']}",
            ", ".join(f"{n} {s}" for s, n in sorted(r["devices"].items())), r["created_at"], r["reason"])
           for r in rollouts])


@rollout_app.command("create")
def create(
    release: Annotated[str, typer.Argument(help="MODEL@VERSION of a signed release", show_default=False)],
    target: Annotated[list[str], typer.Option(
        "--target", help="tag:NAME, id:DEVICE, all; narrowed by arch:A, runtime:R, min-ram:MB, max-ram:MB "
        "(repeatable)", show_default=False)],
    phases: Annotated[str, typer.Option(help="Cumulative shares or counts, e.g. 10%,50%,100% or 1,10,100%")]
    = "10%,50%,100%",
    bake: Annotated[str, typer.Option(help="Bake time of every phase (90, 90s, 10m, 1h)")] = "60s",
    threshold: Annotated[float, typer.Option(help="Share of a phase's devices that must succeed", min=0, max=1)]
    = 0.9,
    shadow: Annotated[bool, typer.Option("--shadow", help="Run the release next to the served model (no answers)")]
    = False,
    ab: Annotated[str | None, typer.Option("--ab", help="A/B: MODEL@VERSION for cohort B", show_default=False)]
    = None,
    b_share: Annotated[float, typer.Option(help="A/B: share of the target in cohort B", min=0.01, max=0.99)] = 0.5,
    max_failure_rate: Annotated[float, typer.Option(help="Abort above this share of failed installs", min=0, max=1)]
    = 0.1,
    max_error_increase: Annotated[float, typer.Option(help="Abort when a device's error rate rises by more "
                                                           "(0.05 = 5 points)", min=0, max=1)] = 0.05,
    max_latency_ratio: Annotated[float, typer.Option(help="Abort when a device's p95 latency grows by more", min=1)]
    = 1.5,
    min_latency_increase: Annotated[float, typer.Option(help="... and by at least this many ms", min=0)] = 5.0,
    max_drift: Annotated[float | None, typer.Option(help="Abort when a device's drift score exceeds this (0..1)",
                                                    min=0, max=1, show_default=False)] = None,
    min_requests: Annotated[int, typer.Option(help="Requests a device must serve before it is judged", min=1)] = 20,
    auto_rollback: Annotated[bool, typer.Option(help="Roll back automatically when a criterion trips")] = True,
    rate_limit: Annotated[int, typer.Option(help="Devices notified per minute", min=1)] = 300,
    timeout: Annotated[str, typer.Option(help="Per-device timeout before a retry")] = "10m",
    retries: Annotated[int, typer.Option(help="Retries of a device that does not answer", min=0, max=10)] = 2,
    backoff: Annotated[str, typer.Option(help="First retry delay (doubles each time)")] = "30s",
    baseline: Annotated[str, typer.Option(help="Pre-rollout telemetry each device is compared with")] = "1h",
    draft: Annotated[bool, typer.Option("--draft", help="Create without starting ('rollout start' later)")] = False,
    start_at: Annotated[str | None, typer.Option(
        "--start-at", help="Start at this time (ISO 8601, or +2h from now); a draft until then", show_default=False)]
    = None,
    name: Annotated[str | None, typer.Option(help="A label", show_default=False)] = None,
    server: ServerOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Plan and start a staged rollout of a release to a target."""
    with cli_errors():
        bake_s = parse_duration(bake, "--bake")
        body: dict[str, Any] = {
            "release": parse_release(release), "target": parse_target(target),
            "phases": parse_phases(phases, bake_s, threshold), "action": "shadow" if shadow else "install",
            "criteria": {"max_failure_rate": max_failure_rate, "max_error_rate_increase": max_error_increase,
                         "max_latency_ratio": max_latency_ratio, "min_latency_increase_ms": min_latency_increase,
                         "max_drift_score": max_drift,
                         "min_requests": min_requests, "auto_rollback": auto_rollback},
            "rate_limit_per_min": rate_limit, "device_timeout_s": parse_duration(timeout, "--timeout"),
            "max_retries": retries, "retry_backoff_s": parse_duration(backoff, "--backoff"),
            "baseline_s": parse_duration(baseline, "--baseline"), "start": not draft and start_at is None,
            "name": name,
        }
        if start_at is not None:
            body["start_at"] = parse_start_at(start_at)
        if ab is not None:
            body["release_b"], body["b_share"] = parse_release(ab), b_share
        with connect(server, token) as client:
            emit(client.create_rollout(body), as_json, render_rollout)


@rollout_app.command("list")
def list_(
    state: Annotated[str | None, typer.Option(help="Only rollouts in this state", show_default=False)] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    server: ServerOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Rollouts, newest first."""
    with cli_errors(), connect(server, token) as client:
        emit(client.rollouts(state=state, limit=limit), as_json, render_list)


@rollout_app.command("show")
def show(rollout_id: IdArgument, server: ServerOption = None, token: TokenOption = None,
         as_json: JsonOption = False) -> None:
    """A rollout's phases and devices; A/B cohorts side by side; a shadow candidate's agreement."""
    with cli_errors(), connect(server, token) as client:
        rollout = client.rollout(rollout_id)
        extra: dict[str, Any] = {}
        if rollout.get("release_b"):
            extra["cohorts"] = client.rollout_cohorts(rollout_id)
        if rollout["action"] == "shadow":
            extra["shadow"] = client.rollout_shadow(rollout_id)
        if as_json:
            print_json({**rollout, **extra})
            return
        render_rollout(rollout)
        if "cohorts" in extra:
            table("cohorts (telemetry on their release since the start)",
                  ("COHORT", "RELEASE", "DEVICES", "SUCCEEDED", "REQUESTS", "ERROR RATE", "P95 MS", "DRIFT"),
                  [(c["cohort"], _release(c["release"]), c["devices"], c["succeeded"], c["requests"],
                    "-" if c["error_rate"] is None else f"{c['error_rate']:.2%}",
                    cell_text(c["p95_latency_ms"]), cell_text(c["drift_score"])) for c in extra["cohorts"]])
        if "shadow" in extra:
            s = extra["shadow"]
            fields([("candidate", _release(s["candidate"])), ("devices running", s["devices_running"]),
                    ("devices reporting", s["devices_reporting"]), ("requests compared", s["compared"]),
                    ("agreement", "-" if s["agreement"] is None else f"{s['agreement']:.2%}"),
                    ("mean abs diff", s["mean_abs_diff"]), ("serving p50 ms", s["serving_p50_ms"]),
                    ("candidate p50 ms", s["candidate_p50_ms"])])


def _operation(operation: str, help_text: str) -> None:
    def command(rollout_id: IdArgument, server: ServerOption = None, token: TokenOption = None,
                as_json: JsonOption = False) -> None:
        with cli_errors(), connect(server, token) as client:
            emit(client.rollout_operation(rollout_id, operation), as_json, render_rollout)

    command.__doc__ = help_text
    rollout_app.command(operation)(command)


_operation("start", "Start a draft rollout.")
_operation("pause", "Hold: notify no device and start no phase until resumed.")
_operation("resume", "Continue a paused rollout.")
_operation("abort", "Stop notifying devices (those that took the release keep it).")
_operation("rollback", "Send a signed rollback directive to every device that took the release.")
_operation("drop", "Remove a shadow rollout's candidate from every device that runs it.")


@rollout_app.command("promote")
def promote(
    rollout_id: IdArgument,
    phases: Annotated[str, typer.Option(help="Phases of the install rollout")] = "10%,50%,100%",
    bake: Annotated[str, typer.Option(help="Bake time of every phase")] = "60s",
    threshold: Annotated[float, typer.Option(min=0, max=1)] = 0.9,
    server: ServerOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Install a shadow rollout's candidate for real on the devices that ran it (a new staged rollout)."""
    with cli_errors():
        body = {"phases": parse_phases(phases, parse_duration(bake, "--bake"), threshold)}
        with connect(server, token) as client:
            emit(client.promote_rollout(rollout_id, body), as_json, render_rollout)


def _progress_line(rollout: dict[str, Any]) -> str:
    phase = rollout["phase_details"][rollout["current_phase"]]
    counts = phase["devices"]
    done = sum(counts.get(s, 0) for s in ("succeeded", "failed", "timed_out", "rolled_back"))
    return (f"{rollout['state']}: phase {phase['index'] + 1}/{rollout['phases']} {phase['state']}, "
            f"{done}/{sum(counts.values())} done; {_summary_line(rollout)}")


@rollout_app.command("watch")
def watch(
    rollout_id: IdArgument,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes", min=0.1, max=60)] = 1.0,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Follow per-phase progress live until the rollout ends (exit code 0 only if it succeeded)."""
    with cli_errors(), connect(server, token) as client:
        rollout = _watch_live(client, rollout_id, interval) if console().is_terminal else \
            _watch_lines(client, rollout_id, interval)
        console().print(phase_table(rollout))
        console().print(_summary_line(rollout))
    raise typer.Exit(0 if rollout["state"] == "succeeded" else 1)


def _watch_live(client: FleetClient, rollout_id: int, interval: float) -> dict[str, Any]:
    rollout = client.rollout(rollout_id)
    with Live(console=console(), refresh_per_second=4, transient=True) as live:
        while True:
            live.update(Group(phase_table(rollout), Text(_summary_line(rollout))))
            if rollout["state"] in FINAL_STATES:
                return rollout
            time.sleep(interval)
            rollout = client.rollout(rollout_id)


def _watch_lines(client: FleetClient, rollout_id: int, interval: float) -> dict[str, Any]:
    """Not a terminal: one line whenever the progress changes."""
    last = ""
    while True:
        rollout = client.rollout(rollout_id)
        line = _progress_line(rollout)
        if line != last:
            typer.echo(f"{time.strftime('%H:%M:%S')} rollout {rollout_id} {line}")
            last = line
        if rollout["state"] in FINAL_STATES:
            return rollout
        time.sleep(interval)

"""Command-line spellings of rollout requests, turned into the API's JSON. Pure.

- ``MODEL@VERSION`` names a release.
- ``--target`` (repeatable): ``tag:line-3``, ``id:pi-7`` (or a bare device id), ``all``;
  inventory narrowing: ``arch:aarch64``, ``runtime:tflite``, ``min-ram:1024``, ``max-ram:4096``.
- ``--phases 10%,50%,100%`` (shares) or ``--phases 1,10,100%`` (counts and shares), cumulative.
- Durations: ``90`` (seconds), ``90s``, ``10m``, ``1h``, ``2d``.
- ``--start-at``: ISO 8601 (``2026-12-01T02:00+01:00``; without an offset, this machine's time zone),
  or ``+DURATION`` from now (``+2h``).
"""

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from fleet_server.cli_context import CliUsageError

DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")
UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
RELEASE = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)@(\d+)")


def parse_start_at(text: str, now: datetime | None = None) -> str:
    """``--start-at`` as an aware ISO 8601 timestamp for the API."""
    text = text.strip()
    if text.startswith("+"):
        moment = (now or datetime.now(UTC)) + timedelta(seconds=parse_duration(text[1:], "--start-at"))
    else:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise CliUsageError(f"--start-at {text!r} is not a time",
                                hint="use ISO 8601, e.g. 2026-12-01T02:00+01:00, or +2h from now") from None
        if moment.tzinfo is None:
            moment = moment.astimezone()  # this machine's time zone
    return moment.isoformat()


def parse_release(text: str) -> dict[str, Any]:
    match = RELEASE.fullmatch(text.strip())
    if not match:
        raise CliUsageError(f"{text!r} is not MODEL@VERSION", hint="e.g. edgefleet rollout create digits@3 ...")
    return {"name": match.group(1), "version": int(match.group(2))}


def parse_duration(text: str, what: str) -> float:
    match = DURATION.fullmatch(text.strip().lower())
    if not match:
        raise CliUsageError(f"{what} {text!r} is not a duration", hint="use seconds or 90s, 10m, 1h, 2d")
    return float(match.group(1)) * UNITS[match.group(2)]


def parse_target(specs: list[str]) -> dict[str, Any]:
    target: dict[str, Any] = {"device_ids": [], "tags": [], "all": False, "arch": [], "runtimes": []}
    for spec in specs:
        for part in (piece.strip() for piece in spec.split(",") if piece.strip()):
            kind, _, value = part.partition(":")
            if part == "all":
                target["all"] = True
            elif not value:
                target["device_ids"].append(part)
            elif kind == "tag":
                target["tags"].append(value)
            elif kind in ("id", "device"):
                target["device_ids"].append(value)
            elif kind == "arch":
                target["arch"].append(value)
            elif kind == "runtime":
                target["runtimes"].append(value)
            elif kind in ("min-ram", "max-ram"):
                if not value.isdigit():
                    raise CliUsageError(f"{kind} needs megabytes, got {value!r}", hint="e.g. --target min-ram:1024")
                target[kind.replace("-ram", "_ram_mb")] = int(value)
            else:
                raise CliUsageError(f"unknown target {part!r}",
                                    hint="use tag:NAME, id:DEVICE, all, arch:A, runtime:R, min-ram:MB, max-ram:MB")
    if not (target["device_ids"] or target["tags"] or target["all"]):
        raise CliUsageError("the target names no devices", hint="add --target tag:NAME, --target id:DEVICE or "
                            "--target all (arch/runtime/ram only narrow it)")
    return {key: value for key, value in target.items() if value not in ([], False)}


def parse_phases(text: str, bake_s: float, threshold: float) -> list[dict[str, Any]]:
    phases = []
    for part in (piece.strip() for piece in text.split(",") if piece.strip()):
        try:
            if part.endswith("%"):
                share = float(part[:-1]) / 100.0
                if not 0 < share <= 1:
                    raise ValueError
                phases.append({"share": share, "bake_s": bake_s, "success_threshold": threshold})
            else:
                count = int(part)
                if count < 1:
                    raise ValueError
                phases.append({"count": count, "bake_s": bake_s, "success_threshold": threshold})
        except ValueError:
            raise CliUsageError(f"phase {part!r} is neither a share (10%) nor a device count (5)",
                                hint="e.g. --phases 10%,50%,100% or --phases 1,10,100%") from None
    if not phases:
        raise CliUsageError("--phases lists no phase", hint="e.g. --phases 10%,50%,100%")
    return phases

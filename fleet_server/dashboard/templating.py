"""Jinja2 templates of the dashboard (``fleet_server/templates``) and their filters."""

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from compression.report import TABLE_COLUMNS, table_rows
from fleet_server.dashboard.auth import UiUser

PACKAGE_DIR = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = PACKAGE_DIR / "templates"
STATIC_DIR = PACKAGE_DIR / "static"

GOOD_STATES = {"succeeded", "completed", "online", "ok", "passed"}
BAD_STATES = {"failed", "rejected", "rolled_back", "aborted", "offline", "firing", "revoked", "timed_out"}


def format_timestamp(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def time_ago(moment: datetime | None, now: datetime | None = None) -> str:
    if moment is None:
        return "never"
    seconds = int(((now or datetime.now(UTC)) - moment).total_seconds())
    if seconds < 0:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def state_class(state: str | None) -> str:
    if state in GOOD_STATES:
        return "good"
    if state in BAD_STATES:
        return "bad"
    return "neutral" if state in (None, "", "none", "pending", "idle", "reference") else "busy"


templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
templates.env.filters.update(ts=format_timestamp, ago=time_ago, state_class=state_class,
                             short=lambda text: (text or "")[:12], compression_rows=table_rows)
NAV = [("/", "Overview"), ("/devices", "Devices"), ("/models", "Models"), ("/releases", "Releases"),
       ("/rollouts", "Rollouts"), ("/deployments", "Deployments"), ("/alerts", "Alerts"), ("/audit", "Audit")]
ADMIN_NAV = [("/tokens", "Tokens")]  # shown to admins only
templates.env.globals.update(ui="/ui", nav=NAV, admin_nav=ADMIN_NAV, compression_columns=TABLE_COLUMNS)
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def render(request: Request, template: str, user: UiUser | None, status_code: int = 200,
           **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, template, {"user": user, **context}, status_code=status_code,
                                      headers=SECURITY_HEADERS)

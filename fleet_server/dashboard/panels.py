"""Data for the parts of pages that come from other subsystems (rollouts,
alerts, telemetry): each function returns what its template block shows, or
None when there is nothing to show."""

from typing import Any

from sqlmodel import Session

from fleet_server.dashboard.templating import state_class


def state_bar_class(state: str) -> str:
    return state_class(state)


def overview_panels(session: Session) -> dict[str, Any]:
    return {}


def device_telemetry(session: Session, device_id: str) -> dict[str, Any] | None:
    return None

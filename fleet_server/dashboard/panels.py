"""Data for the parts of pages that come from other subsystems (alerts,
telemetry, rollouts): each function returns what its template block shows."""

from typing import Any

from sqlmodel import Session, col, func, select

from fleet_server.core.types import utcnow
from fleet_server.dashboard.telemetry_panel import TelemetryPanel, device_panel
from fleet_server.models.alert import Alert, AlertState
from fleet_server.models.rollout_api import RolloutSummary
from fleet_server.rollouts import views as rollout_views
from fleet_server.rollouts.states import ACTIVE_ROLLOUT_STATES


def firing_alerts(session: Session, subject: str | None = None, limit: int = 20) -> list[Alert]:
    statement = select(Alert).where(Alert.state == AlertState.FIRING.value)
    if subject is not None:
        statement = statement.where(Alert.subject == subject)
    return list(session.exec(statement.order_by(col(Alert.opened_at).desc()).limit(limit)).all())


def overview_panels(session: Session) -> dict[str, Any]:
    firing = session.exec(select(func.count()).select_from(Alert).where(Alert.state == AlertState.FIRING.value)).one()
    rollouts = active_rollouts(session, limit=10)
    return {
        "tiles": [{"label": "active rollouts", "value": len(rollouts), "href": "/ui/rollouts?state=running",
                   "css": "busy" if rollouts else "", "id": "active-rollouts"},
                  {"label": "open alerts", "value": firing, "href": "/ui/alerts?state=firing",
                   "css": "bad" if firing else "good", "id": "open-alerts"}],
        "alerts": firing_alerts(session, limit=5),
        "rollouts": rollouts[:5] or rollout_views.list_rollouts(session, 5),  # else the latest ones
        "rollouts_active": bool(rollouts),
    }


def active_rollouts(session: Session, limit: int = 5) -> list[RolloutSummary]:
    """Running, paused or rolling back, newest first."""
    rows = [row for state in ACTIVE_ROLLOUT_STATES for row in rollout_views.list_rollouts(session, limit, 0, state)]
    return sorted(rows, key=lambda row: -row.id)[:limit]


def device_telemetry(session: Session, device_id: str) -> TelemetryPanel | None:
    return device_panel(session, device_id, utcnow())

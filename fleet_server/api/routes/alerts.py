"""Alerts: list and show, with the state of every delivery (read-only, viewer role)."""

from typing import Annotated

from fastapi import APIRouter, Query

from fleet_server.alerting import alerts
from fleet_server.api.deps import SessionDep, ViewerDep
from fleet_server.api.errors import ERROR_RESPONSES
from fleet_server.models.alert import AlertPublic

router = APIRouter(prefix="/alerts", tags=["alerts"], responses=ERROR_RESPONSES)


@router.get("", response_model=list[AlertPublic])
def list_alerts(session: SessionDep, _viewer: ViewerDep,
                state: Annotated[str | None, Query(pattern="^(firing|resolved)$")] = None,
                kind: Annotated[str | None, Query(pattern="^(drift|latency|error_rate|offline)$")] = None,
                subject: Annotated[str | None, Query(max_length=255, description="Device id or cohort tag")] = None,
                limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[AlertPublic]:
    """Alerts, newest first."""
    return alerts.list_alerts(session, state, kind, subject, limit)


@router.get("/{alert_id}", response_model=AlertPublic)
def show_alert(alert_id: int, session: SessionDep, _viewer: ViewerDep) -> AlertPublic:
    return alerts.get_alert(session, alert_id)

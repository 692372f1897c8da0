"""Alerts (drift, latency, error rate, offline): firing first, then resolved."""

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import case
from sqlmodel import col, func, select

from fleet_server.api.deps import SessionDep
from fleet_server.dashboard.auth import UiUserDep
from fleet_server.dashboard.pagination import DEFAULT_PAGE_SIZE, Pager, clamp_page
from fleet_server.dashboard.templating import render
from fleet_server.models.alert import Alert, AlertKind, AlertState

router = APIRouter()


@router.get("/alerts", response_class=HTMLResponse)
def alert_list(request: Request, session: SessionDep, user: UiUserDep,
               state: Annotated[str, Query(pattern="^(|firing|resolved)$")] = "",
               kind: Annotated[str, Query(pattern="^(|drift|latency|error_rate|offline)$")] = "",
               subject: Annotated[str, Query(max_length=255)] = "",
               page: Annotated[int, Query(ge=1)] = 1) -> HTMLResponse:
    conditions = [condition for condition in (
        Alert.state == state if state else None,
        Alert.kind == kind if kind else None,
        Alert.subject == subject if subject else None,
    ) if condition is not None]
    total = session.exec(select(func.count()).select_from(Alert).where(*conditions)).one()
    page = clamp_page(page, DEFAULT_PAGE_SIZE, total)
    params = tuple((key, value) for key, value in (("state", state), ("kind", kind), ("subject", subject)) if value)
    pager = Pager(page, DEFAULT_PAGE_SIZE, total, params)
    firing_first = case((col(Alert.state) == AlertState.FIRING.value, 0), else_=1)
    alerts = session.exec(
        select(Alert).where(*conditions).order_by(firing_first, col(Alert.opened_at).desc(), col(Alert.id).desc())
        .offset(pager.offset).limit(DEFAULT_PAGE_SIZE)
    ).all()
    return render(request, "alerts.html", user, alerts=alerts, pager=pager,
                  filters={"state": state, "kind": kind, "subject": subject},
                  kinds=[kind.value for kind in AlertKind])

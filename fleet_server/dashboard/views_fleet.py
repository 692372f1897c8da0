"""Fleet overview, device list (filters, pages) and device detail."""

import re
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlmodel import Session, col, select

from agent.protocol.messages import FINAL_STATES
from fleet_server.api.deps import RuntimeDep, SessionDep
from fleet_server.core.validation import describe_validation_errors
from fleet_server.dashboard import panels
from fleet_server.dashboard.auth import UiAdminDep, UiOperatorDep, UiUserDep, check_csrf
from fleet_server.dashboard.charts import Bar, bar_chart
from fleet_server.dashboard.forms import split_list
from fleet_server.dashboard.pagination import DEFAULT_PAGE_SIZE, Pager, clamp_page
from fleet_server.dashboard.templating import render, state_class
from fleet_server.errors import InvalidRequestError
from fleet_server.models.common import TAG_PATTERN
from fleet_server.models.device import DeviceTag
from fleet_server.models.device_tags import DeviceTagsUpdate
from fleet_server.models.pki import DeviceRevocation
from fleet_server.services import certificates, device_query, device_tags, devices
from fleet_server.services.deployments import list_deployments
from fleet_server.services.device_history import deployment_history
from fleet_server.services.releases import list_releases

router = APIRouter()
STATES = ("none", "pending", "notified", "downloading", "verifying", "installing", "health_check", "succeeded",
          "failed", "rolled_back", "rejected")


def known_tags(session: Session) -> list[str]:
    return list(session.exec(select(DeviceTag.tag).distinct().order_by(col(DeviceTag.tag)).limit(500)).all())


@router.get("/", response_class=HTMLResponse)
def overview(request: Request, session: SessionDep, user: UiUserDep) -> HTMLResponse:
    summary = device_query.fleet_summary(session)
    recent = list_deployments(session, limit=8)
    active = [d for d in recent if any(state not in FINAL_STATES for state in d.states)]
    models_chart = bar_chart([Bar(f"{m.name} v{m.version}", m.devices, note=f"of {summary.total}")
                              for m in summary.models[:10]], "Model versions in use (devices)",
                             max_value=summary.total or 1)
    states_chart = bar_chart([Bar(state, count, css_class=f"bar {state_class(state)}")
                              for state, count in sorted(summary.states.items(), key=lambda item: -item[1])],
                             "Latest deployment state (devices)", max_value=summary.total or 1)
    return render(request, "overview.html", user, summary=summary, recent=recent, active=active,
                  models_chart=models_chart, states_chart=states_chart,
                  extra_panels=panels.overview_panels(session))


@router.get("/devices", response_class=HTMLResponse)
def device_list(
    request: Request, session: SessionDep, user: UiUserDep,
    tag: Annotated[str, Query(max_length=64)] = "",
    model: Annotated[str, Query(max_length=160)] = "",
    state: Annotated[str, Query(max_length=32)] = "",
    online: Annotated[str, Query(pattern="^(|online|offline)$")] = "",
    q: Annotated[str, Query(max_length=63)] = "",
    page: Annotated[int, Query(ge=1)] = 1,
) -> HTMLResponse:
    tag = tag if re.fullmatch(TAG_PATTERN, tag) else ""
    device_filter = device_query.DeviceFilter(tag=tag or None, online={"online": True, "offline": False}.get(online),
                                              state=state or None, model=model or None, search=q or None)
    size = DEFAULT_PAGE_SIZE
    result = device_query.query_devices(session, device_filter, size, (page - 1) * size)
    if result.total and not result.devices:  # a page past the end: show the last one
        page = clamp_page(page, size, result.total)
        result = device_query.query_devices(session, device_filter, size, (page - 1) * size)
    params = tuple((key, value) for key, value in (("tag", tag), ("model", model), ("state", state),
                                                   ("online", online), ("q", q)) if value)
    models = [f"{release.name}:{release.version}" for release in list_releases(session)]  # what devices can run
    page_ids = [device.device_id for device in result.devices]
    revoked = set(session.exec(select(DeviceRevocation.device_id).where(
        col(DeviceRevocation.device_id).in_(page_ids))).all()) if page_ids else set()
    return render(request, "devices.html", user, devices=result.devices, pager=Pager(page, size, result.total, params),
                  filters={"tag": tag, "model": model, "state": state, "online": online, "q": q},
                  tags=known_tags(session), models=models, states=STATES, revoked=revoked)


@router.get("/devices/{device_id}", response_class=HTMLResponse)
def device_detail(request: Request, device_id: str, session: SessionDep, user: UiUserDep) -> HTMLResponse:
    device = devices.device_public(session, device_id)
    history = deployment_history(session, device_id)
    return render(request, "device.html", user, device=device, history=history,
                  telemetry=panels.device_telemetry(session, device_id),
                  alerts=panels.firing_alerts(session, subject=device_id),
                  revocation=session.get(DeviceRevocation, device_id))


@router.post("/devices/{device_id}/tags")
def device_tags_change(request: Request, device_id: str, session: SessionDep, user: UiOperatorDep,
                       csrf_token: Annotated[str, Form(max_length=256)] = "",
                       add: Annotated[str, Form(max_length=2000)] = "",
                       remove: Annotated[str, Form(max_length=2000)] = "") -> Response:
    """Add and remove tags (what ``PATCH /api/v1/devices/{id}/tags`` does)."""
    check_csrf(request, user, csrf_token)
    try:
        change = DeviceTagsUpdate(add=split_list(add), remove=split_list(remove))
    except ValidationError as exc:
        raise InvalidRequestError(describe_validation_errors(exc.errors())) from None
    device_tags.update_tags(session, device_id, change.add, change.remove)
    return RedirectResponse(f"/ui/devices/{quote(device_id)}", status_code=303)


@router.post("/devices/{device_id}/revoke")
def device_revoke(request: Request, device_id: str, runtime: RuntimeDep, session: SessionDep, user: UiAdminDep,
                  csrf_token: Annotated[str, Form(max_length=256)] = "",
                  reason: Annotated[str, Form(max_length=500)] = "") -> Response:
    """Revoke the device (admin): what ``POST /api/v1/devices/{id}/revoke`` does."""
    check_csrf(request, user, csrf_token)
    if runtime.ca is None:
        raise InvalidRequestError("this server has no fleet CA, so it cannot revoke device certificates")
    certificates.revoke(session, runtime.ca, device_id, user.actor, reason.strip())
    return RedirectResponse(f"/ui/devices/{quote(device_id)}", status_code=303)

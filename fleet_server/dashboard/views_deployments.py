"""Deployments: the list and one deployment's live per-device progress."""

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from sqlmodel import func, select

from agent.protocol.messages import FINAL_STATES
from fleet_server.api.deps import SessionDep
from fleet_server.dashboard.auth import UiUserDep
from fleet_server.dashboard.charts import Bar, stacked_bar
from fleet_server.dashboard.pagination import DEFAULT_PAGE_SIZE, Pager, clamp_page
from fleet_server.dashboard.templating import render, state_class
from fleet_server.models.deployment import Deployment, DeploymentPublic
from fleet_server.services import deployments

router = APIRouter()
STATE_ORDER = ("succeeded", "health_check", "installing", "verifying", "downloading", "notified", "pending",
               "failed", "rolled_back", "rejected")


def progress_chart(states: dict[str, int]) -> object:
    ordered = sorted(states.items(), key=lambda item: STATE_ORDER.index(item[0]) if item[0] in STATE_ORDER else 99)
    return stacked_bar([Bar(state, count, css_class=f"seg {state_class(state)}") for state, count in ordered],
                       "devices per state")


def is_final(deployment: DeploymentPublic) -> bool:
    return all(target.state in FINAL_STATES for target in deployment.targets)


@router.get("/deployments", response_class=HTMLResponse)
def deployment_list(request: Request, session: SessionDep, user: UiUserDep,
                    page: Annotated[int, Query(ge=1)] = 1) -> HTMLResponse:
    total = session.exec(select(func.count()).select_from(Deployment)).one()
    page = clamp_page(page, DEFAULT_PAGE_SIZE, total)
    pager = Pager(page, DEFAULT_PAGE_SIZE, total)
    rows = deployments.list_deployments(session, DEFAULT_PAGE_SIZE, pager.offset)
    return render(request, "deployments.html", user, deployments=rows, pager=pager,
                  charts={row.id: progress_chart(row.states) for row in rows})


@router.get("/deployments/{deployment_id}", response_class=HTMLResponse)
def deployment_detail(request: Request, deployment_id: int, session: SessionDep, user: UiUserDep) -> HTMLResponse:
    deployment = deployments.deployment_public(session, deployment_id)
    return render(request, "deployment.html", user, deployment=deployment, chart=progress_chart(deployment.states),
                  final=is_final(deployment))


@router.get("/deployments/{deployment_id}/progress", response_class=HTMLResponse)
def deployment_progress(request: Request, deployment_id: int, session: SessionDep, user: UiUserDep) -> HTMLResponse:
    """The live part of the deployment page (polled by dashboard.js until every device is final)."""
    deployment = deployments.deployment_public(session, deployment_id)
    return render(request, "_deployment_progress.html", user, deployment=deployment,
                  chart=progress_chart(deployment.states), final=is_final(deployment))

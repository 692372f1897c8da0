"""Deployments: send a release to devices (by ids and/or tags), list and show per-device state."""

from typing import Annotated

from fastapi import APIRouter, Query, status

from fleet_server.api.deps import OperatorDep, RuntimeDep, SessionDep, ViewerDep
from fleet_server.api.errors import ERROR_RESPONSES
from fleet_server.models.deployment import DeploymentCreate, DeploymentPublic, DeploymentSummary
from fleet_server.services import deployments

router = APIRouter(prefix="/deployments", tags=["deployments"], responses=ERROR_RESPONSES)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=DeploymentPublic)
def create_deployment(body: DeploymentCreate, runtime: RuntimeDep, session: SessionDep,
                      caller: OperatorDep) -> DeploymentPublic:
    """Sign one directive per device (next sequence number) and publish it on the device's directive topic."""
    deployment, outgoing = deployments.create_deployment(session, runtime.keyring, body,
                                                         runtime.settings.directive_ttl_s, caller.name)
    runtime.publisher.publish(outgoing)
    assert deployment.id is not None
    return deployments.deployment_public(session, deployment.id)


@router.get("", response_model=list[DeploymentSummary])
def list_deployments(session: SessionDep, _viewer: ViewerDep,
                     limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                     offset: Annotated[int, Query(ge=0)] = 0) -> list[DeploymentSummary]:
    return deployments.list_deployments(session, limit, offset)


@router.get("/{deployment_id}", response_model=DeploymentPublic)
def show_deployment(deployment_id: int, session: SessionDep, _viewer: ViewerDep) -> DeploymentPublic:
    return deployments.deployment_public(session, deployment_id)

"""Model registry pages (versions, lineage) and releases, with the deploy form."""

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from fleet_server.api.deps import RuntimeDep, SessionDep
from fleet_server.core.validation import describe_validation_errors
from fleet_server.dashboard.auth import UiOperatorDep, UiUserDep, check_csrf
from fleet_server.dashboard.forms import split_list
from fleet_server.dashboard.templating import render
from fleet_server.errors import InvalidRequestError
from fleet_server.models.deployment import DeploymentCreate
from fleet_server.services import deployments, registry, releases

router = APIRouter()


@router.get("/models", response_class=HTMLResponse)
def model_list(request: Request, session: SessionDep, user: UiUserDep) -> HTMLResponse:
    return render(request, "models.html", user, models=registry.list_models(session))


@router.get("/models/{name}", response_class=HTMLResponse)
def model_detail(request: Request, name: str, session: SessionDep, user: UiUserDep) -> HTMLResponse:
    model = registry.model_public(session, name)
    versions = list(reversed(registry.list_versions(session, name)))
    released = {summary.version: releases.release_public(releases.get_release(session, name, summary.version))
                for summary in releases.list_releases(session, name)}  # with the compression reports
    return render(request, "model.html", user, model=model, versions=versions, released=released)


@router.get("/releases", response_class=HTMLResponse)
def release_list(request: Request, session: SessionDep, user: UiUserDep) -> HTMLResponse:
    return render(request, "releases.html", user, releases=releases.list_releases(session))


@router.get("/releases/{name}/{version}", response_class=HTMLResponse)
def release_detail(request: Request, name: str, version: int, session: SessionDep, user: UiUserDep) -> HTMLResponse:
    release = releases.release_public(releases.get_release(session, name, version))
    model_version = registry.version_detail(session, name, version)
    return render(request, "release.html", user, release=release, model_version=model_version)


@router.post("/releases/{name}/{version}/deploy")
async def deploy_release(request: Request, name: str, version: int, runtime: RuntimeDep, session: SessionDep,
                         user: UiOperatorDep, csrf_token: Annotated[str, Form(max_length=256)] = "",
                         tags: Annotated[str, Form(max_length=4000)] = "",
                         device_ids: Annotated[str, Form(max_length=200_000)] = "") -> Response:
    """Send the release to the devices with these tags and/or ids (the same as ``POST /api/v1/deployments``)."""
    check_csrf(request, user, csrf_token)
    try:
        body = DeploymentCreate.model_validate({"release": {"name": name, "version": version},
                                                "tags": split_list(tags), "device_ids": split_list(device_ids)})
    except ValidationError as exc:
        raise InvalidRequestError(describe_validation_errors(exc.errors())) from None

    def create() -> int:
        deployment, outgoing = deployments.create_deployment(session, runtime.keyring, body,
                                                             runtime.settings.directive_ttl_s, actor=user.actor)
        runtime.publisher.publish(outgoing)
        assert deployment.id is not None
        return deployment.id

    deployment_id = await run_in_threadpool(create)
    return RedirectResponse(f"/ui/deployments/{deployment_id}", status_code=303)

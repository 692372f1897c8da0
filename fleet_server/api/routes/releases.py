"""Signed releases: sign a model version with the release key, list and fetch them."""

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from fleet_server.api.deps import OperatorDep, RuntimeDep, SessionDep, ViewerDep
from fleet_server.api.errors import ERROR_RESPONSES
from fleet_server.models.release import ReleaseCreate, ReleasePublic, ReleaseSummary
from fleet_server.services import releases

router = APIRouter(prefix="/releases", tags=["releases"], responses=ERROR_RESPONSES)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ReleasePublic)
def create_release(body: ReleaseCreate, runtime: RuntimeDep, session: SessionDep,
                   caller: OperatorDep) -> ReleasePublic:
    """Sign ``model`` version ``version`` into a release (409 if the release key is offline or it exists)."""
    ttl_days = body.expires_days or runtime.settings.release_ttl_days
    record = releases.create_release(session, runtime.keyring, body.model, body.version, ttl_days, caller.name)
    return releases.release_public(record)


@router.get("", response_model=list[ReleaseSummary])
def list_releases(session: SessionDep, _viewer: ViewerDep,
                  name: Annotated[str | None, Query(max_length=128)] = None) -> list[ReleaseSummary]:
    return releases.list_releases(session, name)


@router.get("/{name}/{version}", response_model=ReleasePublic)
def show_release(name: str, version: int, session: SessionDep, _viewer: ViewerDep) -> ReleasePublic:
    """The release metadata and its signed envelope exactly as stored."""
    return releases.release_public(releases.get_release(session, name, version))


@router.get("/{name}/{version}/envelope", response_class=Response,
            responses={200: {"content": {"application/json": {}},
                             "description": "The canonical bytes of the signed release envelope."}})
def release_envelope(name: str, version: int, session: SessionDep, _viewer: ViewerDep) -> Response:
    record = releases.get_release(session, name, version)
    return Response(record.envelope.encode("utf-8"), media_type="application/json",
                    headers={"ETag": f'"{record.sha256}"'})

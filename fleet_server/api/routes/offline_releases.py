"""Releases signed offline: the request file to sign, and the signed envelope coming back."""

from typing import Annotated, Any

from fastapi import APIRouter, Query, status
from pydantic import BaseModel

from fleet_server.api.deps import OperatorDep, RuntimeDep, SessionDep, ViewerDep
from fleet_server.api.errors import ERROR_RESPONSES
from fleet_server.models.release import MAX_RELEASE_TTL_DAYS, ReleasePublic
from fleet_server.services import offline_release, releases

router = APIRouter(tags=["releases"], responses=ERROR_RESPONSES)


class SignedReleaseCreate(BaseModel):
    envelope: dict[str, Any]  # {"signed": <release>, "signatures": [{"keyid", "sig"}, ...]}


@router.get("/models/{name}/versions/{version}/release-request", response_model=dict[str, Any])
def release_request(name: str, version: int, runtime: RuntimeDep, session: SessionDep, _viewer: ViewerDep,
                    expires_days: Annotated[int | None, Query(ge=1, le=MAX_RELEASE_TTL_DAYS)] = None,
                    ) -> dict[str, Any]:
    """The unsigned release of a model version, to sign with ``edgefleet release sign`` where the key is kept."""
    ttl_days = expires_days or runtime.settings.release_ttl_days
    return offline_release.release_request(session, runtime.keyring, name, version, ttl_days)


@router.post("/releases/signed", status_code=status.HTTP_201_CREATED, response_model=ReleasePublic)
def accept_signed_release(body: SignedReleaseCreate, runtime: RuntimeDep, session: SessionDep,
                          caller: OperatorDep) -> ReleasePublic:
    """Store a release signed offline: it must verify against the root's release role (422 if not)."""
    record = offline_release.accept_signed(session, runtime.keyring, runtime.artifacts, body.envelope, caller.name)
    return releases.release_public(record)

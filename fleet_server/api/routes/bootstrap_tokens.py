"""Single-use, expiring bootstrap tokens that enroll devices (admin only)."""

from typing import Annotated

from fastapi import APIRouter, Query, status

from fleet_server.api.deps import AdminDep, SessionDep
from fleet_server.api.errors import ERROR_RESPONSES
from fleet_server.models.tokens import BootstrapTokenCreate, BootstrapTokenIssued, BootstrapTokenPublic
from fleet_server.services import bootstrap_tokens

router = APIRouter(prefix="/bootstrap-tokens", tags=["devices"], responses=ERROR_RESPONSES)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=BootstrapTokenIssued)
def issue_bootstrap_token(body: BootstrapTokenCreate, session: SessionDep, caller: AdminDep) -> BootstrapTokenIssued:
    """A token that enrolls one device (optionally only ``device_id``) before it expires; shown once."""
    return bootstrap_tokens.issue(session, body, caller.name)


@router.get("", response_model=list[BootstrapTokenPublic])
def list_bootstrap_tokens(session: SessionDep, _admin: AdminDep,
                          include_inactive: Annotated[bool, Query(description="Also used and expired")] = False,
                          ) -> list[BootstrapTokenPublic]:
    return bootstrap_tokens.list_tokens(session, include_inactive)


@router.delete("/{token_id}", response_model=BootstrapTokenPublic)
def revoke_bootstrap_token(token_id: int, session: SessionDep, caller: AdminDep) -> BootstrapTokenPublic:
    """Make an unused bootstrap token unusable."""
    return bootstrap_tokens.revoke(session, token_id, caller.name)

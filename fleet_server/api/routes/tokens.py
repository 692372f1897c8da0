"""Operator API tokens (admin only): issue, list, revoke."""

from typing import Annotated

from fastapi import APIRouter, Query, status

from fleet_server.api.deps import AdminDep, SessionDep
from fleet_server.api.errors import ERROR_RESPONSES
from fleet_server.models.tokens import ApiTokenCreate, ApiTokenIssued, ApiTokenPublic
from fleet_server.services import api_tokens

router = APIRouter(prefix="/tokens", tags=["tokens"], responses=ERROR_RESPONSES)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ApiTokenIssued)
def issue_token(body: ApiTokenCreate, session: SessionDep, caller: AdminDep) -> ApiTokenIssued:
    """Issue a token with a role; the secret is in this answer only (the server keeps its hash)."""
    return api_tokens.issue(session, body, caller.name)


@router.get("", response_model=list[ApiTokenPublic])
def list_tokens(session: SessionDep, _admin: AdminDep,
                include_inactive: Annotated[bool, Query(description="Also expired and revoked tokens")] = False,
                ) -> list[ApiTokenPublic]:
    return api_tokens.list_tokens(session, include_inactive)


@router.delete("/{token_id}", response_model=ApiTokenPublic)
def revoke_token(token_id: int, session: SessionDep, caller: AdminDep) -> ApiTokenPublic:
    """Revoke a token: it is refused from the next request on."""
    return api_tokens.revoke(session, token_id, caller.name)

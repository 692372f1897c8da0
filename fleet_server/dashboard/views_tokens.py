"""Operator API tokens (admin only): the list (active ones, or all with the
expired and revoked), the issue form, whose answer shows the new secret once,
and revoke buttons (CSRF-checked). The logic is ``services.api_tokens``, as for
``/api/v1/tokens``, so every issue and revocation is in the audit trail under
the dashboard user."""

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError
from sqlmodel import Session

from fleet_server.api.deps import SessionDep
from fleet_server.dashboard.auth import UiAdminDep, UiUser, check_csrf
from fleet_server.dashboard.templating import render
from fleet_server.errors import InvalidRequestError
from fleet_server.models.tokens import MAX_TOKEN_DAYS, ApiTokenCreate, ApiTokenIssued, ApiTokenPublic, Role
from fleet_server.services import api_tokens

router = APIRouter()
ROLES = [role.value for role in Role]
DEFAULT_FORM = {"name": "", "role": Role.VIEWER.value, "expires_days": "90"}
FIELD_RULES = {
    "name": "name: 1-64 letters, digits, spaces or . _ @ : - (starting with a letter or digit)",
    "role": f"role: choose one of {', '.join(ROLES)}",
    "expires_days": f"expires after: a whole number of days from 1 to {MAX_TOKEN_DAYS}, or empty for never",
}


class TokenFormError(InvalidRequestError):
    """The issue-token form has a value that cannot be used."""

    hint = "fix the form and submit it again"


def token_state(token: ApiTokenPublic) -> str:
    """``active``, ``expired`` or ``revoked`` (a revoked token stays revoked after its expiry)."""
    if token.revoked_at is not None:
        return "revoked"
    return "active" if token.active else "expired"


def token_request(name: str, role: str, expires_days: str) -> ApiTokenCreate:
    """The form's text as an ``ApiTokenCreate`` (empty expiry: never); the error names the first bad field."""
    days_text = expires_days.strip()
    try:
        days = int(days_text) if days_text else None
    except ValueError:
        raise TokenFormError(FIELD_RULES["expires_days"]) from None
    try:
        return ApiTokenCreate.model_validate({"name": name.strip(), "role": role.strip(), "expires_days": days})
    except ValidationError as exc:
        field = str(exc.errors()[0]["loc"][0]) if exc.errors() and exc.errors()[0]["loc"] else ""
        raise TokenFormError(FIELD_RULES.get(field, "the form has an invalid value")) from None


def _page(request: Request, session: Session, user: UiUser, show: str, status_code: int = 200,
          issued: ApiTokenIssued | None = None, error: str | None = None,
          form: dict[str, str] | None = None) -> HTMLResponse:
    tokens = api_tokens.list_tokens(session, include_inactive=show == "all")
    return render(request, "tokens.html", user, status_code=status_code, show=show, roles=ROLES,
                  tokens=[(token, token_state(token)) for token in tokens], issued=issued, error=error,
                  form=form or DEFAULT_FORM, max_days=MAX_TOKEN_DAYS)


@router.get("/tokens", response_class=HTMLResponse)
def token_list(request: Request, session: SessionDep, user: UiAdminDep,
               show: Annotated[str, Query(pattern="^(|active|all)$")] = "") -> HTMLResponse:
    return _page(request, session, user, show or "active")


@router.post("/tokens", response_class=HTMLResponse)
def token_issue(request: Request, session: SessionDep, user: UiAdminDep,
                csrf_token: Annotated[str, Form(max_length=256)] = "",
                name: Annotated[str, Form(max_length=256)] = "",
                role: Annotated[str, Form(max_length=32)] = "",
                expires_days: Annotated[str, Form(max_length=32)] = "") -> HTMLResponse:
    """Issue a token (what ``POST /api/v1/tokens`` does); its secret is on this answer only, never in a URL."""
    check_csrf(request, user, csrf_token)
    try:
        body = token_request(name, role, expires_days)
    except TokenFormError as exc:
        form = {"name": name, "role": role, "expires_days": expires_days}
        return _page(request, session, user, "active", status_code=422, error=str(exc), form=form)
    issued = api_tokens.issue(session, body, user.actor)
    return _page(request, session, user, "active", issued=issued)


@router.post("/tokens/{token_id}/revoke")
def token_revoke(request: Request, token_id: int, session: SessionDep, user: UiAdminDep,
                 csrf_token: Annotated[str, Form(max_length=256)] = "",
                 show: Annotated[str, Form(pattern="^(|active|all)$")] = "") -> RedirectResponse:
    """Revoke a token (``DELETE /api/v1/tokens/{id}``): the API and dashboard refuse it from the next request."""
    check_csrf(request, user, csrf_token)
    api_tokens.revoke(session, token_id, user.actor)
    return RedirectResponse("/ui/tokens" + ("?show=all" if show == "all" else ""), status_code=303)

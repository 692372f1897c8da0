"""Log in with an API token (sets the session cookie) and log out."""

import logging
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from fleet_server.api.deps import RuntimeDep, SessionDep
from fleet_server.core.security import hash_token
from fleet_server.dashboard.auth import (
    COOKIE_NAME,
    COOKIE_PATH,
    UiUserDep,
    authenticate_token,
    check_csrf,
    check_same_origin,
    session_secret,
)
from fleet_server.dashboard.session import SESSION_TTL_S, encode_session, new_session
from fleet_server.dashboard.templating import render

logger = logging.getLogger(__name__)
router = APIRouter()


def safe_next(target: str | None) -> str:
    """Only redirect inside the dashboard (no open redirect to another site)."""
    if target and target.startswith("/ui") and not target.startswith("//") and "\\" not in target:
        return target
    return "/ui/"


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str | None = None) -> HTMLResponse:
    return render(request, "login.html", None, next=safe_next(next), error=None)


@router.post("/login", response_class=HTMLResponse)
def login(request: Request, runtime: RuntimeDep, session: SessionDep, token: Annotated[str, Form(max_length=512)],
          next: Annotated[str, Form(max_length=2048)] = "/ui/") -> Response:
    check_same_origin(request)
    principal = authenticate_token(runtime, session, token.strip())
    if principal is None:
        logger.info("dashboard event=login_refused client=%s", request.client.host if request.client else "?")
        return render(request, "login.html", None, status_code=401, next=safe_next(next),
                      error="That token is not valid (or was revoked).")
    ui_session = new_session(principal.actor, principal.role, hash_token(token.strip()))
    response = RedirectResponse(safe_next(next), status_code=303)
    response.set_cookie(COOKIE_NAME, encode_session(ui_session, session_secret(request, runtime)),
                        max_age=SESSION_TTL_S, path=COOKIE_PATH, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
    logger.info("dashboard event=login actor=%s role=%s", principal.actor, principal.role)
    return response


@router.post("/logout")
def logout(request: Request, user: UiUserDep,
           csrf_token: Annotated[str, Form(max_length=256)] = "") -> Response:
    check_csrf(request, user, csrf_token)
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(COOKIE_NAME, path=COOKIE_PATH, httponly=True, samesite="strict")
    return response

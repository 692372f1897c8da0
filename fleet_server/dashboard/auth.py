"""Who is using the dashboard: API-token login, the session cookie, roles, CSRF.

The dashboard accepts the same tokens as the API and applies the same roles:
viewers read, operators change rollouts and deployments, admins everything.
"""

import hmac
import threading
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request
from sqlmodel import Session, select

from fleet_server.api.deps import ADMIN_ACTOR, RuntimeDep, SessionDep
from fleet_server.core.security import hash_token, load_or_create_secret, tokens_equal
from fleet_server.dashboard.session import UiSession, csrf_token, decode_session
from fleet_server.errors import AuthenticationError, PermissionDeniedError
from fleet_server.models.tokens import ApiToken, Role
from fleet_server.runtime import ServerRuntime
from fleet_server.services import api_tokens

COOKIE_NAME = "edgefleet_session"
COOKIE_PATH = "/ui"
_secret_lock = threading.Lock()


class LoginRequiredError(AuthenticationError):
    """A dashboard page was requested without a valid session (redirects to the login page)."""


class CsrfError(PermissionDeniedError):
    """A dashboard form arrived without the session's CSRF token or from another origin."""

    hint = "reload the page and submit the form again"


@dataclass(frozen=True)
class Principal:
    actor: str
    role: str


@dataclass(frozen=True)
class UiUser:
    actor: str
    role: str
    csrf: str

    def can(self, role: str) -> bool:
        return Role(self.role).allows(Role(role))


def session_secret(request: Request, runtime: ServerRuntime) -> str:
    secret = getattr(request.app.state, "dashboard_secret", None)
    if secret is None:
        with _secret_lock:
            secret = getattr(request.app.state, "dashboard_secret", None)
            if secret is None:
                secret = runtime.settings.session_secret or load_or_create_secret(
                    runtime.settings.resolved_data_dir / "session_secret", "dashboard_session")
                request.app.state.dashboard_secret = secret
    return secret


def authenticate_token(runtime: ServerRuntime, session: Session, token: str) -> Principal | None:
    """The operator holding ``token`` (the same tokens the API accepts: admin token or API token), or None."""
    if token and tokens_equal(token, runtime.admin_token):
        return Principal(ADMIN_ACTOR, Role.ADMIN.value)
    api_token = api_tokens.authenticate(session, token)
    return None if api_token is None else Principal(api_tokens.actor_name(api_token), api_token.role)


def principal_for_hash(runtime: ServerRuntime, session: Session, token_hash: str) -> Principal | None:
    """Re-check a logged-in session: is the token it was opened with still valid, and with which role?"""
    if tokens_equal(token_hash, hash_token(runtime.admin_token)):
        return Principal(ADMIN_ACTOR, Role.ADMIN.value)
    api_token = session.exec(select(ApiToken).where(ApiToken.token_hash == token_hash)).first()
    if api_token is None or not api_tokens.is_active(api_token):
        return None
    return Principal(api_tokens.actor_name(api_token), api_token.role)


def current_session(request: Request, runtime: RuntimeDep, session: SessionDep) -> UiUser:
    secret = session_secret(request, runtime)
    ui_session: UiSession | None = decode_session(request.cookies.get(COOKIE_NAME), secret)
    principal = None if ui_session is None else principal_for_hash(runtime, session, ui_session.token_hash)
    if ui_session is None or principal is None:
        raise LoginRequiredError("log in to use the dashboard")
    return UiUser(principal.actor, principal.role, csrf_token(ui_session, secret))


UiUserDep = Annotated[UiUser, Depends(current_session)]


def require_ui_operator(user: UiUserDep) -> UiUser:
    if not user.can("operator"):
        raise PermissionDeniedError(f"this needs the operator role; you are logged in as a {user.role}")
    return user


UiOperatorDep = Annotated[UiUser, Depends(require_ui_operator)]


def require_ui_admin(user: UiUserDep) -> UiUser:
    if not user.can("admin"):
        raise PermissionDeniedError(f"this needs the admin role; you are logged in as a {user.role}")
    return user


UiAdminDep = Annotated[UiUser, Depends(require_ui_admin)]


def check_same_origin(request: Request) -> None:
    """Browsers send Origin on form posts; one naming another site is refused (defence in depth)."""
    origin = request.headers.get("origin")
    if origin is None:
        return
    if urlsplit(origin).netloc != request.headers.get("host", request.url.netloc):
        raise CsrfError("the form was posted from another origin")


def check_csrf(request: Request, user: UiUser, given: str | None) -> None:
    """State-changing forms carry the session's CSRF token (and come from this origin)."""
    check_same_origin(request)
    if not given or not hmac.compare_digest(given, user.csrf):
        raise CsrfError("missing or wrong CSRF token")

"""FastAPI dependencies as ``Annotated`` aliases: runtime, settings, database
session, and who is calling (operator token or device credential).

Every route declares who may call it with one of these aliases:
``PublicDep`` (no token), ``CallerDep``/``ArtifactReaderDep`` (any valid token),
``DeviceDep`` (an enrolled, unrevoked device), ``ViewerDep`` (read-only
operator), ``OperatorDep`` (models, releases, deployments and rollouts) and
``AdminDep`` (keys, tokens, devices' identity, audit). Operator roles are
ordered: admin > operator > viewer. ``fleet_server.api.roles`` reads these
declarations into the OpenAPI schema (``x-edgefleet-role``).
"""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session

from fleet_server.core.config import Settings
from fleet_server.core.security import tokens_equal
from fleet_server.errors import AuthenticationError, PermissionDeniedError
from fleet_server.models.device import Device
from fleet_server.models.tokens import Role
from fleet_server.runtime import ServerRuntime
from fleet_server.services import api_tokens, devices

bearer_scheme = HTTPBearer(
    auto_error=False,
    description="Operators: an API token (roles admin, operator, viewer) or the bootstrap admin token. "
    "Devices: the credential returned at enrollment.",
)


def get_runtime(request: Request) -> ServerRuntime:
    return request.app.state.runtime


RuntimeDep = Annotated[ServerRuntime, Depends(get_runtime)]


def get_settings(runtime: RuntimeDep) -> Settings:
    return runtime.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_session(runtime: RuntimeDep) -> Iterator[Session]:
    with Session(runtime.engine, expire_on_commit=False) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
CredentialsDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]


ADMIN_ACTOR = "admin"  # the bootstrap admin token (EDGEFLEET_ADMIN_TOKEN / <data dir>/admin_token)


@dataclass(frozen=True)
class Caller:
    operator: bool  # an operator token (any role), not a device credential
    device: Device | None = None
    role: Role | None = None  # the operator's role
    actor: str = ""  # who the audit trail names: "admin", "token:<name>#<id>"

    @property
    def name(self) -> str:
        if self.operator:
            return self.actor or "operator"
        return f"device:{self.device.device_id if self.device else '?'}"


def identify_caller(runtime: RuntimeDep, session: SessionDep, credentials: CredentialsDep) -> Caller:
    if credentials is None or not credentials.credentials:
        raise AuthenticationError("missing bearer token: send 'Authorization: Bearer <token>'")
    token = credentials.credentials
    if tokens_equal(token, runtime.admin_token):
        return Caller(operator=True, role=Role.ADMIN, actor=ADMIN_ACTOR)
    api_token = api_tokens.authenticate(session, token)
    if api_token is not None:
        return Caller(operator=True, role=Role(api_token.role), actor=api_tokens.actor_name(api_token))
    device = devices.authenticate_device(session, token)
    if device is None:
        raise AuthenticationError("invalid, expired or revoked bearer token")
    return Caller(operator=False, device=device)


CallerDep = Annotated[Caller, Depends(identify_caller)]


def _require_role(caller: Caller, needed: Role) -> Caller:
    if not caller.operator or caller.role is None:
        raise PermissionDeniedError(f"this endpoint needs an operator token with role {needed} or higher, "
                                    "not a device credential")
    if not caller.role.allows(needed):
        raise PermissionDeniedError(f"this endpoint needs role {needed} or higher; this token has role {caller.role}")
    return caller


def require_viewer(caller: CallerDep) -> Caller:
    return _require_role(caller, Role.VIEWER)


def require_operator(caller: CallerDep) -> Caller:
    return _require_role(caller, Role.OPERATOR)


def require_admin(caller: CallerDep) -> Caller:
    return _require_role(caller, Role.ADMIN)


def public_endpoint() -> None:
    """Marks a route that needs no token (health, enrollment with its bootstrap token, CA and CRL)."""


ViewerDep = Annotated[Caller, Depends(require_viewer)]
OperatorDep = Annotated[Caller, Depends(require_operator)]
AdminDep = Annotated[Caller, Depends(require_admin)]
PublicDep = Annotated[None, Depends(public_endpoint)]


def require_device(caller: CallerDep) -> Device:
    if caller.device is None:
        raise PermissionDeniedError("this endpoint is for enrolled devices")
    return caller.device


DeviceDep = Annotated[Device, Depends(require_device)]
ArtifactReaderDep = CallerDep  # operators and devices may both download artifacts

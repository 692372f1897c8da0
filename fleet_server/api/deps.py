"""FastAPI dependencies as ``Annotated`` aliases: runtime, settings, database
session, and who is calling (operator token or device credential)."""

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
from fleet_server.runtime import ServerRuntime
from fleet_server.services import devices

bearer_scheme = HTTPBearer(
    auto_error=False,
    description="Operators: the admin token. Devices: the credential returned at enrollment.",
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


@dataclass(frozen=True)
class Caller:
    operator: bool
    device: Device | None = None

    @property
    def name(self) -> str:
        return "operator" if self.operator else f"device:{self.device.device_id if self.device else '?'}"


def identify_caller(runtime: RuntimeDep, session: SessionDep, credentials: CredentialsDep) -> Caller:
    if credentials is None or not credentials.credentials:
        raise AuthenticationError("missing bearer token: send 'Authorization: Bearer <token>'")
    token = credentials.credentials
    if tokens_equal(token, runtime.admin_token):
        return Caller(operator=True)
    device = devices.authenticate_device(session, token)
    if device is None:
        raise AuthenticationError("invalid bearer token")
    return Caller(operator=False, device=device)


CallerDep = Annotated[Caller, Depends(identify_caller)]


def require_operator(caller: CallerDep) -> Caller:
    if not caller.operator:
        raise PermissionDeniedError("this endpoint needs the operator (admin) token, not a device credential")
    return caller


OperatorDep = Annotated[Caller, Depends(require_operator)]


def require_device(caller: CallerDep) -> Device:
    if caller.device is None:
        raise PermissionDeniedError("this endpoint is for enrolled devices")
    return caller.device


DeviceDep = Annotated[Device, Depends(require_device)]
ArtifactReaderDep = CallerDep  # operators and devices may both download artifacts

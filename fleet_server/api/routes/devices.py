"""Devices: enrollment with the bootstrap token, list and show."""

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from fleet_server.api.deps import OperatorDep, RuntimeDep, SessionDep
from fleet_server.api.errors import ERROR_RESPONSES
from fleet_server.models.common import TAG_PATTERN
from fleet_server.models.device import DeviceEnroll, DevicePublic, EnrollmentPublic
from fleet_server.services import devices

router = APIRouter(prefix="/devices", tags=["devices"], responses=ERROR_RESPONSES)


@router.post("/enroll", status_code=status.HTTP_201_CREATED, response_model=EnrollmentPublic,
             responses={200: {"model": EnrollmentPublic, "description": "Re-enrolled: the credential was rotated."}})
def enroll(body: DeviceEnroll, request: Request, response: Response, runtime: RuntimeDep,
           session: SessionDep) -> EnrollmentPublic:
    """Enroll a device (201) or re-enroll it (200, new credential). Authenticated by the bootstrap token."""
    enrollment = devices.enroll_device(session, body, runtime.bootstrap_token)
    if not enrollment.created:
        response.status_code = status.HTTP_200_OK
    return EnrollmentPublic(
        device_id=enrollment.device.device_id,
        credential=enrollment.credential,
        mqtt_url=runtime.device_mqtt_url(request.url.hostname),
        root=runtime.keyring.root_envelope,
        artifact_base_url=runtime.settings.artifact_base_url,
    )


@router.get("", response_model=list[DevicePublic])
def list_devices(session: SessionDep, _operator: OperatorDep,
                 tag: Annotated[str | None, Query(pattern=f"^{TAG_PATTERN}$")] = None) -> list[DevicePublic]:
    return devices.list_devices(session, tag)


@router.get("/{device_id}", response_model=DevicePublic)
def show_device(device_id: str, session: SessionDep, _operator: OperatorDep) -> DevicePublic:
    return devices.device_public(session, device_id)

"""Devices: enrollment with the bootstrap token, list (filters, pages), show and tags."""

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from fleet_server.api.deps import OperatorDep, RuntimeDep, SessionDep
from fleet_server.api.errors import ERROR_RESPONSES
from fleet_server.models.common import TAG_PATTERN
from fleet_server.models.device import DeviceEnroll, DevicePublic, EnrollmentPublic
from fleet_server.models.device_tags import DeviceTagsUpdate
from fleet_server.services import device_query, device_tags, devices

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


@router.get("", response_model=list[DevicePublic],
            responses={200: {"headers": {"X-Total-Count": {"description": "Devices matching the filters",
                                                           "schema": {"type": "integer"}}}}})
def list_devices(session: SessionDep, _operator: OperatorDep, response: Response,
                 tag: Annotated[str | None, Query(pattern=f"^{TAG_PATTERN}$")] = None,
                 online: bool | None = None,
                 state: Annotated[str | None, Query(max_length=32, description="Latest reported deployment "
                                                    "state; 'none': never reported")] = None,
                 model: Annotated[str | None, Query(max_length=160, description="Current model: NAME or "
                                                    "NAME:VERSION")] = None,
                 limit: Annotated[int, Query(ge=1, le=device_query.MAX_PAGE)] = device_query.MAX_PAGE,
                 offset: Annotated[int, Query(ge=0)] = 0) -> list[DevicePublic]:
    """Devices ordered by id, one page at a time; ``X-Total-Count`` has the number of matches."""
    page = device_query.query_devices(session, device_query.DeviceFilter(tag, online, state, model), limit, offset)
    response.headers["X-Total-Count"] = str(page.total)
    return page.devices


@router.patch("/{device_id}/tags", response_model=DevicePublic)
def change_tags(device_id: str, body: DeviceTagsUpdate, session: SessionDep, _operator: OperatorDep) -> DevicePublic:
    """Add and remove tags (a tag in both lists is added)."""
    device_tags.update_tags(session, device_id, body.add, body.remove)
    return devices.device_public(session, device_id)


@router.get("/{device_id}", response_model=DevicePublic)
def show_device(device_id: str, session: SessionDep, _operator: OperatorDep) -> DevicePublic:
    return devices.device_public(session, device_id)
